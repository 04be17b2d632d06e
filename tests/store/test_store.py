"""The feature file: round trip, journal recovery, resume rules, locking."""

import os
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from c3d_extract.errors import OutputLockedError, ParameterMismatchError, StoreError
from c3d_extract.store.read import (read_attributes, read_clip_features, read_features,
                                    read_video_table)
from c3d_extract.store.write import FeatureStore
from tests.support.store_support import DIMS, record, run_parameters, write


def test_round_trip(tmp_path):
    out = tmp_path / "f.h5"
    records = [record("a/x.mp4", seed=1), record("b.avi", "padded", seed=2, n_clips=1),
               record("bad.mp4", "error"), record("ünï cödé.mkv", seed=3)]
    write(out, records)
    ids, fc6 = read_features(str(out), "fc6")
    assert ids == ["a/x.mp4", "b.avi", "bad.mp4", "ünï cödé.mkv"]
    assert fc6.dtype == np.float32 and fc6.shape == (4, 6)
    for row, r in enumerate(records):
        expected = r.features.get("fc6", np.zeros(6))
        assert np.allclose(fc6[row], expected)
    ok_ids, ok = read_features(str(out), "prob", only_with_features=True)
    assert ok_ids == ["a/x.mp4", "b.avi", "ünï cödé.mkv"] and ok.shape == (3, 3)
    table = read_video_table(str(out))
    assert list(table["status"]) == ["ok", "padded", "error", "ok"]
    assert list(table["error"]) == ["", "", "broken", ""]
    assert list(table["n_clips"]) == [2, 1, 0, 2]
    assert list(table["zero_descriptor"]) == [0, 0, 0, 0]
    video_row, starts, clip_fc6 = read_clip_features(str(out), "fc6")
    assert list(video_row) == [0, 0, 1, 3, 3] and list(starts) == [0, 8, 0, 0, 8]
    assert np.allclose(clip_fc6[:2], records[0].clip_features["fc6"])
    attrs = read_attributes(str(out))
    assert attrs["format"] == "c3d-features" and attrs["layers"] == "fc6,prob"
    assert attrs["complete"] is True and attrs["n_inputs"] == 4
    with h5py.File(out) as f:  # appendable, chunked datasets
        assert f["features/fc6"].maxshape == (None, 6) and f["features/fc6"].chunks
        assert f["videos/id"].dtype.kind == "O"
    assert not os.path.exists(str(out) + ".journal") and not os.path.exists(str(out) + ".lock")


def test_rerun_appends_without_duplicates(tmp_path):
    out = tmp_path / "f.h5"
    write(out, [record("a", seed=1)])
    done = write(out, [record("b", seed=2)])
    assert done == {"a": "ok", "b": "ok"}
    assert read_features(str(out))[0] == ["a", "b"]


def test_uncommitted_journal_is_picked_up_and_a_torn_record_is_cut(tmp_path):
    out = tmp_path / "f.h5"
    write(out, [record("a", seed=1), record("b", seed=2)], commit=False)
    journal = str(out) + ".journal"
    with open(journal, "ab") as handle:  # a record torn by a crash mid-write
        handle.write(b"C3DJ\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00partial")
    with FeatureStore(str(out), run_parameters(), DIMS) as store:
        assert store.done == {"a": "ok", "b": "ok"}
        store.add(record("c", seed=3))
        store.commit(complete=True, n_inputs=3)
    ids, fc6 = read_features(str(out))
    assert ids == ["a", "b", "c"]
    assert np.allclose(fc6[1], record("b", seed=2).features["fc6"])


def test_other_parameters_are_refused(tmp_path):
    out = tmp_path / "f.h5"
    write(out, [record("a")])
    before = out.read_bytes()
    with pytest.raises(ParameterMismatchError, match="stride: 8 in the file, 4 now"):
        write(out, [record("b")], run_parameters(stride=4))
    with pytest.raises(ParameterMismatchError, match="weights_sha256"):
        write(out, [record("b")], run_parameters(weights_sha256="other"))
    assert out.read_bytes() == before


