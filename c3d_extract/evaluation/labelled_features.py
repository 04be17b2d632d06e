"""Labelled descriptors read from a feature file, in chunks so files larger than memory work."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from c3d_extract.datasets.labels import Labels, Match, MatchReport, match_labels
from c3d_extract.errors import LabelsError
from c3d_extract.store.read import iter_feature_chunks, read_video_table

#: Rows per read when streaming a feature file.
CHUNK_ROWS = 4096


@dataclass(frozen=True)
class LabelledFeatures:
    """Descriptors (float32) and class codes of the labelled videos chosen for one use."""

    ids: Tuple[str, ...]
    features: np.ndarray   # (n, dim) float32
    codes: np.ndarray      # (n,) int64 index into classes
    classes: Tuple[str, ...]
    note: str              # which rows were used, for the user
    report: MatchReport


def match_feature_file(path: str, labels: Labels, *, allow_missing: bool = False) -> Match:
    """Match labels to the videos of a feature file; mismatches raise unless allowed."""
    table = read_video_table(path)
    match = match_labels(labels, list(table["id"]), list(table["status"]))
    match.report.check(allow_missing)
    return match


def split_rows(match: Match, split: Optional[str]) -> Tuple[np.ndarray, str]:
    """Indices into ``match`` of the rows for ``split`` (train, test, or None for all), and why.

    Without a split column every labelled video is used; ``unused`` rows (HMDB51's
    0) are never used.
    """
    n = len(match.rows)
    if match.splits is None:
        return np.arange(n), f"labels have no split column: using all {n} labelled videos"
    if split is None:
        chosen = np.flatnonzero(match.splits != "unused")
        return chosen, f"using all {len(chosen)} train and test videos (split column ignored)"
    chosen = np.flatnonzero(match.splits == split)
    if not len(chosen):
        raise LabelsError(f"no labelled video with features has split == {split}")
    return chosen, f"using the {len(chosen)} videos with split == {split}"


def read_rows(path: str, layer: str, rows: Sequence[int],
              chunk_rows: int = CHUNK_ROWS) -> Tuple[List[str], np.ndarray]:
    """The ids and descriptors of the given feature-file rows, in that order, read in chunks."""
    rows = np.asarray(rows, np.int64)
    order = np.argsort(rows, kind="stable")
    wanted = rows[order]
    ids: List[str] = [""] * len(rows)
    matrix: Optional[np.ndarray] = None
    start = 0
    for chunk_ids, chunk in iter_feature_chunks(path, layer, chunk_rows):
        if matrix is None:
            matrix = np.zeros((len(rows), chunk.shape[1]), np.float32)
        stop = start + len(chunk)
        lo, hi = np.searchsorted(wanted, [start, stop])
        if hi > lo:
            local = wanted[lo:hi] - start
            matrix[order[lo:hi]] = chunk[local]
            for position, row in zip(order[lo:hi], local):
                ids[position] = chunk_ids[row]
        start = stop
    if matrix is None:
        matrix = np.zeros((0, 0), np.float32)
    return ids, matrix


def load_labelled(path: str, labels: Labels, *, layer: str = "fc6", split: Optional[str] = None,
                  allow_missing: bool = False, chunk_rows: int = CHUNK_ROWS,
                  match: Optional[Match] = None) -> LabelledFeatures:
    """The labelled descriptors for ``split`` (see ``split_rows``) as one float32 matrix.

    ``match`` skips matching again when the caller has matched the file already.
    """
    if match is None:
        match = match_feature_file(path, labels, allow_missing=allow_missing)
    chosen, note = split_rows(match, split)
    if not len(chosen):
        raise LabelsError(f"no labelled video of {labels.source} has features in {path}")
    ids, matrix = read_rows(path, layer, match.rows[chosen], chunk_rows)
    return LabelledFeatures(tuple(ids), matrix, match.codes[chosen], match.classes, note,
                            match.report)


def iter_labelled_chunks(path: str, match: Match, chosen: np.ndarray, *, layer: str = "fc6",
                         chunk_rows: int = CHUNK_ROWS) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """``(features, codes)`` of the chosen labelled rows, one feature-file chunk at a time."""
    code_of_row = np.full(0, -1, np.int64)
    rows = match.rows[chosen]
    if len(rows):
        code_of_row = np.full(int(rows.max()) + 1, -1, np.int64)
        code_of_row[rows] = match.codes[chosen]
    start = 0
    for _, chunk in iter_feature_chunks(path, layer, chunk_rows):
        stop = start + len(chunk)
        codes = code_of_row[start:min(stop, len(code_of_row))]
        keep = np.flatnonzero(codes >= 0)
        if len(keep):
            yield chunk[keep], codes[keep]
        start = stop
