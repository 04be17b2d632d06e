"""Architecture registry: name -> builder, default preset, input size, extractable layers.

Every registered model takes N x 3 x L x H x W float clips (already normalised by its
preset), returns class logits from ``forward``, offers
``extract(clips, layers) -> {layer: tensor}`` for the layers listed here, and names its
classifier's parameter prefix in ``head_name``.

The registry owns the table: it imports the model modules, each of which defines its
``ARCHITECTURE`` without knowing of the registry, and lists them here. ``register`` is
the one way to add an entry from outside (the tests' tiny network); it writes into this
table and needs nothing from the model modules.
"""

from __future__ import annotations

from typing import Dict, Tuple

from torch import nn

from c3d_extract.errors import UsageError
from c3d_extract.models import c3d, r2plus1d
from c3d_extract.models.architecture import Architecture

_ARCHITECTURES: Dict[str, Architecture] = {
    arch.name: arch for arch in (c3d.ARCHITECTURE, r2plus1d.ARCHITECTURE)
}


def register(arch: Architecture) -> Architecture:
    """Add ``arch`` to the table, for networks defined outside the package (a test's tiny
    network); a second entry of the same name is refused so that one cannot replace
    another unnoticed."""
    if arch.name in _ARCHITECTURES:
        raise ValueError(f"architecture {arch.name!r} is registered twice")
    _ARCHITECTURES[arch.name] = arch
    return arch


def architecture_names() -> Tuple[str, ...]:
    return tuple(sorted(_ARCHITECTURES))


def all_layer_names() -> Tuple[str, ...]:
    """Every layer name some architecture can give, each once, in registry order."""
    names: Dict[str, None] = {}
    for name in sorted(_ARCHITECTURES):
        names.update(dict.fromkeys(_ARCHITECTURES[name].layers))
    return tuple(names)


def get_architecture(name: str) -> Architecture:
    try:
        return _ARCHITECTURES[name]
    except KeyError:
        raise UsageError(f"unknown architecture {name!r}; "
                         f"choose from {', '.join(sorted(_ARCHITECTURES))}") from None


def create_model(name: str, *, num_classes: int, **options) -> nn.Module:
    """A freshly initialised model of architecture ``name`` with ``num_classes`` outputs."""
    return get_architecture(name).build(num_classes=num_classes, **options)
