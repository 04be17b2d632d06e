"""Turn streams of decoded frames into batches of clips, across video boundaries.

A batch is a pool of unique frames plus, per clip, the indices of its frames
in that pool. With 16-frame clips at stride 8 every frame belongs to two
clips, but it travels to the device once; the clips are gathered there.

Frames are kept only while a clip still needs them, so memory does not grow
with a video's length. Videos shorter than one clip are resolved by the short
policy when their end is known.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Dict, Iterator, List, Tuple

import numpy as np

from c3d_extract.video.clip_plan import plan_clips


@dataclass(frozen=True)
class Clip:
    slot: int          # which video
    start: int         # first frame, as in the paper's clip protocol
    frames: Tuple[int, ...]  # frame indices in the video


@dataclass(frozen=True)
class Batch:
    frames: np.ndarray  # (n_unique, H, W, C) uint8
    index: np.ndarray   # (n_clips, clip_len) int64 rows into ``frames``
    clips: Tuple[Clip, ...]


@dataclass
class _VideoFrames:
    first: int = 0                    # video index of frames[0]
    frames: List[np.ndarray] = field(default_factory=list)
    next_start: int = 0
    n_seen: int = 0
    pending: Deque[int] = field(default_factory=deque)  # first frame of each queued clip
    finished: bool = False            # the decoder has delivered every frame

    def get(self, index: int) -> np.ndarray:
        return self.frames[index - self.first]

    def drop_unneeded(self) -> None:
        """Forget frames that neither a queued clip nor a future clip will use."""
        keep_from = min(self.pending[0] if self.pending else self.next_start, self.n_seen)
        if keep_from > self.first:
            del self.frames[:keep_from - self.first]
            self.first = keep_from


class ClipBatcher:
    """Collect frames per video, cut clips, and hand out batches of ``batch_size`` clips."""

    def __init__(self, clip_len: int = 16, stride: int = 8, short_policy: str = "pad",
                 batch_size: int = 16) -> None:
        self.clip_len = clip_len
        self.stride = stride
        self.short_policy = short_policy
        self.batch_size = batch_size
        self._videos: Dict[int, _VideoFrames] = {}
        self._queue: Deque[Clip] = deque()

    @property
    def pending_clips(self) -> int:
        return len(self._queue)

    def buffered_frames(self) -> int:
        return sum(len(video.frames) for video in self._videos.values())

    def pending_for(self, slot: int) -> int:
        video = self._videos.get(slot)
        return 0 if video is None else len(video.pending)

    def add_frames(self, slot: int, frames: np.ndarray) -> None:
        video = self._videos.setdefault(slot, _VideoFrames())
        video.frames.extend(frames)
        video.n_seen += len(frames)
        while video.next_start + self.clip_len <= video.n_seen:
            start = video.next_start
            self._enqueue(slot, video, start, tuple(range(start, start + self.clip_len)))
            video.next_start += self.stride
        video.drop_unneeded()

    def finish_video(self, slot: int, n_frames: int) -> str:
        """The video ended after ``n_frames``; returns the status its clips get."""
        video = self._videos.setdefault(slot, _VideoFrames())
        plan = plan_clips(n_frames, self.clip_len, self.stride, self.short_policy)
        if plan.status != "ok":
            # Short video: every frame is still buffered.
            for start, frames in zip(plan.starts, plan.frames):
                self._enqueue(slot, video, int(start), tuple(int(f) for f in frames))
        video.finished = True
        if not video.pending:
            del self._videos[slot]
        return plan.status

    def drop_video(self, slot: int) -> None:
        """Forget a failed video's frames and queued clips."""
        self._videos.pop(slot, None)
        self._queue = deque(clip for clip in self._queue if clip.slot != slot)

    def _enqueue(self, slot: int, video: _VideoFrames, start: int, frames: Tuple[int, ...]) -> None:
        self._queue.append(Clip(slot, start, frames))
        video.pending.append(min(frames))

    def batches(self, flush: bool = False) -> Iterator[Batch]:
        """Full batches; with ``flush`` also a last partial one."""
        while len(self._queue) >= self.batch_size or (flush and self._queue):
            yield self._take(min(self.batch_size, len(self._queue)))

    def _take(self, count: int) -> Batch:
        clips = tuple(self._queue.popleft() for _ in range(count))
        position: Dict[Tuple[int, int], int] = {}
        pool: List[np.ndarray] = []
        index = np.empty((count, self.clip_len), np.int64)
        for row, clip in enumerate(clips):
            video = self._videos[clip.slot]
            for column, frame in enumerate(clip.frames):
                key = (clip.slot, frame)
                if key not in position:
                    position[key] = len(pool)
                    pool.append(video.get(frame))
                index[row, column] = position[key]
        for clip in clips:
            self._release(clip)
        return Batch(np.stack(pool), index, clips)

    def _release(self, clip: Clip) -> None:
        video = self._videos[clip.slot]
        video.pending.popleft()  # a video's clips leave the queue in the order they entered
        if video.finished and not video.pending:
            del self._videos[clip.slot]
        else:
            video.drop_unneeded()
