"""Readers of the published Sports-1M weights formats (see SPEC section 4).

``read_any(path)`` detects the format from the file itself and returns the
state dict in the project's naming plus the format's name. Only the project's
own PyTorch state dicts are handled here so far; the published formats plug
in as pure conversion functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from c3d_extract.errors import WeightsError


def read_any(path: str) -> Tuple[Dict[str, torch.Tensor], str]:
    from c3d_extract.weights.loading import read_torch_file

    loaded = read_torch_file(path)
    if isinstance(loaded, dict) and "state_dict" in loaded and isinstance(loaded["state_dict"], dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WeightsError(f"{path} is not a state dict of tensors")
    return dict(loaded), "pytorch"


def registry_path(name: str) -> Optional[Path]:
    """Path of a registry entry already downloaded to the cache, or None."""
    return None
