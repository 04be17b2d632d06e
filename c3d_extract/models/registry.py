"""Architecture registry: name -> builder, default preset, input size, extractable layers.

Every registered model takes N x 3 x L x H x W float clips (already normalised by its
preset), returns class logits from ``forward``, offers
``extract(clips, layers) -> {layer: tensor}`` for the layers listed here, and names its
classifier's parameter prefix in ``head_name``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Tuple

from torch import nn

from c3d_extract.errors import UsageError
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


_ARCHITECTURES: Dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    if arch.name in _ARCHITECTURES:
        raise ValueError(f"architecture {arch.name!r} is registered twice")
    _ARCHITECTURES[arch.name] = arch
    return arch


def architecture_names() -> Tuple[str, ...]:
    _load_builtin()
    return tuple(sorted(_ARCHITECTURES))


def all_layer_names() -> Tuple[str, ...]:
    """Every layer name some architecture can give, each once, in registry order."""
    _load_builtin()
    names: Dict[str, None] = {}
    for name in sorted(_ARCHITECTURES):
        names.update(dict.fromkeys(_ARCHITECTURES[name].layers))
    return tuple(names)


def get_architecture(name: str) -> Architecture:
    _load_builtin()
    try:
        return _ARCHITECTURES[name]
    except KeyError:
        raise UsageError(f"unknown architecture {name!r}; "
                         f"choose from {', '.join(sorted(_ARCHITECTURES))}") from None


def create_model(name: str, *, num_classes: int, **options) -> nn.Module:
    """A freshly initialised model of architecture ``name`` with ``num_classes`` outputs."""
    return get_architecture(name).build(num_classes=num_classes, **options)


def _load_builtin() -> None:
    # The architecture modules register themselves on import.
    from c3d_extract.models import c3d, r2plus1d  # noqa: F401
