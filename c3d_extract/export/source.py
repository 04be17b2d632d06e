"""Reading a feature file's per-clip features one video at a time, for export."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from c3d_extract.errors import ExportError
from c3d_extract.export.crops import centre_index, export_permutation, store_crop_order
from c3d_extract.store.read import open_for_reading, read_video_table
from c3d_extract.store.records import WITH_FEATURES


@dataclass(frozen=True)
class StoreInfo:
    """What every format needs to know about the store."""

    path: str
    layer: str
    clip_len: int
    stride: int
    dims: int
    #: Crop names in the store's order; empty for ``[clips, dims]`` stores.
    crops: Tuple[str, ...]


@dataclass(frozen=True)
class VideoMeta:
    row: int
    id: str
    status: str
    n_frames: int
    fps: float
    n_clips: int


@dataclass(frozen=True)
class VideoClips:
    """One video's clips in start-frame order; ``features`` is ``[clips, dims]`` or, for
    a store of several crops, ``[clips, crops, dims]`` with the crops in the exported order
    (``crops.EXPORT_ORDER``)."""

    meta: VideoMeta
    start_frames: np.ndarray
    features: np.ndarray

    def centre_crop(self) -> np.ndarray:
        """``[clips, dims]``: the features themselves, or those of the centre crop."""
        return self.features if self.features.ndim == 2 else self.features[:, 0]


def no_per_clip_message(path: str, layer: str, present: List[str]) -> str:
    return (f"{path} has no per-clip features for layer {layer!r} (it has: "
            f"{', '.join(present) or 'none'}); exporting needs them: extract with --per-clip "
            f"into a new file (e.g. c3d-extract VIDEOS -o per_clip.h5 --per-clip --layer {layer})")


class ClipReader:
    """An open feature file; ``clips(meta)`` reads one video's clips."""

    def __init__(self, path: str, layer: str = "fc6") -> None:
        self.path = path
        self.layer = layer
        self._stack = contextlib.ExitStack()
        self._dataset: Any = None
        self._rows_of: Dict[int, np.ndarray] = {}
        self._start_frame: Optional[np.ndarray] = None
        self._permutation: Optional[List[int]] = None
        self.info: Optional[StoreInfo] = None
        self.videos: List[VideoMeta] = []

    def __enter__(self) -> "ClipReader":
        table = read_video_table(self.path)
        try:
            handle = self._stack.enter_context(open_for_reading(self.path))
            self._open(handle, table)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _open(self, handle: Any, table: Dict[str, np.ndarray]) -> None:
        clips = handle["clips"] if "clips" in handle else None
        if clips is None or self.layer not in clips:
            present = sorted(k for k in clips.keys() if k not in ("video", "start_frame")) \
                if clips is not None else []
            raise ExportError(no_per_clip_message(self.path, self.layer, present))
        dataset = clips[self.layer]
        if dataset.ndim not in (2, 3):
            raise ExportError(f"{self.path} is damaged: clips/{self.layer} has shape "
                              f"{tuple(dataset.shape)}")
        crops: Tuple[str, ...] = ()
        if dataset.ndim == 3:
            attribute = dataset.attrs.get("crop_order", handle.attrs.get("crop_order"))
            crops = store_crop_order(int(dataset.shape[1]), attribute)
            self._permutation = export_permutation(crops)
            centre_index(crops)
        attrs = handle.attrs
        self.info = StoreInfo(path=self.path, layer=self.layer,
                              clip_len=int(attrs.get("clip_len", 16)),
                              stride=int(attrs.get("stride", 8)),
                              dims=int(dataset.shape[-1]), crops=crops)
        self._dataset = dataset
        video_of_clip = clips["video"][...]
        self._start_frame = clips["start_frame"][...]
        if len(video_of_clip) != dataset.shape[0] or len(self._start_frame) != dataset.shape[0]:
            raise ExportError(f"{self.path} is damaged: clips/video, clips/start_frame and "
                              f"clips/{self.layer} have different lengths")
        order = np.argsort(video_of_clip, kind="stable")
        rows, starts = np.unique(video_of_clip[order], return_index=True)
        for row, block in zip(rows, np.split(order, starts[1:])):
            self._rows_of[int(row)] = np.sort(block)
        # With --fps the frames (and clip starts) are those of the resampled sequence, so
        # its rate is the one that turns them into seconds.
        target_fps = attrs.get("target_fps")
        self.videos = [
            VideoMeta(row=i, id=str(table["id"][i]), status=str(table["status"][i]),
                      n_frames=int(table["n_frames"][i]),
                      fps=float(target_fps) if target_fps else float(table["fps"][i]),
                      n_clips=len(self._rows_of.get(i, ())))
            for i in range(len(table["id"]))]

    def has_features(self, meta: VideoMeta) -> bool:
        return meta.status in WITH_FEATURES and meta.n_clips > 0

    def start_frames(self, meta: VideoMeta) -> np.ndarray:
        """The first frame of each of the video's clips, in order (no features read)."""
        rows = self._rows_of.get(meta.row, np.zeros(0, np.int64))
        return np.sort(self._start_frame[rows], kind="stable")

    def clips(self, meta: VideoMeta) -> VideoClips:
        rows = self._rows_of.get(meta.row, np.zeros(0, np.int64))
        if len(rows) and rows[-1] - rows[0] == len(rows) - 1:
            features = self._dataset[int(rows[0]):int(rows[-1]) + 1]
        else:
            features = self._dataset[rows] if len(rows) else \
                np.zeros((0,) + self._dataset.shape[1:], np.float32)
        features = np.asarray(features, dtype=np.float32)
        start_frames = self._start_frame[rows]
        order = np.argsort(start_frames, kind="stable")
        features, start_frames = features[order], start_frames[order]
        if self._permutation is not None:
            features = features[:, self._permutation]
        return VideoClips(meta, start_frames, np.ascontiguousarray(features))
