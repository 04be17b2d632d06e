"""Run batches of clips through a network on a device: gather, normalise, cast, forward.

Frames arrive as uint8 (one copy per batch); the clip windows are gathered,
converted to float and normalised by the preset on the device, which moves 4x
fewer bytes than float32 clips and each frame once instead of twice.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from typing import Dict, Sequence

import numpy as np
import torch
from torch import nn

from c3d_extract.batching import Batch
from c3d_extract.errors import UsageError
from c3d_extract.launch import auto_device, local_rank
from c3d_extract.preprocess import Preprocessing

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: cuDNN releases that skip cuDNN for bf16/fp16 NCDHW conv3d (SPEC section 8).
_SLOW_CUDNN = range(90800, 91500)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available (under torchrun the GPU ``LOCAL_RANK``), else cpu;
    ``cuda[:N]`` is checked to exist."""
    if name == "auto":
        cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
        name = auto_device(cuda_devices, local_rank(os.environ))
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {name} asked for, but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"device {name} does not exist "
                             f"({torch.cuda.device_count()} CUDA devices)")
    elif device.type != "cpu":
        raise UsageError(f"unsupported device {name!r}; use auto, cpu or cuda[:N]")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on CUDA, fp32 on CPU."""
    if precision not in PRECISIONS:
        raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


@dataclass(frozen=True)
class DeviceSettings:
    device: torch.device
    precision: str  # resolved: fp32, bf16 or fp16
    channels_last: bool


class ClipRunner:
    """Holds the network on its device and turns a ``Batch`` into per-clip features."""

    def __init__(self, model: nn.Module, preprocessing: Preprocessing, clip_len: int,
                 layers: Sequence[str], device: torch.device, precision: str,
                 fixed_batch: int = 0) -> None:
        self.layers = tuple(layers)
        self.device = device
        self.precision = precision
        # Channels-last keeps bf16/fp16 conv3d on cuDNN's fast kernels and helps oneDNN.
        self.channels_last = precision != "fp32" or device.type == "cuda"
        self.fixed_batch = fixed_batch if device.type == "cuda" else 0
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            _warn_if_slow_cudnn(precision)
        memory_format = torch.channels_last_3d if self.channels_last else torch.contiguous_format
        self.model = model.to(device=device, memory_format=memory_format).eval()
        preprocessing.cropped_mean(clip_len)  # a mean volume must cover the clips
        self.preprocessing = preprocessing

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.precision])

    def clips_tensor(self, batch: Batch) -> torch.Tensor:
        """Gather and normalise a batch's clips on the device: N x 3 x L x H x W float32."""
        non_blocking = self.device.type == "cuda"
        frames = torch.from_numpy(batch.frames)
        if non_blocking:
            frames = frames.pin_memory()
        frames = frames.to(self.device, non_blocking=non_blocking)
        index = torch.from_numpy(batch.index)
        if self.fixed_batch and len(index) < self.fixed_batch:
            # A constant shape keeps cudnn.benchmark's choice; extra rows are discarded.
            index = torch.cat([index, index[:1].expand(self.fixed_batch - len(index), -1)])
        clips = frames[index.to(self.device, non_blocking=non_blocking)]  # N x L x H x W x C
        clips = self.preprocessing.normalise(clips)
        if self.channels_last:
            clips = clips.contiguous(memory_format=torch.channels_last_3d)
        return clips

    @torch.inference_mode()
    def __call__(self, batch: Batch) -> Dict[str, np.ndarray]:
        clips = self.clips_tensor(batch)
        with self._autocast():
            outputs = self.model.extract(clips, self.layers)
        n = len(batch.clips)
        return {k: v[:n].float().cpu().numpy() for k, v in outputs.items()}


def _warn_if_slow_cudnn(precision: str) -> None:
    version = torch.backends.cudnn.version()
    if precision != "fp32" and version is not None and version in _SLOW_CUDNN:
        warnings.warn(f"cuDNN {version} is known to skip its fast kernels for {precision} "
                      "conv3d in NCDHW layout; channels_last_3d is used to avoid that, but "
                      "a cuDNN outside 9.8-9.14 is faster", RuntimeWarning, stacklevel=3)
