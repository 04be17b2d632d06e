"""Clip batches against the paper's clip protocol, computed here frame by frame."""

import numpy as np
import pytest

from c3d_extract.extraction.batching import ClipBatcher


def frames_of(n_frames, first=0):
    """Frames whose first pixel holds their index (mod 256) and second its index // 256."""
    out = np.zeros((n_frames, 2, 2, 3), np.uint8)
    idx = np.arange(first, first + n_frames)
    out[:, 0, 0, 0] = idx % 256
    out[:, 0, 0, 1] = idx // 256
    return out


def decode_index(frame):
    return int(frame[0, 0, 0]) + 256 * int(frame[0, 0, 1])


def run(batcher, videos, chunk=5):
    """Feed videos (slot -> n_frames) interleaved chunk by chunk; collect clips' frames."""
    got = {slot: [] for slot in videos}
    fed = {slot: 0 for slot in videos}
    while any(fed[s] < n for s, n in videos.items()):
        for slot, n in videos.items():
            if fed[slot] < n:
                k = min(chunk, n - fed[slot])
                batcher.add_frames(slot, frames_of(k, fed[slot]))
                fed[slot] += k
                if fed[slot] == n:
                    batcher.finish_video(slot, n)
        for batch in batcher.batches():
            collect(batch, got)
    for batch in batcher.batches(flush=True):
        collect(batch, got)
    return got


def collect(batch, got):
    assert batch.index.max() < len(batch.frames)
    for row, clip in zip(batch.index, batch.clips):
        got[clip.slot].append((clip.start, [decode_index(batch.frames[i]) for i in row]))


@pytest.mark.parametrize("n", [16, 17, 23, 24, 100, 300])
def test_full_clips_hold_consecutive_frames(n):
    got = run(ClipBatcher(16, 8, "pad", batch_size=4), {0: n})[0]
    starts = list(range(0, n - 15, 8))
    assert [s for s, _ in got] == starts
    assert all(frames == list(range(s, s + 16)) for s, frames in got)


def test_short_videos_follow_their_policy():
    got = run(ClipBatcher(16, 8, "pad", batch_size=3), {0: 5, 1: 1})
    assert got[0] == [(0, [0, 1, 2, 3, 4] + [4] * 11)]
    assert got[1] == [(0, [0] * 16)]
    looped = run(ClipBatcher(16, 8, "loop", batch_size=3), {0: 5})
    assert looped[0] == [(0, [0, 1, 2, 3, 4] * 3 + [0])]
    assert run(ClipBatcher(16, 8, "skip", batch_size=3), {0: 5})[0] == []


def test_videos_share_batches_and_keep_their_own_frames():
    batcher = ClipBatcher(16, 8, "pad", batch_size=5)
    got = run(batcher, {0: 40, 1: 33, 2: 7}, chunk=3)
    assert [s for s, _ in got[0]] == [0, 8, 16, 24]
    assert [s for s, _ in got[1]] == [0, 8, 16]
    assert got[2] == [(0, list(range(7)) + [6] * 9)]
    for slot in (0, 1):
        assert all(frames == list(range(s, s + 16)) for s, frames in got[slot])


def test_each_frame_travels_once_per_batch():
    batcher = ClipBatcher(16, 8, "pad", batch_size=4)
    batcher.add_frames(0, frames_of(40))
    batch = next(batcher.batches())
    # Four clips at stride 8 cover frames 0..39: 40 unique frames, not 64.
    assert len(batch.frames) == 40 and batch.index.shape == (4, 16)


def test_memory_does_not_grow_with_video_length():
    batcher = ClipBatcher(16, 8, "pad", batch_size=4)
    peak = 0
    for start in range(0, 5000, 10):
        batcher.add_frames(0, frames_of(10, start))
        for _ in batcher.batches():
            pass
        peak = max(peak, batcher.buffered_frames())
    # At most batch_size - 1 clips wait: their span, plus one chunk.
    assert peak <= 16 + 3 * 8 + 10


def test_dropping_a_failed_video_removes_its_clips():
    batcher = ClipBatcher(16, 8, "pad", batch_size=100)
    batcher.add_frames(0, frames_of(40))
    batcher.add_frames(1, frames_of(24))
    batcher.drop_video(0)
    batch = next(batcher.batches(flush=True))
    assert {clip.slot for clip in batch.clips} == {1}
    assert batcher.pending_for(0) == 0
