"""Writing a safetensors file atomically: a temporary file beside it, fsynced, renamed
(``atomic_files.replaced_atomically``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Mapping

import torch

from c3d_extract.atomic_files import make_folders, replaced_atomically


def write_safetensors_file(tensors: Mapping[str, torch.Tensor], out: os.PathLike,
                           metadata: Dict[str, str]) -> Path:
    """Write ``tensors`` with ``metadata`` to ``out``; the old file (if any) stays whole
    until the new one is complete. ``StoreError`` if it cannot be written."""
    from safetensors.torch import save_file

    out = Path(out)
    make_folders(str(out.parent))
    contiguous = {k: v.contiguous() for k, v in tensors.items()}
    with replaced_atomically(str(out), _size_bound(contiguous, metadata)) as temporary:
        save_file(contiguous, temporary, metadata=metadata)
        # safetensors makes the file private (0600); give it the mode any new file gets.
        os.chmod(temporary, 0o666 & ~_umask())
    return out


def _size_bound(tensors: Mapping[str, torch.Tensor], metadata: Dict[str, str]) -> int:
    """More bytes than the file takes (the room reserved before writing): the tensors' data,
    and a header of at most 200 bytes per tensor besides the names and the metadata."""
    data = sum(t.numel() * t.element_size() for t in tensors.values())
    header = len(json.dumps(metadata)) + sum(len(name) + 200 for name in tensors)
    return data + header + 4096


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
