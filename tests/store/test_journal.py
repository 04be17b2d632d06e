"""The journal: a new journal's name is made durable once, when it is created."""

from c3d_extract.store import journal as journal_module
from c3d_extract.store.journal import Journal


def test_a_new_journal_fsyncs_its_folder_once(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(journal_module, "fsync_parent", synced.append)
    path = str(tmp_path / "f.h5.journal")
    first = Journal(path)
    first.open_for_append()
    first.close()
    assert synced == [path]  # created: its folder entry is fsynced
    again = Journal(path)
    again.open_for_append()
    again.close()
    assert synced == [path]  # reopened: nothing new to make durable