def test_a_moved_weights_file_with_the_same_hash_is_accepted(tmp_path):
    out = tmp_path / "f.h5"
    write(out, [record("a")])
    write(out, [record("b")], run_parameters(weights="/elsewhere/w.safetensors"))
    assert read_features(str(out))[0] == ["a", "b"]


def test_retried_errors_replace_their_row(tmp_path):
    out = tmp_path / "f.h5"
    write(out, [record("a", "error"), record("b", seed=2)])
    write(out, [record("a", seed=5)])
    ids, fc6 = read_features(str(out))
    assert ids == ["a", "b"]
    assert np.allclose(fc6[0], record("a", seed=5).features["fc6"])
    assert list(read_video_table(str(out))["status"]) == ["ok", "ok"]


def test_overwrite_replaces_only_at_commit_and_an_interrupted_overwrite_resumes(tmp_path):
    out = tmp_path / "f.h5"
    write(out, [record("old")])
    before = out.read_bytes()
    write(out, [record("new", seed=4)], run_parameters(stride=4), commit=False, overwrite=True)
    assert out.read_bytes() == before  # nothing replaced yet
    done = write(out, [record("newer", seed=5)],
                 run_parameters(stride=4))  # resume, no --overwrite
    assert done == {"new": "ok", "newer": "ok"}
    assert read_features(str(out))[0] == ["new", "newer"]
    assert read_attributes(str(out))["stride"] == 4


def test_a_file_that_is_not_ours_is_never_touched(tmp_path):
    out = tmp_path / "notes.h5"
    out.write_bytes(b"precious")
    with pytest.raises(StoreError, match="cannot read"):
        write(out, [record("a")])
    assert out.read_bytes() == b"precious"


def test_missing_output_directory(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        write(tmp_path / "nope" / "f.h5", [record("a")])


def test_a_second_writer_is_refused(tmp_path):
    out = tmp_path / "f.h5"
    with FeatureStore(str(out), run_parameters(), DIMS):
        with pytest.raises(OutputLockedError, match="another c3d-extract run"):
            FeatureStore(str(out), run_parameters(), DIMS).open()


def test_a_killed_writer_leaves_no_stale_lock(tmp_path):
    out = tmp_path / "f.h5"
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {os.getcwd()!r})
        from tests.support.store_support import DIMS, run_parameters
        from c3d_extract.store.write import FeatureStore
        FeatureStore({str(out)!r}, run_parameters(), DIMS).open()
        print("locked", flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLockedError):
            FeatureStore(str(out), run_parameters(), DIMS).open()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    write(out, [record("a")])
    assert read_features(str(out))[0] == ["a"]


def test_a_rerun_that_adds_nothing_leaves_the_file_alone(tmp_path):
    out = tmp_path / "f.h5"
    write(out, [record("a")])
    before = (out.read_bytes(), os.stat(out).st_ino)
    with FeatureStore(str(out), run_parameters(), DIMS) as store:
        store.commit(complete=True, n_inputs=1)
    assert (out.read_bytes(), os.stat(out).st_ino) == before


def test_a_record_survives_the_process_without_sync(tmp_path):
    out = tmp_path / "f.h5"
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {os.getcwd()!r})
        from tests.support.store_support import DIMS, record, run_parameters
        from c3d_extract.store.write import FeatureStore
        store = FeatureStore({str(out)!r}, run_parameters(), DIMS).open()
        store.add(record("a", seed=1))
        os.kill(os.getpid(), 9)
    """)
    subprocess.run([sys.executable, "-c", script])
    with FeatureStore(str(out), run_parameters(), DIMS) as store:
        assert store.done == {"a": "ok"}


def test_a_zero_descriptor_is_flagged(tmp_path):
    out = tmp_path / "f.h5"
    zero = record("z")
    zero.features = {"fc6": np.zeros(6, np.float32), "prob": np.zeros(3, np.float32)}
    zero.zero_descriptor = True
    write(out, [zero, record("a")])
    assert list(read_video_table(str(out))["zero_descriptor"]) == [1, 0]
