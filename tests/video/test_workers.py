"""Decoders that hang or crash: the video is recorded as an error, the worker is replaced,
and the run goes on. The hang is real: a named pipe with a video name blocks whoever opens
it until a writer appears, which nobody does."""

import os
import signal
import subprocess
import sys
import time

import pytest

from c3d_extract.store.read import read_video_table
from c3d_extract.video.preprocess import Preprocessing
from c3d_extract.video.workers import DecodePool, Failed, Finished
from tests.support.videos import write_video

GEOMETRY = Preprocessing(resize=(128, 171), crop=112, channel_order="BGR")


def events_until(pool, slot, deadline_s=120):
    """Poll until the video in ``slot`` ends (Finished or Failed); every event seen."""
    seen = []
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        seen.extend(pool.poll(0.2))
        if any(isinstance(e, (Finished, Failed)) and e.slot == slot for e in seen):
            return seen
    pytest.fail(f"slot {slot} never ended; events: {seen}")


def wait_until_blocked(pid, deadline_s=120):
    """Wait until the worker sits in open() on the pipe (its kernel wait channel says so)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/wchan") as handle:
                if handle.read() in ("wait_for_partner", "fifo_open"):  # inside open(fifo)
                    return
        except OSError:
            pass
        time.sleep(0.05)
    pytest.fail("the worker never blocked on the named pipe")


@pytest.fixture
def videos(tmp_path):
    good = write_video(tmp_path / "good.mp4", 16)
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    return good, fifo


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGSEGV])
def test_a_worker_killed_mid_video_is_reported_and_replaced(videos, signum):
    good, fifo = videos
    with DecodePool(1, "decord", GEOMETRY, timeout=600) as pool:
        pool.submit(0, str(fifo))
        (pid,) = pool.worker_pids
        wait_until_blocked(pid)
        os.kill(pid, signum)
        failed = [e for e in events_until(pool, 0) if isinstance(e, Failed)]
        assert [e.message for e in failed] == [f"the decoder crashed (signal {int(signum)})"]
        assert pool.idle == 1 and pool.worker_pids != [pid]
        pool.submit(1, str(good))
        ended = [e for e in events_until(pool, 1) if isinstance(e, (Finished, Failed))]
        assert ended == [Finished(1, 16, 64, 48, decoded_frames=16)]
        replacement = pool.worker_pids
    for pid in [pid] + replacement:  # closing the pool leaves no process behind
        assert not os.path.exists(f"/proc/{pid}") or _is_zombie_or_gone(pid)


def _is_zombie_or_gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] in ("Z", "X")
    except OSError:
        return True


def test_a_hanging_decoder_is_stopped_after_the_timeout(videos):
    good, fifo = videos
    with DecodePool(1, "pyav", GEOMETRY, timeout=2) as pool:
        pool.submit(0, str(good))  # the worker is ready once this one is done
        events_until(pool, 0)
        (pid,) = pool.worker_pids
        started = time.monotonic()
        pool.submit(1, str(fifo))
        failed = [e for e in events_until(pool, 1) if isinstance(e, Failed)]
        assert time.monotonic() - started >= 2
        assert [e.message for e in failed] == ["the decoder made no progress for 2 s and "
                                               "was stopped"]
        assert not _alive(pid)
        pool.submit(2, str(good))
        assert [e for e in events_until(pool, 2) if isinstance(e, Finished)]


def _alive(pid):
    return os.path.exists(f"/proc/{pid}") and not _is_zombie_or_gone(pid)


@pytest.mark.slow
def test_cli_run_with_a_hanging_input_finishes(tmp_path, videos):
    good, fifo = videos
    folder = tmp_path
    write_video(folder / "later.mp4", 16)
    out = tmp_path / "out" / "f.h5"
    out.parent.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "c3d_extract", str(folder), "-o", str(out), "--weights", "random",
         "--timeout", "3", "--workers", "1", "--quiet"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    table = read_video_table(str(out))
    status = dict(zip(table["id"], table["status"]))
    errors = dict(zip(table["id"], table["error"]))
    assert status == {"good.mp4": "ok", "later.mp4": "ok", "pipe.mp4": "error"}
    assert errors["pipe.mp4"] == "the decoder made no progress for 3 s and was stopped"
    assert "failed: pipe.mp4: the decoder made no progress" in result.stderr


def test_a_script_without_a_main_guard_runs_once_and_gets_features(tmp_path):
    """Spawned decode workers must not re-run the caller's script (nor fail to, as with
    ``python -``): each would start another extraction, or die and fail every video."""
    from tests.support.videos import write_video

    video = write_video(tmp_path / "v.mp4", 16)
    script = (
        "import c3d_extract\n"
        "print('script started', flush=True)\n"
        "weights = c3d_extract.resolve_weights('random')\n"
        f"records = list(c3d_extract.iter_records([('v', {str(video)!r})], weights,\n"
        "                                         c3d_extract.ExtractOptions()))\n"
        "print('status', records[0].status, records[0].error, flush=True)\n")
    (tmp_path / "no_guard.py").write_text(script)
    for how in ([str(tmp_path / "no_guard.py")], ["-"]):
        result = subprocess.run([sys.executable, "-W", "ignore", *how], capture_output=True,
                                text=True, timeout=300, cwd=tmp_path,
                                input=script if how == ["-"] else None)
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("script started") == 1, result.stdout
        assert "status ok" in result.stdout, result.stdout + result.stderr
