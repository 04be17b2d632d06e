"""How a state dict differs from the tensors a model expects: keys first, then shapes."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Tuple

Shape = Tuple[int, ...]


def key_mismatch(expected: Mapping[str, Shape], state_dict: Mapping[str, object]) -> str:
    """``"missing a, b; unexpected c"`` (a few names of each), or ``""`` when the keys match."""
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    parts = []
    if missing:
        parts.append(f"missing {_some(missing)}")
    if unexpected:
        parts.append(f"unexpected {_some(unexpected)}")
    return "; ".join(parts)


def shape_mismatch(expected: Mapping[str, Shape],
                   state_dict: Mapping[str, object]) -> Optional[Tuple[str, Shape, Shape]]:
    """The first ``(key, actual shape, expected shape)`` that differ; None when all fit."""
    for key, shape in expected.items():
        actual = tuple(state_dict[key].shape)  # type: ignore[attr-defined]
        if actual != tuple(shape):
            return key, actual, tuple(shape)
    return None


def _some(names: Sequence[str], shown: int = 6) -> str:
    return ", ".join(names[:shown]) + (f" ... ({len(names)} in all)" if len(names) > shown else "")
