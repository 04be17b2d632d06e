"""Per-clip feature files for export tests, written with the store writer (no network)."""

import csv
import os
from typing import Dict, Optional, Sequence

import h5py
import numpy as np

from c3d_extract.store.records import VideoRecord
from c3d_extract.store.write import FeatureStore
from tests.support.store_support import run_parameters

DIM = 4096  # Sultani's reader splits its files into rows of 4096 values


def clip_features(n_clips: int, seed: int, dim: int = DIM) -> np.ndarray:
    """Non-negative (post-ReLU-like) float32 features with some exact zeros."""
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((n_clips, dim)).astype(np.float32)
    return np.maximum(values, 0) * np.float32(3.0)


def video_record(video_id: str, features: np.ndarray, *, stride: int = 16, clip_len: int = 16,
                 fps: float = 30.0, status: str = "ok") -> VideoRecord:
    n_clips = len(features)
    mean = features.mean(axis=0)
    norm = np.linalg.norm(mean)
    return VideoRecord(
        id=video_id, status=status, n_frames=(n_clips - 1) * stride + clip_len + 3,
        n_clips=n_clips, fps=fps, width=171, height=128,
        features={"fc6": mean / norm if norm else mean},
        clip_features={"fc6": features},
        clip_starts=np.arange(n_clips, dtype=np.int64) * stride)


def write_store(path, videos: Dict[str, np.ndarray], *, stride: int = 16, clip_len: int = 16,
                per_clip: bool = True, failed: Sequence[str] = (), dim: int = DIM,
                shuffle_order: bool = False) -> None:
    """A committed feature file holding ``videos`` (id -> [clips, dims] features) and the
    failed videos ``failed``."""
    params = run_parameters(layers=("fc6",), stride=stride, clip_len=clip_len,
                            per_clip=per_clip)
    records = [video_record(i, f, stride=stride, clip_len=clip_len) for i, f in videos.items()]
    records += [VideoRecord(id=i, status="error", error="broken") for i in failed]
    if shuffle_order:
        records = records[::-1]
    with FeatureStore(str(path), params, {"fc6": dim}) as store:
        for record in records:
            store.add(record)
        store.commit(complete=True, n_inputs=len(records))


def make_crops(path, crops: np.ndarray, crop_order: Optional[str]) -> None:
    """Replace ``clips/fc6`` of a written file by ``crops`` ([clips, crops, dims]), as a
    ``--crops 5|10`` extraction stores it, with its ``crop_order`` attribute."""
    with h5py.File(path, "r+") as handle:
        del handle["clips/fc6"]
        handle["clips"].create_dataset("fc6", data=crops.astype(np.float32),
                                       maxshape=(None,) + crops.shape[1:])
        if crop_order is not None:
            handle.attrs["crop_order"] = crop_order


def index_rows(folder):
    """The rows of ``folder/index.csv``, as dicts."""
    with open(os.path.join(folder, "index.csv"), newline="") as handle:
        return list(csv.DictReader(handle))
