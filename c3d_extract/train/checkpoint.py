"""Crash-safe checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint holds the model, optimizer, scheduler and gradient scaler states, the random
number generator states of every process (torch CPU and CUDA, numpy, Python), the position
in the epoch and the metrics so far. It is written to a temporary file beside the old one,
fsynced and renamed over it, so a ``kill -9`` at any moment leaves either the previous or
the new checkpoint, complete. It is read back with ``weights_only=True`` (no code runs).
"""

from __future__ import annotations

import pickle
import random
from typing import Any, Dict, Optional

import numpy as np
import torch

from c3d_extract.atomic_files import replaced_atomically
from c3d_extract.errors import StoreError

FORMAT = "c3d-extract.train-checkpoint"
VERSION = 1


def capture_rng() -> Dict[str, Any]:
    """This process's random number generator states, as tensors and plain values."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                  "position": int(position), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32),
                         numpy_state["position"], numpy_state["has_gauss"],
                         numpy_state["cached_gaussian"]))
    random.setstate(_as_python_state(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_python_state(value: Any) -> Any:
    # random.setstate wants tuples; a round trip may hand back lists.
    return tuple(_as_python_state(v) for v in value) if isinstance(value, (list, tuple)) \
        else value


def save_checkpoint(path: str, state: Dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename)."""
    payload = {"format": FORMAT, "version": VERSION, **state}
    with replaced_atomically(path, growth_bound=_size_bound(payload)) as temporary:
        torch.save(payload, temporary)


def load_checkpoint(path: str) -> Optional[Dict[str, Any]]:
    """The checkpoint at ``path``, or None if there is none."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        return None
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as error:
        reason = " ".join(str(error).split())[:200]
        raise StoreError(f"the checkpoint {path} cannot be read ({reason}); "
                         "rerun with --overwrite to start again") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise StoreError(f"{path} is not a c3d-train checkpoint")
    if payload.get("version") != VERSION:
        raise StoreError(f"{path} is a checkpoint of version {payload.get('version')}, "
                         f"this c3d-train reads version {VERSION}")
    return payload


def _size_bound(value: Any) -> int:
    """Bytes the tensors in ``value`` take, plus room for the rest: the space to reserve."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size() + 512
    if isinstance(value, dict):
        return sum(_size_bound(v) for v in value.values()) + 64 * len(value)
    if isinstance(value, (list, tuple)):
        return sum(_size_bound(v) for v in value) + 16 * len(value)
    return 64
