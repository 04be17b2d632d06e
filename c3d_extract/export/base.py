"""The options of an export and what each format module provides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Protocol, Sequence, Tuple

import numpy as np

from c3d_extract.errors import ExportError
from c3d_extract.export.segments import ClipRange, l2_normalise_rows, segment_means
from c3d_extract.export.source import StoreInfo, VideoClips, VideoMeta

FORMATS = ("npy", "sultani", "ekosman", "rtfm")


@dataclass(frozen=True)
class ExportOptions:
    """``format``: one of ``FORMATS``; ``segments``: segments per video (sultani, ekosman,
    and the segments RTFM cuts, listed in the index); ``crop_files``: one file per crop
    (npy); ``normal_marker``: the text in the id of a normal (not anomalous) video, as
    UCF-Crime names them; ``overwrite``: write files that already exist again."""

    format: str
    layer: str = "fc6"
    segments: int = 32
    crop_files: bool = False
    normal_marker: str = "Normal"
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ExportError(f"unknown export format {self.format!r} "
                              f"(known: {', '.join(FORMATS)})")
        if self.segments < 1:
            raise ExportError(f"--segments must be at least 1, not {self.segments}")


class VideoRefused(ExportError):
    """One video cannot be written in the format; the others are."""


@dataclass(frozen=True)
class PlannedFile:
    """An output file, relative to the output folder (POSIX separators); ``crop`` is the
    exported crop index of a one-file-per-crop output."""

    path: str
    crop: Optional[int] = None


class Format(Protocol):
    """One output format: which files a video becomes and what they hold."""

    def check(self, info: StoreInfo) -> List[str]:
        """Raise ``ExportError`` if the store cannot be exported so; return warnings."""

    def files(self, meta: VideoMeta) -> List[PlannedFile]:
        """The files of one video (raise ``VideoRefused`` if its id cannot be one)."""

    def clip_ranges(self, n_clips: int) -> List[ClipRange]:
        """The clips of each row or segment, for the index."""

    def render(self, video: VideoClips) -> List[bytes]:
        """The content of each of ``files(video.meta)`` (raise ``VideoRefused``)."""

    def finish(self, out_dir: str, exported: Sequence[VideoMeta]) -> Tuple[List[Tuple[str, bytes]],
                                                                           List[str]]:
        """Files written after the videos (relative path, content) and notes for the user."""


def refuse_rows(video_id: str, bad_rows: Sequence[int], what: str) -> VideoRefused:
    shown = ", ".join(str(i + 1) for i in bad_rows[:8]) + (" ..." if len(bad_rows) > 8 else "")
    return VideoRefused(f"video {video_id!r}: {what} {shown} cannot be L2-normalised (the "
                        "mean of its clips is zero or not finite)")


def normalised_segments(video: VideoClips, ranges: Sequence[ClipRange],
                        dtype: type) -> np.ndarray:
    """The centre crop's segment means over ``ranges``, computed in ``dtype`` (the precision
    of the pipeline copied), each L2-normalised; a row that cannot be refuses the video."""
    clips = video.centre_crop().astype(dtype, copy=False)
    normalised, bad = l2_normalise_rows(segment_means(clips, ranges))
    if bad:
        raise refuse_rows(video.meta.id, bad, "segment")
    return normalised
