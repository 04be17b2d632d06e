"""Weights and input for the R(2+1)D-18 comparison with torchvision, made from the tensor list.

Nothing here uses a model: every tensor of ``tests/data/r2plus1d_18_tensors.json`` (torchvision
0.29.1's names and shapes) gets seeded values, so torchvision's module (under a separate venv,
``scripts/make_r2plus1d_golden.py``) and ours load the same numbers. Needs only numpy and torch.
"""

from __future__ import annotations

import json
from typing import Dict, Tuple

import numpy as np
import torch

from tests.support.paths import DATA

TENSOR_LIST = DATA / "r2plus1d_18_tensors.json"
GOLDEN = DATA / "r2plus1d_18_torchvision_golden.npz"
SEED = 20180618
INPUT_SHAPE = (2, 3, 4, 32, 32)


def tensor_list() -> Dict[str, Tuple[int, ...]]:
    """Name -> shape of every tensor of torchvision's ``r2plus1d_18(num_classes=400)``."""
    data = json.loads(TENSOR_LIST.read_text())
    return {name: tuple(shape) for name, shape in data["tensors"].items()}


def synthetic_state_dict(seed: int = SEED) -> Dict[str, torch.Tensor]:
    """Seeded values for every tensor: He-scaled weights, BatchNorm statistics away from
    identity (positive running variances), small biases."""
    rng = np.random.default_rng(seed)
    state: Dict[str, torch.Tensor] = {}
    for name, shape in tensor_list().items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(0, dtype=torch.int64)
            continue
        if name.endswith("running_var"):
            values = rng.uniform(0.5, 2.0, shape)
        elif name.endswith("running_mean"):
            values = rng.normal(0.0, 0.2, shape)
        elif len(shape) == 1 and name.endswith(".weight"):  # BatchNorm scale
            values = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(".bias"):
            values = rng.normal(0.0, 0.1, shape)
        else:  # convolution or linear weight
            fan_in = int(np.prod(shape[1:]))
            values = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        state[name] = torch.from_numpy(np.asarray(values, dtype=np.float32))
    return state


def golden_input(seed: int = SEED) -> torch.Tensor:
    rng = np.random.default_rng(seed + 1)
    return torch.from_numpy(rng.normal(0.0, 1.0, INPUT_SHAPE).astype(np.float32))


def bilinear_reference(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """(n, H, W, C) uint8 -> (n, height, width, C) uint8 by bilinear interpolation in float64
    with half-pixel centres (``align_corners=False``, no antialiasing), rounded half to even.

    The textbook formula, written here without torch or OpenCV: the golden file stores
    torchvision's resized frames as their (mostly zero) difference from this, which keeps it
    small.
    """
    def axis(size_in: int, size_out: int):
        source = np.maximum((np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5, 0.0)
        low = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
        high = np.minimum(low + 1, size_in - 1)
        return low, high, source - low

    top, bottom, dy = axis(frames.shape[1], height)
    left, right, dx = axis(frames.shape[2], width)
    x = frames.astype(np.float64)
    rows = x[:, top] * (1 - dy)[None, :, None, None] + x[:, bottom] * dy[None, :, None, None]
    out = rows[:, :, left] * (1 - dx)[None, None, :, None] + rows[:, :, right] * \
        dx[None, None, :, None]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
