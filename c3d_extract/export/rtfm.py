"""``rtfm``: the per-video arrays and list file of tianyu0207/RTFM.

Each video becomes ``<id without extension>.npy`` shaped ``[snippets, crops, dims]``
float32, one row per non-overlapping 16-frame snippet (the store must hold clips of 16
frames at stride 16), crops in the DeepMIL order (one crop: ``crops`` is 1). ``rtfm.list``
holds their absolute paths, anomalous videos first: RTFM's ``Dataset`` reads
``list/ucf-i3d.list`` (``list/shanghai-i3d-train-10crop.list``) from its working folder,
takes the first 810 (63) lines as anomalous and the rest as normal, and pools each crop to
32 segments with ``process_feat`` (``segments.rtfm_clip_ranges``, listed in the index).
"""

from __future__ import annotations

import os
from typing import List, Sequence, Tuple

from c3d_extract.errors import ExportError
from c3d_extract.export.base import ExportOptions, PlannedFile
from c3d_extract.export.files import id_without_extension, npy_bytes
from c3d_extract.export.segments import ClipRange, rtfm_clip_ranges
from c3d_extract.export.source import StoreInfo, VideoClips, VideoMeta

LIST_NAME = "rtfm.list"
SNIPPET_FRAMES = 16


class RtfmFormat:
    def __init__(self, options: ExportOptions) -> None:
        self.options = options

    def check(self, info: StoreInfo) -> List[str]:
        if self.options.crop_files:
            raise ExportError("--crop-files writes one array per crop, RTFM reads all crops "
                              "of a video from one [snippets, crops, dims] array: leave it out")
        if info.clip_len != SNIPPET_FRAMES or info.stride != SNIPPET_FRAMES:
            raise ExportError(
                f"RTFM reads non-overlapping {SNIPPET_FRAMES}-frame snippets, but {info.path} "
                f"holds clips of {info.clip_len} frames every {info.stride} frames: extract "
                f"again with --clip-len 16 --stride 16 --per-clip")
        return []

    def files(self, meta: VideoMeta) -> List[PlannedFile]:
        return [PlannedFile(f"{id_without_extension(meta.id)}.npy")]

    def clip_ranges(self, n_clips: int) -> List[ClipRange]:
        return rtfm_clip_ranges(n_clips, self.options.segments)

    def render(self, video: VideoClips) -> List[bytes]:
        features = video.features
        if features.ndim == 2:
            features = features[:, None, :]
        return [npy_bytes(features)]

    def is_normal(self, meta: VideoMeta) -> bool:
        return self.options.normal_marker in meta.id

    def finish(self, out_dir: str, exported: Sequence[VideoMeta]) -> Tuple[List[Tuple[str, bytes]],
                                                                           List[str]]:
        anomalous = [m for m in exported if not self.is_normal(m)]
        normal = [m for m in exported if self.is_normal(m)]
        root = os.path.abspath(out_dir)
        lines = "".join(os.path.join(root, *self.files(m)[0].path.split("/")) + "\n"
                        for m in anomalous + normal)
        note = (f"{LIST_NAME}: {len(anomalous)} anomalous videos first, then {len(normal)} "
                f"normal (ids containing {self.options.normal_marker!r}); RTFM's Dataset "
                f"splits its list at a fixed line (810 for UCF-Crime, 63 for ShanghaiTech): "
                f"set it to {len(anomalous)} in its dataset.py if that differs")
        return [(LIST_NAME, lines.encode("utf-8"))], [note]
