"""Soak: one run over 1,000 short videos keeps its memory flat and leaves nothing behind.

Most videos have 8 frames and ``--short skip``: decoded, journaled and stored, but no
network pass, so the decode, store and journal paths run 1,000 times affordably on a
CPU. A handful of 16-frame videos go through the network. Run with ``make soak``.
"""

import os
import time

import pytest

from c3d_extract.store.read import read_video_table
from tests.support.runs import assert_no_processes_left, leftovers, new_tag, processes_tagged, start
from tests.support.videos import write_video

pytestmark = pytest.mark.soak

N_SHORT = 995
N_CLIPS = 5
#: Allowed growth of the main process's resident memory between the first and the last
#: quarter of the run.
MAX_GROWTH_MB = 40


def _rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def test_a_thousand_videos(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(N_SHORT):
        write_video(videos / f"short{i:04d}.mp4", 8, width=32, height=32)
    for i in range(N_CLIPS):
        write_video(videos / f"clip{i}.mp4", 16, width=32, height=32)
    out = tmp_path / "soak.h5"
    tag = new_tag()
    started = time.monotonic()
    # Batches of one clip: the clip videos (first in id order) go through the network at
    # once, so its one-time allocations happen before the window that is measured.
    process = start(videos, out, "--short", "skip", "--batch-size", "1", tag=tag)
    samples = []  # (seconds, main RSS MB, workers' RSS MB)
    while process.poll() is None:
        main = _rss_mb(process.pid)
        workers = [_rss_mb(pid) for pid in processes_tagged(tag) if pid != process.pid]
        if main is not None:
            samples.append((time.monotonic() - started, main, sum(w or 0 for w in workers)))
        time.sleep(0.2)
    _, err = process.communicate()
    seconds = time.monotonic() - started
    assert process.returncode == 0, err
    table = read_video_table(str(out))
    statuses = list(table["status"])
    assert len(statuses) == N_SHORT + N_CLIPS
    assert statuses.count("skipped") == N_SHORT and statuses.count("ok") == N_CLIPS
    assert leftovers(out) == []
    assert_no_processes_left(tag)
    quarter = max(1, len(samples) // 4)
    early = max(s[1] for s in samples[quarter:2 * quarter])
    late = max(s[1] for s in samples[-quarter:])
    workers_early = max(s[2] for s in samples[quarter:2 * quarter])
    workers_late = max(s[2] for s in samples[-quarter:])
    print(f"\nsoak: {N_SHORT + N_CLIPS} videos in {seconds:.0f} s; main process RSS "
          f"{early:.0f} MB -> {late:.0f} MB ({late - early:+.1f} MB), peak "
          f"{max(s[1] for s in samples):.0f} MB; decode workers {workers_early:.0f} MB -> "
          f"{workers_late:.0f} MB ({workers_late - workers_early:+.1f} MB)")
    assert late - early < MAX_GROWTH_MB
    assert os.path.getsize(out) > 0
