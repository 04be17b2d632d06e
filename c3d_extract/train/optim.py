"""Optimizer and learning-rate schedule, stepped once per optimizer step.

The default schedule is a cosine decay from the base rate to zero over the whole run,
with an optional linear warm-up (none by default, so a short run is not held back).
``step`` divides the rate by 10 at half and at three quarters of the run.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

from c3d_extract.train.options import TrainOptions


def build_optimizer(parameters: Iterable[torch.nn.Parameter],
                    options: TrainOptions) -> torch.optim.Optimizer:
    trainable = [p for p in parameters if p.requires_grad]
    if options.optimizer == "adam":
        return torch.optim.Adam(trainable, lr=options.learning_rate,
                                weight_decay=options.decay)
    return torch.optim.SGD(trainable, lr=options.learning_rate, momentum=options.momentum,
                           weight_decay=options.decay)


def lr_factor(schedule: str, total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """``step -> factor`` of the base learning rate for optimizer step ``step`` (0-based)."""
    warmup_steps = min(warmup_steps, total_steps)
    decay_steps = max(total_steps - warmup_steps, 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min((step - warmup_steps) / decay_steps, 1.0)
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if schedule == "step":
            return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
        return 1.0

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, options: TrainOptions,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    total = options.epochs * steps_per_epoch
    warmup = round(options.warmup_epochs * steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(optimizer,
                                             lr_factor(options.schedule, total, warmup))
