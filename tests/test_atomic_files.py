"""Atomic replacement (``atomic_files``): a process dying between writing a file and renaming
it over the old one leaves the old file byte for byte, for the helper and for every writer;
the new file is fsynced before the rename and its folder after it."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from c3d_extract import atomic_files
from c3d_extract.atomic_files import (make_folders, move_into_place, remove_stale_temporaries,
                                      replaced_atomically, write_atomically)
from c3d_extract.errors import StoreError


class Crash(BaseException):
    """The process dying: not an ``Exception``, so no writer's error handling catches it."""


class _OsDyingAtRename:
    """``os`` for ``atomic_files`` only, whose ``replace`` dies before renaming; a writer
    that renames by itself, bypassing ``atomic_files``, still renames."""

    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def replace(source, target):
        raise Crash(f"killed before renaming {source} to {target}")


@pytest.fixture
def crash_at_rename(monkeypatch):
    monkeypatch.setattr(atomic_files, "os", _OsDyingAtRename())


def others(folder, *keep):
    """The names in ``folder`` besides ``keep``: temporaries a writer left."""
    return sorted(set(os.listdir(folder)) - {os.path.basename(str(k)) for k in keep})


# ---------------------------------------------------------------- the helper

def test_write_atomically_replaces_the_file_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    write_atomically(str(path), b"new contents")
    assert path.read_bytes() == b"new contents" and others(tmp_path, path) == []


