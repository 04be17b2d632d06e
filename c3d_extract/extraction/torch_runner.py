"""Run batches of clips through a network on a device: gather, normalise, cast, forward.

Frames arrive as uint8 (one copy per batch); the clip windows are gathered,
converted to float and normalised by the preset on the device, which moves 4x
fewer bytes than float32 clips and each frame once instead of twice.

A runner takes batches with ``submit`` and hands back ``(batch, outputs)`` pairs,
in submission order, from ``collect``; this one computes at once, the OpenVINO
runner (``openvino_runner``) in the background.
"""

from __future__ import annotations

from collections import deque
from typing import Deque, Dict, List, Sequence, Tuple

import torch
from torch import nn

from c3d_extract.device.memory import device_memory_guard
from c3d_extract.device.precision import autocast, warn_if_slow_cudnn
from c3d_extract.extraction.batching import Batch
from c3d_extract.extraction.runners import Outputs
from c3d_extract.video.preprocess import CropWindow, Preprocessing


def gather_clips(batch: Batch, preprocessing: Preprocessing, device: torch.device,
                 fixed_batch: int = 0, channels_last: bool = False,
                 windows: Tuple[CropWindow, ...] = ()) -> torch.Tensor:
    """A batch's clips gathered from its uint8 frames on ``device`` and normalised by the
    preset: N x 3 x L x H x W float32; with ``fixed_batch``, padded to that many clips (by
    repeating the first) so that the shape never changes.

    Without ``windows`` the frames are already cropped. With several crop ``windows``
    the frames are the resized, uncropped ones: each clip is cut into its crops here, so
    frames are decoded and sent once, and the network's batch is clips x crops rows
    (the crops of one clip together, in ``windows`` order).
    """
    non_blocking = device.type == "cuda"
    frames = torch.from_numpy(batch.frames)
    if non_blocking:
        frames = frames.pin_memory()
    frames = frames.to(device, non_blocking=non_blocking)
    index = torch.from_numpy(batch.index)
    if fixed_batch and len(index) < fixed_batch:
        # A constant shape keeps cudnn.benchmark's (or a compiled model's) choice;
        # extra rows are discarded.
        index = torch.cat([index, index[:1].expand(fixed_batch - len(index), -1)])
    clips = frames[index.to(device, non_blocking=non_blocking)]  # N x L x H x W x C
    if windows:
        clips = cut_crops(clips, windows, preprocessing.crop)
    clips = preprocessing.normalise(clips, windows)
    if channels_last:
        clips = clips.contiguous(memory_format=torch.channels_last_3d)
    return clips


def cut_crops(clips: torch.Tensor, windows: Tuple[CropWindow, ...], crop: int) -> torch.Tensor:
    """N x L x H x W x C resized clips -> (N x len(windows)) x L x crop x crop x C."""
    mirrored = clips.flip(3) if any(window.flip for window in windows) else clips
    crops = [(mirrored if window.flip else clips)[:, :, window.top:window.top + crop,
                                                  window.left:window.left + crop]
             for window in windows]
    return torch.stack(crops, 1).reshape(-1, *crops[0].shape[1:])


def per_clip_outputs(outputs: Dict[str, torch.Tensor], n_clips: int,
                     n_crops: int) -> Outputs:
    """The network's rows of a batch's ``n_clips`` clips (padding dropped) as float32 numpy:
    clips x dims, or clips x crops x dims when there are several crops."""
    rows = n_clips * max(1, n_crops)
    result = {}
    for layer, values in outputs.items():
        kept = values[:rows].float().cpu().numpy()
        result[layer] = kept.reshape(n_clips, n_crops, -1) if n_crops > 1 else kept
    return result


class ClipRunner:
    """Holds the network on its device and turns a ``Batch`` into per-clip features."""

    def __init__(self, model: nn.Module, preprocessing: Preprocessing, clip_len: int,
                 layers: Sequence[str], device: torch.device, precision: str,
                 fixed_batch: int = 0, windows: Tuple[CropWindow, ...] = ()) -> None:
        self.layers = tuple(layers)
        #: Crop windows cut on the device (several crops), or () for frames already cropped.
        self.windows = tuple(windows) if len(windows) > 1 else ()
        self.device = device
        self.precision = precision
        # Channels-last keeps bf16/fp16 conv3d on cuDNN's fast kernels and helps oneDNN.
        self.channels_last = precision != "fp32" or device.type == "cuda"
        self.fixed_batch = fixed_batch if device.type == "cuda" else 0
        self.batch_size = fixed_batch  # what an out-of-memory message suggests halving
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            warn_if_slow_cudnn(precision)
        memory_format = torch.channels_last_3d if self.channels_last else torch.contiguous_format
        self.model = model.to(device=device, memory_format=memory_format).eval()
        preprocessing.cropped_mean(clip_len)  # a mean volume must cover the clips
        self.preprocessing = preprocessing
        self._done: Deque[Tuple[Batch, Outputs]] = deque()

    def clips_tensor(self, batch: Batch) -> torch.Tensor:
        """Gather and normalise a batch's clips on the device: N x 3 x L x H x W float32."""
        return gather_clips(batch, self.preprocessing, self.device, self.fixed_batch,
                            self.channels_last, self.windows)

    @torch.inference_mode()
    def __call__(self, batch: Batch) -> Outputs:
        """Per layer, clips x dims, or clips x crops x dims with several crops."""
        n = len(batch.clips)
        with device_memory_guard(max(n, self.batch_size), self.device, self.precision):
            clips = self.clips_tensor(batch)
            with autocast(self.precision, self.device):
                outputs = self.model.extract(clips, self.layers)
            return per_clip_outputs(outputs, n, len(self.windows))

    # The ``Runner`` protocol (``extraction.runners``).
    def submit(self, batch: Batch) -> None:
        self._done.append((batch, self(batch)))

    def collect(self, wait: bool = False) -> List[Tuple[Batch, Outputs]]:
        done = list(self._done)
        self._done.clear()
        return done

    @property
    def pending(self) -> int:
        """Batches submitted and not yet collected."""
        return len(self._done)

    def discard(self) -> None:
        """Forget batches submitted and not collected (a run that stopped early)."""
        self._done.clear()
