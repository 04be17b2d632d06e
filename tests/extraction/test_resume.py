"""A real c3d-extract process killed mid-run loses nothing and duplicates nothing."""

import os
import signal
import time

import numpy as np
import pytest

from c3d_extract.store.read import read_features, read_video_table
from tests.support.runs import file_size
from tests.support.runs import start as start_run
from tests.support.videos import write_video

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for i, n in enumerate([24, 16, 20, 9, 24]):
        write_video(root / f"v{i}.mp4", n, frame_fn=None)
    (root / "broken.mp4").write_bytes(b"\x00" * 100)
    return root


def start(corpus, out):
    return start_run(corpus, out, "--batch-size", "1")


def wait_for_journal(out, min_bytes, process, limit=240):
    journal = str(out) + ".journal"
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if file_size(journal) >= min_bytes:
            return
        if process.poll() is not None:
            pytest.fail(f"the run ended before it could be interrupted: {process.stderr.read()}")
        time.sleep(0.05)
    pytest.fail("the journal never grew")


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    process = start(corpus, out)
    process.communicate(timeout=600)
    assert process.returncode == 3
    return read_features(str(out))


def by_id(ids, matrix):
    return {video_id: row for video_id, row in zip(ids, matrix)}


def test_kill_9_then_rerun_equals_an_uninterrupted_run(corpus, tmp_path, uninterrupted):
    out = tmp_path / "f.h5"
    process = start(corpus, out)
    wait_for_journal(out, 20_000, process)  # at least one video's 16 KB record
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists()  # never committed: nothing half-written in its place
    rerun = start(corpus, out)
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 3, err
    assert "processed 6" not in err  # the killed run's finished videos were kept
    ids, matrix = read_features(str(out))
    assert sorted(ids) == sorted(uninterrupted[0]) and len(set(ids)) == len(ids)
    expected = by_id(*uninterrupted)
    for video_id, row in by_id(ids, matrix).items():
        assert np.abs(row - expected[video_id]).max() < 1e-6, video_id
    assert not os.path.exists(str(out) + ".journal")
    assert not os.path.exists(str(out) + ".lock")
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_sigint_stops_cleanly_and_the_file_is_resumable(corpus, tmp_path, uninterrupted):
    out = tmp_path / "f.h5"
    process = start(corpus, out)
    wait_for_journal(out, 20_000, process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "interrupted" in err and "rerun the same command" in err
    assert "Traceback" not in err
    saved = read_video_table(str(out))
    assert 1 <= len(saved["id"]) < 6
    rerun = start(corpus, out)
    rerun.communicate(timeout=600)
    ids, matrix = read_features(str(out))
    assert sorted(ids) == sorted(uninterrupted[0])
    expected = by_id(*uninterrupted)
    assert all(np.abs(row - expected[i]).max() < 1e-6 for i, row in by_id(ids, matrix).items())
