"""``sultani``: the ``*_C.txt`` files of Sultani et al. (CVPR 2018), UCF-Crime.

As ``Save_C3DFeatures_32Segments.m`` writes them (WaqasSultani/AnomalyDetectionCVPR2018):
per-clip features in double precision, 32 segments (``segments.sultani_clip_ranges``),
each the mean of its clips, L2-normalised, printed with MATLAB's ``fprintf('%f ')`` (six
decimals and a space after every value, a newline after every row). Files are flat in the
output folder, named ``<video name>_C.txt``: the training script globs ``*_C.txt`` in one
folder (one for anomalous, one for normal videos).

The script also stops on a clip whose features sum to zero; here only what reaches the
file is checked: a segment that cannot be normalised refuses its video by name.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from c3d_extract.errors import ExportError
from c3d_extract.export.base import ExportOptions, PlannedFile, normalised_segments
from c3d_extract.export.files import video_name
from c3d_extract.export.segments import ClipRange, sultani_clip_ranges
from c3d_extract.export.source import StoreInfo, VideoClips, VideoMeta


def fprintf_rows(matrix: np.ndarray) -> str:
    """MATLAB's ``fprintf(fid, '%f ', row); fprintf(fid, '\\n')`` for every row."""
    return "".join("".join("%f " % value for value in row.tolist()) + "\n" for row in matrix)


class SultaniFormat:
    def __init__(self, options: ExportOptions) -> None:
        self.options = options

    def check(self, info: StoreInfo) -> List[str]:
        if self.options.crop_files:
            raise ExportError("--crop-files writes .npy arrays: use it with --format npy")
        warnings = []
        if info.stride != info.clip_len:
            warnings.append(f"Sultani et al. segment C3D features of non-overlapping "
                            f"16-frame clips; {info.path} holds clips every {info.stride} "
                            "frames (extract with --stride 16 to match the released features)")
        if info.crops:
            warnings.append("the store holds several crops per clip; the centre crop is "
                            "exported (the paper's single crop)")
        return warnings

    def files(self, meta: VideoMeta) -> List[PlannedFile]:
        return [PlannedFile(f"{video_name(meta.id)}_C.txt")]

    def clip_ranges(self, n_clips: int) -> List[ClipRange]:
        return sultani_clip_ranges(n_clips, self.options.segments)

    def render(self, video: VideoClips) -> List[bytes]:
        rows = normalised_segments(video, self.clip_ranges(len(video.features)), np.float64)
        return [fprintf_rows(rows).encode("ascii")]

    def finish(self, out_dir: str, exported: Sequence[VideoMeta]) -> Tuple[List[Tuple[str, bytes]],
                                                                           List[str]]:
        return [], []
