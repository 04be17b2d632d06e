"""Commits to an existing feature file append in place: cost, and kill -9 at every step."""

import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from c3d_extract.store.read import read_clip_features, read_features, read_video_table
from c3d_extract.store.write import FeatureStore
from tests.support.store_support import DIMS, record, run_parameters, write

PAGE = 4096


def changed_pages(old: bytes, new: bytes) -> int:
    """4 KiB pages of ``old`` whose bytes differ in ``new`` (compared by the test, not by
    the code under test)."""
    return sum(old[i:i + PAGE] != new[i:i + PAGE] for i in range(0, len(old), PAGE))


def big_store(path, n):
    write(path, [record(f"v{i:05d}", seed=i, n_clips=1) for i in range(n)])


def test_a_commit_appends_in_place_and_rewrites_only_metadata_pages(tmp_path):
    out = tmp_path / "f.h5"
    big_store(out, 3000)
    old = out.read_bytes()
    inode = os.stat(out).st_ino
    write(out, [record("new1", seed=9), record("new2", seed=10)])
    new = out.read_bytes()
    assert os.stat(out).st_ino == inode  # not a copy renamed over the file
    assert len(new) >= len(old)
    changed = changed_pages(old, new)
    assert changed <= 40, f"{changed} of {len(old) // PAGE} old pages rewritten"
    ids, fc6 = read_features(str(out))
    assert len(ids) == 3002 and ids[-2:] == ["new1", "new2"]
    assert np.allclose(fc6[-1], record("new2", seed=10).features["fc6"])
    assert np.allclose(fc6[1234], record("v01234", seed=1234, n_clips=1).features["fc6"])
    assert os.listdir(tmp_path) == ["f.h5"]


def test_a_file_of_an_earlier_version_gets_an_empty_codec_column(tmp_path):
    out = tmp_path / "f.h5"
    write(out, [record("a")])
    with h5py.File(out, "r+") as handle:
        del handle["videos/codec"]
    assert list(read_video_table(str(out))["codec"]) == [""]
    b = record("b")
    b.codec = "h264"
    write(out, [b])
    assert list(read_video_table(str(out))["codec"]) == ["", "h264"]


def test_a_file_of_an_earlier_version_gets_the_decoder_columns(tmp_path):
    out = tmp_path / "f.h5"
    write(out, [record("a")])
    with h5py.File(out, "r+") as handle:
        for name in ("decoder", "notes", "declared_frames"):
            del handle[f"videos/{name}"]
    table = read_video_table(str(out))
    assert list(table["decoder"]) == [""] and list(table["notes"]) == [""]
    assert list(table["declared_frames"]) == [0]
    b = record("b")
    b.decoder, b.declared_frames, b.warnings = "pyav", 107, ("two video streams", "x")
    write(out, [b])
    table = read_video_table(str(out))
    assert list(table["decoder"]) == ["", "pyav"]
    assert list(table["declared_frames"]) == [0, 107]
    assert list(table["notes"]) == ["", "two video streams\nx"]


_KILLED_COMMIT = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {root!r})
    from c3d_extract.store import inplace
    from tests.support.store_support import DIMS, record, run_parameters
    from c3d_extract.store.write import FeatureStore

    def die(*args, **kwargs):
        os.kill(os.getpid(), 9)

    step = {step!r}
    if step == "before_commit_point":  # new chunks written past the end, no redo record
        inplace.Overlay.fsync = die
    elif step == "mid_apply":  # redo record durable, half the pages written in place
        real_pwrite = os.pwrite
        calls = []
        def pwrite(fd, data, offset):
            if sys._getframe(1).f_code.co_name == "_apply":
                calls.append(offset)
                if len(calls) == 2:
                    die()
            return real_pwrite(fd, data, offset)
        os.pwrite = pwrite
    elif step == "before_journal_removed":  # the file is new, the journal still there
        inplace.Journal.remove = lambda self: die() if self.path.endswith(".journal") \\
            else os.path.exists(self.path) and os.unlink(self.path)
    store = FeatureStore({out!r}, run_parameters(), DIMS).open()
    store.add(record("late", seed=77))
    store.sync()
    store.commit(complete=True, n_inputs=65)
    print("not killed")
""")


@pytest.mark.parametrize("step", ["before_commit_point", "mid_apply",
                                  "before_journal_removed"])
def test_kill_during_an_in_place_commit_leaves_old_or_new_and_resumes(tmp_path, step):
    out = tmp_path / "f.h5"
    big_store(out, 64)  # full chunks: the new row needs new ones
    old = out.read_bytes()
    script = _KILLED_COMMIT.format(root=os.getcwd(), out=str(out), step=step)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == -9, result.stdout + result.stderr
    ids, _ = read_features(str(out))  # readable as it lies, before any recovery
    if step == "before_commit_point":
        assert ids == [f"v{i:05d}" for i in range(64)]
        assert os.path.getsize(out) > len(old)  # new chunks lie past the old end
    else:
        assert ids[-1] == "late" and len(ids) == 65
    with FeatureStore(str(out), run_parameters(), DIMS) as store:  # recovers, then resumes
        assert set(store.done) == {f"v{i:05d}" for i in range(64)} | {"late"}
        if step == "before_commit_point":
            assert out.read_bytes() == old  # cut back to the old bytes exactly
        store.commit(complete=True, n_inputs=65)
    ids, fc6 = read_features(str(out))
    assert len(ids) == 65 == len(set(ids)) and ids[-1] == "late"
    assert np.allclose(fc6[-1], record("late", seed=77).features["fc6"])
    _, starts, _ = read_clip_features(str(out))
    assert len(starts) == 64 + 2  # one clip per old video, two for "late": none twice
    assert sorted(os.listdir(tmp_path)) == ["f.h5"]
