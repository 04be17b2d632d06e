"""``ekosman``: the text features of ekosman/AnomalyDetectionCVPR2018-Pytorch.

As its ``FeaturesWriter.dump`` and ``to_segments`` write them (``feature_extractor.py``):
``<class folder>/<video name>.txt`` (the video's parent folder and its file name up to the
first dot), 32 segments (``segments.ekosman_clip_ranges``), each the float32 mean of its
clips divided by its ``np.linalg.norm``, every value as Python's ``str`` of the float,
joined by spaces, a newline after every row. Plus ``Train_Annotation.txt``:
``<class folder>/<file name> <decoded frames>`` per video, the list its ``FeaturesLoader``
reads (a video is normal when ``Normal`` is in its path).

Its ``to_segments`` keeps a row whose norm was zero (0/0 is NaN, and NaN != 0) and its
loader stacks the files of a batch, so a video with a zero segment is refused by name.
"""

from __future__ import annotations

import posixpath
from typing import List, Sequence, Tuple

import numpy as np

from c3d_extract.errors import ExportError
from c3d_extract.export.base import ExportOptions, PlannedFile, VideoRefused, normalised_segments
from c3d_extract.export.segments import ClipRange, ekosman_clip_ranges
from c3d_extract.export.source import StoreInfo, VideoClips, VideoMeta

ANNOTATION_NAME = "Train_Annotation.txt"


def _parts(video_id: str) -> Tuple[str, str]:
    """``(class folder, file name)``: the id's last folder (may be empty) and base name."""
    path = posixpath.normpath(video_id)
    return posixpath.basename(posixpath.dirname(path)), posixpath.basename(path)


def annotation_path(video_id: str) -> str:
    folder, name = _parts(video_id)
    return f"{folder}/{name}" if folder else name


def str_rows(matrix: np.ndarray) -> str:
    """``" ".join(str(x) for x in row)`` for every row, a newline after each."""
    return "".join(" ".join(map(str, row)) + "\n" for row in matrix.tolist())


class EkosmanFormat:
    def __init__(self, options: ExportOptions) -> None:
        self.options = options

    def check(self, info: StoreInfo) -> List[str]:
        if self.options.crop_files:
            raise ExportError("--crop-files writes .npy arrays: use it with --format npy")
        if info.crops:
            return ["the store holds several crops per clip; the centre crop is exported"]
        return []

    def files(self, meta: VideoMeta) -> List[PlannedFile]:
        folder, name = _parts(meta.id)
        if any(c.isspace() for c in folder + name):
            raise VideoRefused(f"video {meta.id!r}: its annotation line is split at "
                               "whitespace, so its path cannot contain any")
        if "." in folder:
            raise VideoRefused(f"video {meta.id!r}: the loader cuts the annotation path at "
                               "its first dot, so the class folder cannot contain one")
        stem = name.split(".")[0]
        if not stem:
            raise VideoRefused(f"video {meta.id!r}: its file name starts with a dot")
        return [PlannedFile(f"{folder}/{stem}.txt" if folder else f"{stem}.txt")]

    def clip_ranges(self, n_clips: int) -> List[ClipRange]:
        return ekosman_clip_ranges(n_clips, self.options.segments)

    def render(self, video: VideoClips) -> List[bytes]:
        rows = normalised_segments(video, self.clip_ranges(len(video.features)), np.float32)
        return [str_rows(rows).encode("ascii")]

    def finish(self, out_dir: str, exported: Sequence[VideoMeta]) -> Tuple[List[Tuple[str, bytes]],
                                                                           List[str]]:
        lines = "".join(f"{annotation_path(meta.id)} {meta.n_frames}\n" for meta in exported)
        return [(ANNOTATION_NAME, lines.encode("utf-8"))], []
