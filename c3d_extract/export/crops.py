"""Crop order: what a store's ``[clips, crops, dims]`` rows mean, and the order we export.

A store extracted with ``--crops 5`` or ``--crops 10`` holds several crops per clip. Its
order is read from the ``crop_order`` attribute (of ``clips/<layer>``, else of the file):
a comma-separated string or a list of names. Without that attribute the order is assumed
to be centre, top-left, top-right, bottom-left, bottom-right, then (10 crops) the same of
the mirrored frame.

Every export writes crops in the DeepMIL / VadCLIP file convention: index (and file suffix
``__k``) 0 the centre, 1-4 the corners (top-left, top-right, bottom-left, bottom-right),
5-9 the same of the mirrored frame.
"""

from __future__ import annotations

import json
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from c3d_extract.errors import ExportError

POSITIONS = ("center", "top_left", "top_right", "bottom_left", "bottom_right")
#: The exported order (DeepMIL / VadCLIP ``__0`` .. ``__9``).
EXPORT_ORDER = POSITIONS + tuple(f"mirrored_{p}" for p in POSITIONS)
#: The order assumed for a store without a ``crop_order`` attribute.
ASSUMED_STORE_ORDER = EXPORT_ORDER

_ALIASES = {"centre": "center", "c": "center", "middle": "center",
            "tl": "top_left", "topleft": "top_left", "upper_left": "top_left",
            "tr": "top_right", "topright": "top_right", "upper_right": "top_right",
            "bl": "bottom_left", "bottomleft": "bottom_left", "lower_left": "bottom_left",
            "br": "bottom_right", "bottomright": "bottom_right", "lower_right": "bottom_right"}
_MIRROR_WORDS = ("mirrored", "mirror", "flipped", "hflipped", "hflip", "flip")


def canonical_name(name: str) -> str:
    """``"Top-Left (flipped)"`` -> ``"mirrored_top_left"``; unknown names raise ``ExportError``."""
    words = [w for w in "".join(c if c.isalnum() else " " for c in name.lower()).split()]
    mirrored = any(w in _MIRROR_WORDS for w in words)
    rest = "_".join(w for w in words if w not in _MIRROR_WORDS)
    position = _ALIASES.get(rest, _ALIASES.get(rest.replace("_", ""), rest))
    if position not in POSITIONS:
        raise ExportError(f"unknown crop {name!r} in the store's crop_order (known: "
                          f"{', '.join(EXPORT_ORDER)})")
    return ("mirrored_" if mirrored else "") + position


def parse_crop_order(value: Any) -> Tuple[str, ...]:
    """A ``crop_order`` attribute (comma-separated text, JSON list or array) as canonical names."""
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, str):
        text = value.strip()
        items: Sequence[Any] = json.loads(text) if text.startswith("[") else text.split(",")
    else:
        items = list(np.asarray(value).ravel())
    names = tuple(canonical_name(item.decode("utf-8") if isinstance(item, bytes) else str(item))
                  for item in items)
    if len(set(names)) != len(names):
        raise ExportError(f"the store's crop_order names a crop twice: {', '.join(names)}")
    return names


def store_crop_order(n_crops: int, attribute: Optional[Any]) -> Tuple[str, ...]:
    """The names of a store's crops, in its order."""
    if attribute is None:
        if n_crops not in (5, 10):
            raise ExportError(f"the store holds {n_crops} crops per clip and no crop_order "
                              "attribute saying which they are")
        return ASSUMED_STORE_ORDER[:n_crops]
    names = parse_crop_order(attribute)
    if len(names) != n_crops:
        raise ExportError(f"the store's crop_order names {len(names)} crops, its features "
                          f"hold {n_crops}")
    return names


def export_permutation(stored: Sequence[str]) -> List[int]:
    """Indices into the stored crops that give the exported order (``EXPORT_ORDER`` filtered
    to the crops present): ``exported = stored_array[:, permutation]``."""
    return [list(stored).index(name) for name in EXPORT_ORDER if name in stored]


def centre_index(stored: Sequence[str]) -> int:
    """Where the centre crop (the paper's single crop) is among the stored crops."""
    if "center" not in stored:
        raise ExportError("the store's crops include no centre crop: "
                          f"{', '.join(stored)}")
    return list(stored).index("center")
