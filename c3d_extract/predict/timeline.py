"""What a model predicts over a video, window by window: smoothing, top-k, the CSV file.

A window is one clip: ``clip_len`` frames from its start frame (``stride`` apart).
Frames are numbered from 0; ``end_frame`` is a window's last frame, ``end_s`` the time
at which that frame ends (``(end_frame + 1) / fps``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from typing import Iterable, List, Sequence

import numpy as np


def moving_average(values: np.ndarray, width: int) -> np.ndarray:
    """Mean over ``width`` neighbouring rows, centred (for even widths one more row before
    than after), over the rows that exist at the ends: (n, c) -> (n, c), float64."""
    values = np.asarray(values, np.float64)
    if width < 1:
        raise ValueError("the smoothing width must be at least 1")
    n = len(values)
    if width == 1 or n == 0:
        return values.copy()
    sums = np.concatenate([np.zeros((1,) + values.shape[1:]), np.cumsum(values, axis=0)])
    rows = np.arange(n)
    low = np.clip(rows - width // 2, 0, n)
    high = np.clip(rows + (width - 1) // 2 + 1, 0, n)
    counts = (high - low).reshape((n,) + (1,) * (values.ndim - 1))
    return (sums[high] - sums[low]) / counts


def top_k_rows(probabilities: np.ndarray, k: int) -> np.ndarray:
    """Per row, the indices of the ``k`` largest values, largest first (ties: lower index)."""
    probabilities = np.asarray(probabilities)
    order = np.argsort(-probabilities, axis=1, kind="stable")
    return order[:, :min(k, probabilities.shape[1])]


@dataclass(frozen=True)
class Timeline:
    """One video's windows and their top classes."""

    video_id: str
    fps: float                    # 0.0 when unknown
    n_frames: int
    starts: np.ndarray            # (n,) first frame of each window
    ends: np.ndarray              # (n,) last frame of each window (inclusive)
    top_index: np.ndarray         # (n, k) class indices, most probable first
    top_probability: np.ndarray   # (n, k)
    class_names: Sequence[str] = field(default=(), repr=False)

    def __len__(self) -> int:
        return len(self.starts)

    def label(self, index: int) -> str:
        return self.class_names[index] if self.class_names else f"class {index}"

    def window_at(self, frame: int) -> int:
        """The window whose centre is nearest to ``frame`` (the earlier one on a tie)."""
        centres = (self.starts + self.ends) / 2.0  # ascending, as the starts are
        after = int(np.searchsorted(centres, frame))
        if after == 0 or (after < len(centres)
                          and centres[after] - frame < frame - centres[after - 1]):
            return min(after, len(centres) - 1)
        return after - 1


def build_timeline(video_id: str, starts: np.ndarray, probabilities: np.ndarray, *,
                   clip_len: int, n_frames: int, fps: float, top_k: int, smooth: int = 1,
                   class_names: Sequence[str] = ()) -> Timeline:
    """Windows from clip starts and per-clip probabilities (in clip order), smoothed over
    ``smooth`` windows before the top ``top_k`` are taken."""
    starts = np.asarray(starts, np.int64)
    smoothed = moving_average(probabilities, smooth)
    top = top_k_rows(smoothed, top_k)
    ends = np.minimum(starts + clip_len, max(n_frames, 1)) - 1
    return Timeline(video_id, float(fps), int(n_frames), starts, ends, top,
                    np.take_along_axis(smoothed, top, axis=1), tuple(class_names))


def csv_header(top_k: int) -> List[str]:
    header = ["video", "start_frame", "end_frame", "start_s", "end_s"]
    for rank in range(1, top_k + 1):
        header += [f"label_{rank}", f"probability_{rank}"]
    return header


def csv_rows(timeline: Timeline, fps: float) -> Iterable[List[str]]:
    """A video's rows; ``fps`` replaces the video's own rate when that is unknown (0)."""
    rate = timeline.fps if timeline.fps > 0 else fps
    for n in range(len(timeline)):
        start, end = int(timeline.starts[n]), int(timeline.ends[n])
        times = [f"{start / rate:.3f}", f"{(end + 1) / rate:.3f}"] if rate > 0 else ["", ""]
        row = [timeline.video_id, str(start), str(end), *times]
        for index, probability in zip(timeline.top_index[n], timeline.top_probability[n]):
            row += [timeline.label(int(index)), f"{probability:.6g}"]
        yield row


def write_timeline_csv(path: str, timelines: Sequence[Timeline], top_k: int,
                       fps: float = 0.0) -> None:
    """All videos' windows in one CSV file, written to a temporary file and renamed."""
    from c3d_extract.atomic_files import replaced_atomically

    with replaced_atomically(path, growth_bound=0) as temporary:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(csv_header(top_k))
            for timeline in timelines:
                writer.writerows(csv_rows(timeline, fps))
