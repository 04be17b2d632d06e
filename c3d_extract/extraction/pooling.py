"""From clip features to the paper's video descriptor: mean over clips, then L2 norm.

With several crops per clip (``--crops 5`` or ``10``) each clip's features are crops x
dims, and the descriptor is the mean over clips and crops, then L2."""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np


def l2_normalise(vector: np.ndarray) -> Tuple[np.ndarray, bool]:
    """``(vector / ||vector||, False)``, or ``(zeros, True)`` for a zero vector."""
    norm = float(np.linalg.norm(vector))
    if norm == 0.0 or not np.isfinite(norm):
        return np.zeros_like(vector, dtype=np.float32), True
    return (vector / norm).astype(np.float32), False


def video_descriptor(clip_features: np.ndarray) -> Tuple[np.ndarray, bool]:
    """L2(mean over clips) of an (n_clips, dim) matrix; the flag says it was all zeros."""
    return l2_normalise(np.asarray(clip_features, np.float64).mean(axis=0))


class ClipAccumulator:
    """Running per-layer sums of one video's clip features (float64), in any clip order."""

    def __init__(self, layers: Sequence[str], keep_clips: bool = False) -> None:
        self.layers = tuple(layers)
        self.keep_clips = keep_clips
        self.count = 0
        self.crops = 1  # rows per clip: crops x dims clips are averaged over crops too
        self._sums: Dict[str, np.ndarray] = {}
        self._rows: List[Tuple[int, Dict[str, np.ndarray]]] = []

    def add(self, start: int, features: Dict[str, np.ndarray]) -> None:
        """One clip's features per layer: dims, or crops x dims (summed over the crops)."""
        for layer in self.layers:
            row = features[layer].astype(np.float64)
            if row.ndim == 2:
                self.crops = row.shape[0]
                row = row.sum(axis=0)
            if layer in self._sums:
                self._sums[layer] += row
            else:
                self._sums[layer] = row.copy()
        if self.keep_clips:
            self._rows.append((start, {k: features[k].astype(np.float32) for k in self.layers}))
        self.count += 1

    def descriptors(self) -> Tuple[Dict[str, np.ndarray], bool]:
        """Per layer L2(mean); the flag is True if any layer's mean was zero."""
        out: Dict[str, np.ndarray] = {}
        any_zero = False
        for layer, total in self._sums.items():
            out[layer], zero = l2_normalise(total / (self.count * self.crops))
            any_zero |= zero
        return out, any_zero

    def clip_rows(self) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
        """Per-clip starts and raw features (clips x dims, or clips x crops x dims), in
        clip order."""
        rows = sorted(self._rows, key=lambda item: item[0])
        starts = np.array([start for start, _ in rows], np.int64)
        return starts, {layer: np.stack([r[layer] for _, r in rows]) for layer in self.layers}