def test_a_process_killed_between_write_and_rename_leaves_the_old_file(tmp_path):
    """A real kill (SIGKILL), in a child process, right after the new file is written and
    fsynced: the old file is intact and the temporary is what ``remove_stale_temporaries``
    removes."""
    path = tmp_path / "out.bin"
    old = bytes(range(256)) * 64
    path.write_bytes(old)
    script = (
        "import os, signal\n"
        "from c3d_extract import atomic_files\n"
        "class Dying:\n"
        "    def __getattr__(self, name):\n"
        "        return getattr(os, name)\n"
        "    def replace(self, source, target):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "atomic_files.os = Dying()\n"
        f"atomic_files.write_atomically({str(path)!r}, b'new' * 100000)\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert run.returncode == -signal.SIGKILL, run.stderr.decode()
    assert path.read_bytes() == old
    left = others(tmp_path, path)
    assert len(left) == 1 and left[0].startswith("out.bin.tmp-")
    assert (tmp_path / left[0]).read_bytes() == b"new" * 100000  # written whole before the rename
    remove_stale_temporaries(str(path))
    assert others(tmp_path, path) == [] and path.read_bytes() == old


def test_a_crash_at_the_rename_leaves_the_old_file_and_no_temporary(tmp_path, crash_at_rename):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old contents")
    with pytest.raises(Crash):
        write_atomically(str(path), b"new contents")
    assert path.read_bytes() == b"old contents" and others(tmp_path, path) == []


def test_a_failed_rename_is_a_one_line_store_error_and_leaves_the_old_file(tmp_path,
                                                                           monkeypatch):
    class FailingOs(_OsDyingAtRename):
        @staticmethod
        def replace(source, target):
            raise OSError(28, "No space left on device\nsecond line")

    monkeypatch.setattr(atomic_files, "os", FailingOs())
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(StoreError, match=f"cannot write {path}: .*No space left") as raised:
        write_atomically(str(path), b"new")
    assert "\n" not in str(raised.value)
    assert path.read_bytes() == b"old" and others(tmp_path, path) == []


def test_an_error_while_writing_leaves_the_old_file_and_is_raised_as_it_is(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(ValueError, match="half way"):
        with replaced_atomically(str(path), growth_bound=10) as temporary:
            with open(temporary, "wb") as handle:
                handle.write(b"ne")
            raise ValueError("half way")
    assert path.read_bytes() == b"old" and others(tmp_path, path) == []


@pytest.fixture
def events(monkeypatch):
    """Every fsync and rename ``atomic_files`` makes, in order (they still happen)."""
    seen = []
    real_fsync = atomic_files.fsync_path

    def fsync_path(path, directory=False):
        seen.append(("fsync-folder" if directory else "fsync", os.path.abspath(path)))
        real_fsync(path, directory)

    class RecordingOs(_OsDyingAtRename):
        @staticmethod
        def replace(source, target):
            seen.append(("rename", os.path.abspath(source), os.path.abspath(target)))
            os.replace(source, target)

    monkeypatch.setattr(atomic_files, "fsync_path", fsync_path)
    monkeypatch.setattr(atomic_files, "os", RecordingOs())
    return seen


def test_the_file_is_fsynced_before_the_rename_and_its_folder_after(tmp_path, events):
    path = str(tmp_path / "out.bin")
    write_atomically(path, b"new")
    temporary = atomic_files.temporary_path(path)
    assert events == [("fsync", temporary), ("rename", temporary, path),
                      ("fsync-folder", str(tmp_path))]


def test_a_folder_is_moved_into_place_with_its_files_and_itself_fsynced_first(tmp_path, events):
    temporary = tmp_path / ".converting-x"
    (temporary / "sub").mkdir(parents=True)
    (temporary / "model.xml").write_bytes(b"xml")
    (temporary / "sub" / "model.bin").write_bytes(b"bin")
    final = tmp_path / "entry"
    move_into_place(str(temporary), str(final))
    assert (final / "sub" / "model.bin").read_bytes() == b"bin"
    rename = events.index(("rename", str(temporary), str(final)))
    before = set(events[:rename])
    assert before == {("fsync", str(temporary / "model.xml")),
                      ("fsync", str(temporary / "sub" / "model.bin")),
                      ("fsync-folder", str(temporary)), ("fsync-folder", str(temporary / "sub"))}
    assert events[rename + 1:] == [("fsync-folder", str(tmp_path))]


def test_new_folders_are_fsynced_into_their_parents(tmp_path, events):
    make_folders(str(tmp_path / "a" / "b"))
    assert (tmp_path / "a" / "b").is_dir()
    assert events == [("fsync-folder", str(tmp_path)), ("fsync-folder", str(tmp_path / "a"))]
    events.clear()
    make_folders(str(tmp_path / "a" / "b"))
    assert events == []


# ---------------------------------------------------------------- every writer

def _pca(seed):
    from c3d_extract.evaluation.pca import fit_matrix

    return fit_matrix(np.random.default_rng(seed).normal(size=(20, 6)).astype(np.float32), 3)


def write_pca(path, seed):
    from c3d_extract.evaluation.pca import save_pca

    save_pca(_pca(seed), path, overwrite=True)


def write_safetensors(path, seed):
    from c3d_extract.weights.safetensors_file import write_safetensors_file

    tensors = {"w": torch.from_numpy(np.random.default_rng(seed).normal(size=(4, 5)))}
    write_safetensors_file(tensors, path, {"format": "test", "seed": str(seed)})


def write_svm(path, seed):
    from sklearn.svm import LinearSVC

    from c3d_extract.evaluation.svm import SVMModel, save_model

    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(20, 4)), np.arange(20) % 2
    estimator = LinearSVC(dual="auto").fit(x, y)
    save_model(SVMModel(estimator, "fc6", ("a", "b"), 1.0, "liblinear", "w", "0" * 64, 20, 4),
               path)


def write_plot(path, seed):
    from c3d_extract.reports import plots

    plots.confusion_matrix(path, np.array([[seed + 1, 0], [1, 2]]), ["a", "b"])


def write_metrics_json(path, seed):
    from c3d_extract.train import metrics

    metrics.write_json(path, {"seed": seed})


def write_checkpoint(path, seed):
    from c3d_extract.train.checkpoint import save_checkpoint

    save_checkpoint(path, {"step": seed, "weights": torch.full((3,), float(seed))})


def write_timeline(path, seed):
    from c3d_extract.predict.timeline import write_timeline_csv

    write_timeline_csv(path, [], top_k=1 + seed)


def write_export_file(path, seed):
    from c3d_extract.export.files import write_output

    write_output(path, f"{seed}\n".encode() * 10)


WRITERS = [write_pca, write_safetensors, write_svm, write_plot, write_metrics_json,
           write_checkpoint, write_timeline, write_export_file]


@pytest.mark.parametrize("write", WRITERS, ids=lambda write: write.__name__)
def test_a_crash_at_the_rename_leaves_each_writers_previous_file(tmp_path, monkeypatch, write):
    path = str(tmp_path / "out")
    write(path, 0)
    old = open(path, "rb").read()
    with monkeypatch.context() as patched, pytest.raises(Crash):
        patched.setattr(atomic_files, "os", _OsDyingAtRename())
        write(path, 1)
    assert open(path, "rb").read() == old and others(tmp_path, path) == []
    write(path, 1)
    assert open(path, "rb").read() != old and others(tmp_path, path) == []
    mask = os.umask(0o022)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask  # the mode any new file gets


def test_a_crash_at_the_rename_leaves_the_previous_reduced_feature_file(tmp_path, monkeypatch):
    from c3d_extract.evaluation.pca import transform_file
    from tests.support.eval_helpers import blobs, write_features

    features, _ = blobs(5, 2, 6)
    h5 = write_features(str(tmp_path / "f.h5"), [f"v{i}" for i in range(10)], {"fc6": features})
    output = tmp_path / "reduced.h5"
    transform_file(_pca(0), h5, str(output), dims=2, layer="fc6")
    old = output.read_bytes()
    with monkeypatch.context() as patched, pytest.raises(Crash):
        patched.setattr(atomic_files, "os", _OsDyingAtRename())
        transform_file(_pca(1), h5, str(output), dims=3, layer="fc6", overwrite=True)
    assert output.read_bytes() == old


# ---------------------------------------------------------------- the weights registry


def test_a_crash_at_the_rename_leaves_the_previous_registry_json(cache, monkeypatch):
    from c3d_extract.weights import hub

    hub._write_records({"one": {"sha256": "1" * 64}})
    path = cache / hub.RECORDS_FILE
    old = path.read_bytes()
    with monkeypatch.context() as patched, pytest.raises(Crash):
        patched.setattr(atomic_files, "os", _OsDyingAtRename())
        hub._write_records({"two": {"sha256": "2" * 64}})
    assert path.read_bytes() == old and others(cache, path) == []
    assert json.loads(old) == hub.read_records()


def test_a_crash_at_the_rename_leaves_the_previous_download(cache, mirror, monkeypatch):
    from c3d_extract.weights import hub

    folder, url = mirror
    name = "sports1m-caffe"
    filename = hub.REGISTRY[name].filename
    (folder / filename).write_bytes(b"first" * 1000)
    target = hub.fetch(name, base_url=url)
    records = (cache / hub.RECORDS_FILE).read_bytes()
    (folder / filename).write_bytes(b"second" * 1000)
    with monkeypatch.context() as patched, pytest.raises(Crash):
        patched.setattr(atomic_files, "os", _OsDyingAtRename())
        hub.fetch(name, base_url=url, force=True)
    assert target.read_bytes() == b"first" * 1000
    assert (cache / hub.RECORDS_FILE).read_bytes() == records
    assert others(cache, target, hub.RECORDS_FILE) == []  # the .part file removed


# ---------------------------------------------------------------- the OpenVINO cache

def test_a_crash_at_the_rename_leaves_no_half_openvino_entry(tmp_path, monkeypatch):
    ov = pytest.importorskip("openvino")
    from torch import nn

    from c3d_extract.extraction.openvino_runner import (ConversionKey, cache_entries,
                                                        convert_network, converted_model)

    module = nn.Conv3d(3, 2, kernel_size=1).eval()

    def convert(weights_id):
        key = ConversionKey(weights_id, ("out",), (3, 2, 4, 4), 0, ov.get_version())
        converted_model(key, lambda: convert_network(module, (3, 2, 4, 4)), tmp_path)
        return tmp_path / key.digest()

    kept = convert("kept")
    kept_files = {p.name: p.read_bytes() for p in kept.iterdir()}
    with monkeypatch.context() as patched, pytest.raises(Crash):
        patched.setattr(atomic_files, "os", _OsDyingAtRename())
        convert("crashed")
    assert [entry.path for entry in cache_entries(tmp_path)] == [kept]
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == kept_files
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [".lock"]
    assert convert("crashed") in [entry.path for entry in cache_entries(tmp_path)]


def test_make_folders_refuses_a_file_in_the_way_as_makedirs_does(tmp_path):
    """A file where a folder should be is an error naming it, never silently accepted."""
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(FileExistsError) as raised:
        atomic_files.make_folders(str(tmp_path / "taken"))
    assert raised.value.filename == str(tmp_path / "taken")
    with pytest.raises(FileExistsError):  # the file is named, not the folder below it
        atomic_files.make_folders(str(tmp_path / "taken" / "below"))
    atomic_files.make_folders(str(tmp_path / "new" / "deeper"))
    assert (tmp_path / "new" / "deeper").is_dir()
