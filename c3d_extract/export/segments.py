"""How each pipeline cuts a video's clips into segments: pure arithmetic, one rule per source.

Every function returns the segments as ``(first_clip, last_clip)`` pairs, 0-based and
inclusive, so one ``segment_means`` serves every format and ``frame_ranges`` turns them into
the frames that ground-truth alignment needs. Each rule is the one of the code cited; the
tests check them against independent re-implementations of that code.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

ClipRange = Tuple[int, int]


def _check(n_clips: int, n_segments: int) -> None:
    if n_clips < 1:
        raise ValueError(f"a video needs at least one clip to be segmented, not {n_clips}")
    if n_segments < 1:
        raise ValueError(f"the number of segments must be positive, not {n_segments}")


def matlab_linspace(first: float, last: float, count: int) -> np.ndarray:
    """MATLAB's ``linspace``: ``first + (k * (last - first)) / (count - 1)``, ends exact."""
    steps = count - 1
    points = first + (np.arange(count, dtype=np.float64) * (last - first)) / steps
    points[0], points[-1] = first, last
    return points


def matlab_round(values: np.ndarray) -> np.ndarray:
    """MATLAB's ``round``: halves away from zero (numpy rounds them to even)."""
    return (np.sign(values) * np.floor(np.abs(values) + 0.5)).astype(np.int64)


def sultani_clip_ranges(n_clips: int, n_segments: int = 32) -> List[ClipRange]:
    """``Save_C3DFeatures_32Segments.m`` (WaqasSultani/AnomalyDetectionCVPR2018).

    ``b = round(linspace(1, N, S + 1))`` on 1-based clip numbers; segment i covers clips
    ``b(i) .. b(i+1) - 1``, or clip ``b(i)`` alone when that range is empty. The script's
    special case for the last segment (``ishots == length(thirty2_shots)``) cannot hold
    inside its loop, so the last clip is never part of a mean unless a range is empty.
    """
    _check(n_clips, n_segments)
    bounds = matlab_round(matlab_linspace(1, n_clips, n_segments + 1))
    ranges = []
    for start, next_start in zip(bounds[:-1], bounds[1:]):
        end = max(int(next_start) - 1, int(start))
        ranges.append((int(start) - 1, end - 1))
    return ranges


def ekosman_clip_ranges(n_clips: int, n_segments: int = 32) -> List[ClipRange]:
    """``to_segments`` of ekosman/AnomalyDetectionCVPR2018-Pytorch (``feature_extractor.py``).

    ``b = np.round(np.linspace(0, N - 1, S + 1))`` (numpy rounds halves to even); segment i
    is the mean of ``data[b[i]:b[i+1]]``, or row ``b[i]`` alone when ``b[i] == b[i+1]``.
    """
    _check(n_clips, n_segments)
    bounds = np.round(np.linspace(0, n_clips - 1, num=n_segments + 1)).astype(int)
    return [(int(start), int(start) if start == stop else int(stop) - 1)
            for start, stop in zip(bounds[:-1], bounds[1:])]


def rtfm_clip_ranges(n_clips: int, n_segments: int = 32) -> List[ClipRange]:
    """``process_feat`` of tianyu0207/RTFM (``utils.py``): what RTFM does to our files.

    ``r = np.linspace(0, N, S + 1)`` cast to int (truncation); segment i is the mean of
    ``feat[r[i]:r[i+1]]``, or row ``r[i]`` alone when ``r[i] == r[i+1]``.
    """
    _check(n_clips, n_segments)
    bounds = np.linspace(0, n_clips, n_segments + 1).astype(int)
    return [(int(start), int(start) if start == stop else int(stop) - 1)
            for start, stop in zip(bounds[:-1], bounds[1:])]


def each_clip(n_clips: int) -> List[ClipRange]:
    """One segment per clip (per-clip arrays)."""
    return [(i, i) for i in range(n_clips)]


def segment_means(features: np.ndarray, ranges: Sequence[ClipRange]) -> np.ndarray:
    """The mean of each range of rows, in ``features``' dtype (numpy's ``mean``, as the
    Python pipelines compute it)."""
    return np.stack([features[first:last + 1].mean(axis=0) for first, last in ranges])


def l2_normalise_rows(segments: np.ndarray) -> Tuple[np.ndarray, List[int]]:
    """Each row divided by its ``np.linalg.norm`` (one call per row, as the pipelines do),
    and the rows that cannot be: a zero norm or a value that is not finite."""
    out = np.empty_like(segments)
    bad = []
    for i, row in enumerate(segments):
        norm = np.linalg.norm(row)
        if not np.isfinite(norm) or norm == 0 or not np.all(np.isfinite(row)):
            bad.append(i)
            out[i] = row
        else:
            out[i] = row / norm
    return out, bad


def frame_ranges(ranges: Sequence[ClipRange], start_frames: np.ndarray, clip_len: int,
                 n_frames: int) -> List[Tuple[int, int]]:
    """First and last frame (0-based, inclusive) that each segment's clips cover; the last
    is clamped to the video's last decoded frame (short videos are padded or looped)."""
    last_frame = max(int(n_frames) - 1, 0)
    return [(int(start_frames[first]),
             min(int(start_frames[last]) + clip_len - 1, last_frame)) for first, last in ranges]
