"""Data shipped with the package.

``kinetics400_classes.txt``: the 400 Kinetics-400 class names, one per line in class order,
byte for byte torchvision's ``_KINETICS400_CATEGORIES`` (torchvision 0.29.1), the order of the
outputs of torchvision's Kinetics-400 video models.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Tuple

KINETICS400_FILE = "kinetics400_classes.txt"
KINETICS400_COUNT = 400


@lru_cache(maxsize=None)
def kinetics400_classes() -> Tuple[str, ...]:
    """The Kinetics-400 class names in torchvision's order (400 names)."""
    text = resources.files(__name__).joinpath(KINETICS400_FILE).read_text(encoding="utf-8")
    names = tuple(text.split("\n")[:-1])
    if len(names) != KINETICS400_COUNT:  # a damaged installation, not a user mistake
        raise RuntimeError(f"{KINETICS400_FILE} holds {len(names)} names, not 400")
    return names
