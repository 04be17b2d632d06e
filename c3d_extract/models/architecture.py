"""What the registry records of one architecture, in a module of its own.

The model modules (``c3d``, ``r2plus1d``) each define their ``ARCHITECTURE`` with this
dataclass, and the registry imports them to build its table; keeping the dataclass out of
the registry is what lets the model modules not import the registry. ``parameter_count``
is here too, as the one count every description of a network shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Tuple

from torch import nn

from c3d_extract.video.preprocess import Preprocessing


@dataclass(frozen=True)
class Architecture:
    """What is known about an architecture before any weights are loaded."""

    name: str
    build: Callable[..., nn.Module]  # build(num_classes=..., **options) -> model in eval mode
    preset: Preprocessing
    clip_len: int
    crop_size: int
    layers: Tuple[str, ...]  # extractable, in the order the network computes them
    default_layer: str  # the descriptor written when no layer is asked for
    fixed_input: bool  # True when clip length and crop size cannot change (C3D's fc6)
    head_name: str  # prefix of the classifier's parameters (replaced when fine-tuning)


def parameter_count(model: nn.Module) -> int:
    """Learnable parameters of ``model`` (BatchNorm statistics are buffers, not counted).

    Works on a model built on the meta device, so a file can be described without
    allocating its network."""
    return sum(p.numel() for p in model.parameters())
