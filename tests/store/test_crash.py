"""Crash torture and concurrent runs, on real ``c3d-extract`` processes.

A run is killed with SIGKILL at seeded random moments: at a random fraction of
the time an uninterrupted run took on this machine (so anywhere from start-up to
the last commit, however fast the machine), just after the journal grows (often
in the middle of a record), and while a commit's temporary file or log exists.
Rerunning until done must give every video exactly once, with the features of an
uninterrupted run.
"""

import os
import random
import signal
import time

import numpy as np
import pytest

from c3d_extract.store.read import read_features, read_video_table
from tests.support.runs import (assert_no_processes_left, file_size, leftovers, new_tag, start,
                                wait_for)
from tests.support.videos import write_video

pytestmark = pytest.mark.slow

KILL_ROUNDS = 10


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("torture")
    for i, n in enumerate([16, 24, 9, 16, 20, 16, 12, 17]):
        write_video(root / f"v{i}.mp4", n, width=32 + 2 * i, height=32)
    (root / "broken.mp4").write_bytes(b"\x00" * 500)
    return root


@pytest.fixture(scope="module")
def reference_run(corpus, tmp_path_factory):
    """Features of an uninterrupted run, and how many seconds it took here."""
    out = tmp_path_factory.mktemp("reference") / "ref.h5"
    began = time.monotonic()
    process = start(corpus, out, "--batch-size", "1")
    _, err = process.communicate(timeout=900)
    seconds = time.monotonic() - began
    assert process.returncode == 3, err
    ids, matrix = read_features(str(out))
    return dict(zip(ids, matrix)), seconds


@pytest.fixture(scope="module")
def uninterrupted(reference_run):
    return reference_run[0]


def _kill_when(process, condition, limit=300):
    """SIGKILL ``process`` as soon as ``condition()`` holds; False if it ended first."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if condition():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.002)
    pytest.fail("the kill condition never came")


def _assert_equal_to_reference(out, uninterrupted):
    ids, matrix = read_features(str(out))
    assert sorted(ids) == sorted(uninterrupted) and len(set(ids)) == len(ids)
    for video_id, row in zip(ids, matrix):
        assert np.abs(row - uninterrupted[video_id]).max() < 1e-6, video_id


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(corpus, tmp_path, reference_run):
    uninterrupted, run_seconds = reference_run
    out = tmp_path / "f.h5"
    journal = str(out) + ".journal"
    rng = random.Random(20150101)
    tag = new_tag()
    kills = {"delay": 0, "journal": 0, "commit": 0}
    rounds = 0
    while ((sum(kills.values()) < KILL_ROUNDS or not kills["delay"])
           and rounds < 3 * KILL_ROUNDS):
        rounds += 1
        # A delay kill comes first in each cycle, when the most work is left to interrupt.
        how = ("delay", "journal", "commit")[(rounds - 1) % 3]
        process = start(corpus, out, "--batch-size", "1", tag=tag)
        if how == "delay":
            # A fraction of what a whole run took here: a moment inside this run's life
            # on any machine (start-up, decoding, the network, a commit), never after it.
            delay = rng.uniform(0.02, 0.9) * run_seconds
            killed = _kill_when(process, lambda t=time.monotonic() + delay: time.monotonic() > t)
        elif how == "journal":
            size = file_size(journal)
            grown = size + rng.randint(1, 20_000)
            killed = _kill_when(process, lambda: file_size(journal) >= grown)
        else:
            # A new file's temporary, an append's room reservation, or its commit log.
            killed = _kill_when(process, lambda: any(
                ".tmp-" in e or e.endswith(".commit") for e in leftovers(out)))
        if killed:
            kills[how] += 1
        else:  # the run finished: check it, then start over so later kills find work to do
            _, err = process.communicate()
            assert process.returncode == 3, err
            _assert_equal_to_reference(out, uninterrupted)
            out.unlink()
        # Whatever the moment, the output on disk is a whole, readable file or none at all.
        if out.exists():
            ids, _ = read_features(str(out))
            assert len(ids) == len(set(ids))
    assert sum(kills.values()) >= KILL_ROUNDS and kills["journal"] and kills["delay"], kills

    final = start(corpus, out, "--batch-size", "1", tag=tag)
    _, err = final.communicate(timeout=900)
    assert final.returncode == 3, err
    assert "Traceback" not in err
    _assert_equal_to_reference(out, uninterrupted)
    status = dict(zip(*[read_video_table(str(out))[k] for k in ("id", "status")]))
    assert status["broken.mp4"] == "error" and status["v2.mp4"] == "padded"
    assert leftovers(out) == []
    assert_no_processes_left(tag)  # killed runs' decode workers died with them
    print(f"kills: {kills} in {rounds} rounds")


def test_a_second_run_on_the_same_output_is_refused(corpus, tmp_path, uninterrupted):
    out = tmp_path / "f.h5"
    first = start(corpus, out, "--batch-size", "1")
    journal = str(out) + ".journal"
    wait_for(lambda: os.path.exists(journal), first, "it opened its output")
    second = start(corpus, out)
    _, err = second.communicate(timeout=300)
    if first.poll() is not None:
        pytest.skip("the first run finished before the second one started: machine too slow")
    assert second.returncode == 1, err
    assert f"another c3d-extract run (pid {first.pid}) is writing" in err
    assert "Traceback" not in err
    _, first_err = first.communicate(timeout=900)
    assert first.returncode == 3, first_err
    ids, matrix = read_features(str(out))
    assert sorted(ids) == sorted(uninterrupted)
    assert all(np.abs(row - uninterrupted[i]).max() < 1e-6 for i, row in zip(ids, matrix))


def test_the_lock_of_a_killed_run_does_not_block(corpus, tmp_path, uninterrupted):
    out = tmp_path / "f.h5"
    first = start(corpus, out, "--batch-size", "1")
    lock = str(out) + ".lock"
    _kill_when(first, lambda: os.path.exists(str(out) + ".journal"))
    assert os.path.exists(lock)  # the killed run could not clean up ...
    second = start(corpus, out)
    _, err = second.communicate(timeout=900)
    assert second.returncode == 3, err  # ... and its lock does not stand in the way
    assert sorted(read_features(str(out))[0]) == sorted(uninterrupted)
    assert leftovers(out) == []
