"""Which frames make up each clip: the paper's 16-frame windows and the short-video policies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np

SHORT_POLICIES = ("pad", "loop", "skip")
#: Status recorded for a video by the policy that produced its clips.
POLICY_STATUS = {"pad": "padded", "loop": "looped", "skip": "skipped"}


def clip_starts(n_frames: int, clip_len: int = 16, stride: int = 8) -> List[int]:
    """First frame of every full clip: 0, stride, 2 * stride, ... while start + clip_len <= n."""
    if clip_len < 1 or stride < 1:
        raise ValueError("clip_len and stride must be positive")
    if n_frames < clip_len:
        return []
    return list(range(0, n_frames - clip_len + 1, stride))


@dataclass(frozen=True)
class ClipPlan:
    """The clips of one video: ``frames[i]`` lists the frame indices of clip ``i``."""

    starts: np.ndarray  # (n_clips,) int64
    frames: np.ndarray  # (n_clips, clip_len) int64
    status: str         # ok, padded, looped or skipped


def plan_clips(n_frames: int, clip_len: int = 16, stride: int = 8,
               short_policy: str = "pad") -> ClipPlan:
    """Clips for a video of ``n_frames`` frames (``n_frames >= 1``).

    Videos shorter than one clip become one clip by repeating the last frame
    (``pad``) or the video from its start (``loop``), or none (``skip``).
    """
    if short_policy not in SHORT_POLICIES:
        raise ValueError(f"short_policy must be one of {SHORT_POLICIES}, not {short_policy!r}")
    if n_frames < 1:
        raise ValueError("a video needs at least one frame")
    starts = clip_starts(n_frames, clip_len, stride)
    if starts:
        starts_array = np.asarray(starts, dtype=np.int64)
        frames = starts_array[:, None] + np.arange(clip_len, dtype=np.int64)[None, :]
        return ClipPlan(starts_array, frames, "ok")
    offsets = np.arange(clip_len, dtype=np.int64)
    if short_policy == "pad":
        frames = np.minimum(offsets, n_frames - 1)[None, :]
    elif short_policy == "loop":
        frames = (offsets % n_frames)[None, :]
    else:
        return ClipPlan(np.zeros(0, np.int64), np.zeros((0, clip_len), np.int64), "skipped")
    return ClipPlan(np.zeros(1, np.int64), frames, POLICY_STATUS[short_policy])
