"""Writing a safetensors file atomically: a temporary file beside it, fsynced, renamed."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Dict, Mapping

import torch


def write_safetensors_file(tensors: Mapping[str, torch.Tensor], out: os.PathLike,
                           metadata: Dict[str, str]) -> Path:
    """Write ``tensors`` with ``metadata`` to ``out``; the old file (if any) stays whole
    until the new one is complete."""
    from safetensors.torch import save_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}-", suffix=".tmp")
    os.close(handle)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, temp, metadata=metadata)
        # mkstemp makes the file private (0600); give it the mode any new file gets.
        os.chmod(temp, 0o666 & ~_umask())
        with open(temp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temp, out)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return out


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
