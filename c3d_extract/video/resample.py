"""A target frame rate (``--fps``) chosen by presentation time, without re-encoding.

The resampled sequence has one frame per step of ``1 / fps`` seconds: output frame
``k`` is the decoded frame whose presentation time is nearest to
``t_k = t_0 + k / fps``, where ``t_0`` is the first decoded frame's time. Frames
are repeated (a higher rate) or skipped (a lower one); none is interpolated.

- Ties: times within ``TIE_SECONDS`` of each other count as equal, and a tie goes
  to the earlier frame. 25 to 30 fps meets exact ties (``t_3 = 0.1`` s lies halfway
  between 0.08 and 0.12); the tolerance makes the choice the same whether times
  are exact fractions or floats with rounding error.
- The end: the last frame lasts as long as the gap before it (one frame period for
  a constant rate), and steps are taken while ``t_k`` is before that end, so a
  one-second 25 fps video gives 30 frames at 30 fps; one frame gives one frame.
- Times that go backwards (damaged timestamps) are raised to the time before them,
  so the rule stays well defined.

``resample_indices`` is the rule on a whole list of times; ``FrameSelector`` applies
the same rule while frames stream in, holding one frame back (its neighbour decides
how often it is used). Both compute each comparison with the same float
expressions, so they agree to the bit.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

import numpy as np

#: Times closer than this (seconds) are one time: far below any container's time base,
#: far above the rounding error of double (or decord's float32 avoided here) arithmetic.
TIE_SECONDS = 1e-6


#: The highest target frame rate accepted: above it every frame would be repeated so often
#: that a run could go on for hours while looking busy.
MAX_TARGET_FPS = 1000.0


def check_target_fps(fps: float) -> None:
    """Raise ``ValueError`` unless ``fps`` is a finite number in (0, ``MAX_TARGET_FPS``]."""
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and 0 < fps <= MAX_TARGET_FPS):
        raise ValueError(f"the target frame rate must be a positive number of at most "
                         f"{MAX_TARGET_FPS:g} frames per second, not {fps!r}")


def _target_time(first: float, step: int, fps: float) -> float:
    return first + step / fps


def _nearer_to_first(target: float, time: float, next_time: float) -> bool:
    """True when ``target`` is at least as near to ``time`` as to ``next_time``
    (within ``TIE_SECONDS``): the frame at ``time`` is the one to take."""
    return target <= (time + next_time) / 2 + TIE_SECONDS / 2


def _before_end(target: float, end: float) -> bool:
    return target < end - TIE_SECONDS


def _end_time(last: float, gap: float) -> float:
    """When the last frame ends: it lasts as long as the gap before it (at least a tie's
    width, so that every target already given to it counts as before the end)."""
    return last + max(gap, 2 * TIE_SECONDS)


def resample_indices(times: Sequence[float], fps: float) -> np.ndarray:
    """Indices into ``times`` (presentation times in seconds, in decoding order) of
    the frames that make the sequence at ``fps`` frames per second (module docstring)."""
    check_target_fps(fps)
    values = np.maximum.accumulate(np.asarray(times, dtype=np.float64))
    if values.size == 0:
        return np.zeros(0, np.int64)
    first, last = float(values[0]), float(values[-1])
    end = _end_time(last, last - float(values[-2]) if values.size > 1 else 0.0)
    steps = [0]
    while _before_end(_target_time(first, steps[-1] + 1, fps), end):
        steps.append(steps[-1] + 1)
    targets = np.array([_target_time(first, k, fps) for k in steps], np.float64)
    # Frame i is taken for a target up to the midpoint with frame i + 1 (ties: frame i).
    bounds = (values[:-1] + values[1:]) / 2 + TIE_SECONDS / 2
    return np.searchsorted(bounds, targets, side="left").astype(np.int64)


class FrameSelector:
    """``resample_indices`` for frames that arrive one at a time.

    ``push(time)`` takes the next decoded frame's time and returns how many times the
    frame before it is used in the resampled sequence (0, 1 or more); ``finish()``
    returns the count of the last frame. So a caller keeps one frame back and
    converts only the frames that are used.
    """

    def __init__(self, fps: float) -> None:
        check_target_fps(fps)
        self.fps = fps
        self._first: Optional[float] = None
        self._previous: Optional[float] = None
        self._gap = 0.0
        self._step = 0  # next target to fill

    def push(self, time: float) -> int:
        if self._previous is None:
            self._first = self._previous = float(time)
            return 0
        time = max(float(time), self._previous)
        count = self._take_while(lambda target: _nearer_to_first(target, self._previous, time))
        self._gap = time - self._previous
        self._previous = time
        return count

    def finish(self) -> int:
        """The count of the last frame pushed (0 if none was)."""
        if self._previous is None:
            return 0
        if self._step == 0:
            self._step = 1
            return 1 + self.finish()
        end = _end_time(self._previous, self._gap)
        return self._take_while(lambda target: _before_end(target, end))

    def _take_while(self, condition) -> int:
        count = 0
        while condition(_target_time(self._first, self._step, self.fps)):  # type: ignore[arg-type]
            count += 1
            self._step += 1
        return count


def select_by_time(times: Sequence[float], fps: float) -> List[int]:
    """``resample_indices`` through ``FrameSelector`` (the streaming path), as a list."""
    selector = FrameSelector(fps)
    chosen: List[int] = []
    for index, time in enumerate(times):
        chosen += [index - 1] * selector.push(time)
    chosen += [len(times) - 1] * selector.finish()
    return chosen
