"""Fixture builders for the evaluation tests: feature files written by the real writer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from c3d_extract.store.records import RunParameters, VideoRecord
from c3d_extract.store.write import FeatureStore


def write_features(path: str, ids: Sequence[str], layers: Dict[str, np.ndarray], *,
                   statuses: Optional[Sequence[str]] = None, weights_sha256: str = "a" * 64,
                   clips: Optional[Dict[str, Sequence[np.ndarray]]] = None) -> str:
    """A feature file with one row per id; ``clips[layer][i]`` are video i's per-clip rows."""
    statuses = list(statuses) if statuses is not None else ["ok"] * len(ids)
    params = RunParameters(layers=tuple(layers), clip_len=16, stride=8, short_policy="pad",
                           weights="test-weights.pt", weights_sha256=weights_sha256,
                           preprocessing="{}", precision="fp32", per_clip=clips is not None)
    dims = {layer: int(matrix.shape[1]) for layer, matrix in layers.items()}
    with FeatureStore(os.fspath(path), params, dims) as store:
        for i, (video_id, status) in enumerate(zip(ids, statuses)):
            has = status in ("ok", "padded", "looped")
            record = VideoRecord(
                id=video_id, status=status, error="decode failed" if status == "error" else "",
                n_frames=40 if has else 0, n_clips=4 if has else 0, fps=25.0, width=64,
                height=64,
                features={layer: matrix[i] for layer, matrix in layers.items()} if has else {})
            if clips is not None and has:
                per = {layer: np.asarray(clips[layer][i], np.float32) for layer in layers}
                n = len(next(iter(per.values())))
                record.clip_features = per
                record.clip_starts = np.arange(n, dtype=np.int64)[::-1] * 8  # stored reversed
                record.clip_features = {k: v[::-1].copy() for k, v in per.items()}
            store.add(record)
        store.commit(complete=True, n_inputs=len(ids))
    return os.fspath(path)


def l2_normalise(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms > 0, norms, 1)).astype(np.float32)


def blobs(n_per_class: int, n_classes: int, dim: int, *, spread: float = 0.3,
          seed: int = 0) -> tuple:
    """Separable class clusters (L2-normalised) and their integer classes."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim)) * 3
    codes = np.repeat(np.arange(n_classes), n_per_class)
    points = centres[codes] + spread * rng.normal(size=(len(codes), dim))
    return l2_normalise(np.abs(points)), codes


def write_labels_csv(path: str, rows: Sequence[Sequence[str]],
                     header: Sequence[str] = ("video", "label", "split")) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(",".join(header) + "\n")
        for row in rows:
            handle.write(",".join(str(cell) for cell in row) + "\n")
    return os.fspath(path)


MOTIONS = ("left", "right", "static")


def write_motion_video(path: str, motion: str, seed: int, *, n_frames: int = 20,
                       size: int = 64, speed: int = 2) -> str:
    """A real MPEG-4 file of a coloured vertical grating drifting left, right or standing still."""
    from tests.support.videos import write_video

    rng = np.random.default_rng(seed)
    period, phase = rng.uniform(10, 16), rng.uniform(0, 2 * np.pi)
    colour = rng.uniform(0.3, 1.0, 3)
    shift_per_frame = {"left": speed, "right": -speed, "static": 0}[motion]

    def grating(index: int, width: int, height: int) -> np.ndarray:
        columns = np.arange(width) + shift_per_frame * index
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * columns / period + phase)
        image = np.repeat(255 * wave[None, :, None] * colour[None, None, :], height, axis=0)
        return np.ascontiguousarray(image.astype(np.uint8))

    write_video(Path(path), n_frames, width=size, height=size, codec="mpeg4", fps=24,
                frame_fn=grating)
    return os.fspath(path)
