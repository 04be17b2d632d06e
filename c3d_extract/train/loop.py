"""One epoch of training and the evaluations, in the shape of torchvision's video reference
trainer: ``train_one_epoch``, ``evaluate_clips`` (one clip per video, each epoch) and
``evaluate_videos`` (the extraction protocol's windows, softmax averaged per video).

Clips arrive as uint8 (N x L x H x W x C, the preset's channel order) and are normalised
on the device by the preset, exactly as extraction and prediction do.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from c3d_extract.device.precision import autocast
from c3d_extract.errors import TrainingError
from c3d_extract.train.metrics import Tally, topk_hits
from c3d_extract.video.preprocess import Preprocessing


@dataclass
class Trainee:
    """The model and what updates it, on one device."""

    model: nn.Module  # possibly wrapped in DistributedDataParallel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: "torch.amp.GradScaler"
    preset: Preprocessing
    device: torch.device
    precision: str
    accumulate: int = 1
    frozen_prefix: Optional[str] = None  # with a frozen backbone: the head's prefix

    def network_input(self, clips: torch.Tensor) -> torch.Tensor:
        clips = clips.to(self.device, non_blocking=self.device.type == "cuda")
        x = self.preset.normalise(clips)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return x

    def train_mode(self) -> None:
        """Train mode; a frozen backbone's BatchNorm layers keep their running statistics."""
        self.model.train()
        if self.frozen_prefix is not None:
            for name, module in _unwrapped(self.model).named_modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and \
                        not name.startswith(self.frozen_prefix):
                    module.eval()


def _full(logits: torch.Tensor) -> torch.Tensor:
    """Logits in at least single precision (autocast may hand back bf16/fp16)."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def _unwrapped(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def batch_tally(logits: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor) -> Tally:
    scores = logits.detach().float().cpu().numpy()
    truth = labels.cpu().numpy()
    n = len(truth)
    return Tally(loss_sum=float(loss.detach()) * n, top1=float(topk_hits(scores, truth, 1).sum()),
                 top5=float(topk_hits(scores, truth, 5).sum()), count=float(n))


def train_one_epoch(trainee: Trainee, loader: Iterable, *, batches_done: int,
                    batches_total: int, tally: Tally,
                    on_step: Callable[[int, Tally], None],
                    on_batch: Optional[Callable[[int, Tally, int, float], None]] = None
                    ) -> Tally:
    """Train on ``loader`` (the epoch's batches after the first ``batches_done``).

    Gradients of ``accumulate`` consecutive batches are summed before each optimizer step
    (the epoch's last group may be shorter); ``on_step(batches_done, tally)`` is called
    after every optimizer step, where a checkpoint may be taken. ``on_batch(batches_done,
    tally, clips, seconds)`` follows every batch, with the seconds the network took for it
    (forward, backward and the optimizer step; not the loading).
    """
    trainee.train_mode()
    k = trainee.accumulate
    for clips, labels, _ in loader:
        started = time.perf_counter()
        group_start = (batches_done // k) * k
        group_size = min(k, batches_total - group_start)
        steps_now = batches_done + 1 == group_start + group_size
        x = trainee.network_input(clips)
        y = labels.to(trainee.device)
        no_sync = getattr(trainee.model, "no_sync", None)
        sync = contextlib.nullcontext() if steps_now or no_sync is None else no_sync()
        with sync:
            with autocast(trainee.precision, trainee.device):
                logits = trainee.model(x)
            loss = F.cross_entropy(_full(logits), y)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"the loss became {float(loss)} in batch {batches_done + 1}; lower --lr, "
                    "or train in fp32")
            trainee.scaler.scale(loss / group_size).backward()
        tally = tally.add(batch_tally(logits, y, loss))
        batches_done += 1
        if steps_now:
            trainee.scaler.step(trainee.optimizer)
            trainee.scaler.update()
            trainee.optimizer.zero_grad(set_to_none=True)
            trainee.scheduler.step()
        # batch_tally copied the logits to the host: the network's work is done here.
        if on_batch is not None:
            on_batch(batches_done, tally, len(labels), time.perf_counter() - started)
        if steps_now:
            on_step(batches_done, tally)
    return tally


@torch.inference_mode()
def evaluate_clips(trainee: Trainee, loader: Iterable) -> Tally:
    """Loss and accuracy of one clip per item of ``loader``."""
    trainee.model.eval()
    tally = Tally()
    for clips, labels, _ in loader:
        with autocast(trainee.precision, trainee.device):
            logits = trainee.model(trainee.network_input(clips))
        y = labels.to(trainee.device)
        loss = F.cross_entropy(_full(logits), y)
        tally = tally.add(batch_tally(logits, y, loss))
    return tally


@dataclass(frozen=True)
class VideoScores:
    """One video's evaluation: mean softmax over its windows and its windows' own hits."""

    index: int
    label: int
    probabilities: np.ndarray  # num_classes, float64
    windows: int
    window_top1: int
    window_top5: int


@torch.inference_mode()
def evaluate_videos(trainee: Trainee, videos: Iterable[Tuple[torch.Tensor, int, int]],
                    batch_size: int) -> List[VideoScores]:
    """Video-level scores; ``videos`` yields (windows W x L x H x W x C uint8, label, index)."""
    trainee.model.eval()
    results = []
    for windows, label, index in videos:
        probabilities = []
        for start in range(0, len(windows), batch_size):
            with autocast(trainee.precision, trainee.device):
                logits = trainee.model(trainee.network_input(windows[start:start + batch_size]))
            probabilities.append(torch.softmax(_full(logits), dim=1).double().cpu())
        clip_probabilities = torch.cat(probabilities).numpy()
        truth = np.full(len(clip_probabilities), int(label))
        results.append(VideoScores(
            index=int(index), label=int(label),
            probabilities=clip_probabilities.mean(axis=0), windows=len(clip_probabilities),
            window_top1=int(topk_hits(clip_probabilities, truth, 1).sum()),
            window_top5=int(topk_hits(clip_probabilities, truth, 5).sum())))
    return results
