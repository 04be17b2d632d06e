"""``npy``: one array per video, clips x dims float32 (video_features style), subfolders kept.

A store of several crops gives ``[clips, crops, dims]`` in the DeepMIL / VadCLIP order, or
with ``crop_files`` one ``<id>__<k>.npy`` of ``[clips, dims]`` per crop (``__0`` centre).
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

from c3d_extract.errors import ExportError
from c3d_extract.export.base import ExportOptions, PlannedFile
from c3d_extract.export.files import id_without_extension, npy_bytes
from c3d_extract.export.segments import ClipRange, each_clip
from c3d_extract.export.source import StoreInfo, VideoClips, VideoMeta


class NpyFormat:
    def __init__(self, options: ExportOptions) -> None:
        self.options = options
        self.n_crops = 0

    def check(self, info: StoreInfo) -> List[str]:
        self.n_crops = len(info.crops)
        if self.options.crop_files and not info.crops:
            raise ExportError(f"{info.path} holds one crop per clip: --crop-files needs "
                              "features extracted with --crops 5 or --crops 10")
        return []

    def files(self, meta: VideoMeta) -> List[PlannedFile]:
        stem = id_without_extension(meta.id)
        if self.options.crop_files:
            return [PlannedFile(f"{stem}__{k}.npy", k) for k in range(self.n_crops)]
        return [PlannedFile(f"{stem}.npy")]

    def clip_ranges(self, n_clips: int) -> List[ClipRange]:
        return each_clip(n_clips)

    def render(self, video: VideoClips) -> List[bytes]:
        if self.options.crop_files:
            return [npy_bytes(video.features[:, k]) for k in range(self.n_crops)]
        return [npy_bytes(video.features)]

    def finish(self, out_dir: str, exported: Sequence[VideoMeta]) -> Tuple[List[Tuple[str, bytes]],
                                                                           List[str]]:
        return [], []
