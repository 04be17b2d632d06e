"""``model.safetensors``: a trained model of any registered architecture, in one file.

The tensors are exactly the model's ``state_dict()`` (torchvision's names for
R(2+1)D, BatchNorm buffers included). The safetensors metadata (all strings) says
what the tensors are and how to feed them:

``format`` ``c3d-extract.model``, ``format_version`` ``1``, ``arch`` (a registry
name), ``num_classes``, ``class_names`` (JSON list), ``clip_len``, ``crop_size``,
``preprocessing`` (``Preprocessing.to_json()``), plus any extra keys (e.g. the
training arguments). Files are written to a temporary name and renamed, so a reader
never sees half a file; reading checks every field and every tensor's shape before
a model is built.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from c3d_extract.errors import C3DError, ModelFileError, WeightsError
from c3d_extract.models.state_dicts import key_mismatch, shape_mismatch
from c3d_extract.video.preprocess import MAX_FRAME_SIDE, Preprocessing
from c3d_extract.weights.safetensors_file import write_safetensors_file

MODEL_FORMAT = "c3d-extract.model"
MODEL_FORMAT_VERSION = "1"
#: Bounds of the numbers a model file's metadata may hold.
MAX_CLIP_LEN = 1024
MAX_CLASSES = 100_000
#: Metadata keys written by ``save_model_file``; extra metadata may not reuse them.
RESERVED_KEYS: Tuple[str, ...] = ("format", "format_version", "arch", "num_classes",
                                  "class_names", "clip_len", "crop_size", "preprocessing")


@dataclass(frozen=True)
class ModelFile:
    """A checked model file: what the network is, its weights, and its input."""

    arch: str
    class_names: Tuple[str, ...]
    clip_len: int
    crop_size: int
    preset: Preprocessing
    state_dict: Dict[str, torch.Tensor] = field(repr=False)
    metadata: Dict[str, str] = field(repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def build(self) -> nn.Module:
        """The network holding these weights (strict: every tensor must fit), in eval mode."""
        return build_strict(self.arch, self.num_classes, self.state_dict, "the model file")


def build_strict(arch: str, num_classes: int, state_dict: Mapping[str, torch.Tensor],
                 source: str) -> nn.Module:
    """A model of ``arch`` with ``num_classes`` outputs holding ``state_dict``, in eval mode."""
    from c3d_extract.models.registry import create_model

    check_shapes(arch, num_classes, state_dict, source)
    check_values(state_dict, source)
    model = create_model(arch, num_classes=num_classes)
    model.load_state_dict(dict(state_dict), strict=True)
    return model.eval()


def check_values(state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse NaN or infinite values, and integer tensors other than BatchNorm's
    ``num_batches_tracked`` counters (the only ones a real model holds)."""
    for key, tensor in state_dict.items():
        if not tensor.is_floating_point():
            if key.endswith("num_batches_tracked"):
                continue
            raise ModelFileError(f"{source}: tensor {key} has dtype "
                                 f"{str(tensor.dtype).replace('torch.', '')}; weights are "
                                 "floating point")
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            raise ModelFileError(f"{source}: tensor {key} holds {int((~finite).sum())} NaN or "
                                 "infinite values")


def check_shapes(arch: str, num_classes: int, state_dict: Mapping[str, torch.Tensor],
                 source: str) -> None:
    """Raise ``ModelFileError`` naming the tensors of ``state_dict`` that do not fit ``arch``."""
    from c3d_extract.models.registry import create_model

    with torch.device("meta"):  # shapes only: nothing is allocated or initialised for real
        expected = {k: tuple(v.shape)
                    for k, v in create_model(arch, num_classes=num_classes).state_dict().items()}
    keys = key_mismatch(expected, state_dict)
    if keys:
        raise ModelFileError(f"{source} does not hold an {arch} state dict with {num_classes} "
                             f"classes: {keys}")
    wrong = shape_mismatch(expected, state_dict)
    if wrong:
        key, actual, shape = wrong
        raise ModelFileError(f"{source}: tensor {key} has shape {actual}, {arch} with "
                             f"{num_classes} classes needs {shape}")


def model_metadata(*, arch: str, class_names: Sequence[str], clip_len: int, crop_size: int,
                   preset: Preprocessing,
                   extra_metadata: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The safetensors metadata describing a model file."""
    metadata = {
        "format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, "arch": arch,
        "num_classes": str(len(class_names)),
        "class_names": json.dumps([str(n) for n in class_names], ensure_ascii=False),
        "clip_len": str(int(clip_len)), "crop_size": str(int(crop_size)),
        "preprocessing": preset.to_json(),
    }
    for key, value in (extra_metadata or {}).items():
        if key in RESERVED_KEYS:
            raise ValueError(f"extra metadata may not replace {key!r}")
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"metadata keys and values must be strings: {key!r}: {value!r}")
        metadata[key] = value
    return metadata


def save_model_file(path: os.PathLike, model: nn.Module, *, arch: str,
                    class_names: Sequence[str], clip_len: int, crop_size: int,
                    preset: Preprocessing,
                    extra_metadata: Optional[Mapping[str, str]] = None) -> Path:
    """Write ``model``'s state dict and its description to ``path`` atomically."""
    from c3d_extract.models.registry import get_architecture

    head = get_architecture(arch).head_name  # an unknown name fails before anything is written
    if clip_len < 1 or crop_size < 1:
        raise ValueError("clip length and crop size must be positive")
    state_dict = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    outputs = state_dict.get(f"{head}.weight")
    if outputs is not None and outputs.shape[0] != len(class_names):
        raise ValueError(f"{len(class_names)} class names for a model with "
                         f"{outputs.shape[0]} classes")
    check_shapes(arch, len(class_names), state_dict, "the model")
    metadata = model_metadata(arch=arch, class_names=class_names, clip_len=clip_len,
                              crop_size=crop_size, preset=preset, extra_metadata=extra_metadata)
    return write_safetensors_file(state_dict, path, metadata)


def read_metadata(path: str) -> Optional[Dict[str, str]]:
    """The safetensors metadata of ``path`` if it is a model file, else None (any other
    file, including other safetensors files). Reads only the header."""
    from safetensors import SafetensorError, safe_open

    from c3d_extract.weights.loading import looks_like_safetensors

    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
        if not looks_like_safetensors(head, os.path.getsize(path)):
            return None
        with safe_open(path, framework="pt") as reader:
            metadata = reader.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return None
    return metadata if metadata.get("format") == MODEL_FORMAT else None


def is_model_file(path: str) -> bool:
    return os.path.isfile(path) and read_metadata(path) is not None


def read_model_file(path: str) -> ModelFile:
    """Read and check a model file; ``ModelFileError`` says what is wrong with it."""
    from safetensors import SafetensorError, safe_open

    if not os.path.isfile(path):
        raise WeightsError(f"no model file at {path}")
    metadata = read_metadata(path)
    if metadata is None:
        raise ModelFileError(f"{path} is not a c3d-extract model file (a safetensors file "
                             f"whose metadata has format = {MODEL_FORMAT})")
    fields = _parse_metadata(metadata, path)
    try:
        with safe_open(path, framework="pt") as reader:
            state_dict = {k: reader.get_tensor(k) for k in reader.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelFileError(f"cannot read the tensors of {path}: {error}") from None
    arch, class_names = fields["arch"], fields["class_names"]
    check_shapes(arch, len(class_names), state_dict, path)
    return ModelFile(arch=arch, class_names=class_names, clip_len=fields["clip_len"],
                     crop_size=fields["crop_size"], preset=fields["preset"],
                     state_dict=state_dict, metadata=dict(metadata))


def _parse_metadata(metadata: Mapping[str, str], path: str) -> Dict[str, object]:
    from c3d_extract.models.registry import architecture_names, get_architecture

    missing = [k for k in RESERVED_KEYS if k not in metadata]
    if missing:
        raise ModelFileError(f"{path}: the model file's metadata lacks {', '.join(missing)}")
    if metadata["format_version"] != MODEL_FORMAT_VERSION:
        raise ModelFileError(f"{path}: model file format version {metadata['format_version']!r} "
                             f"is not supported (this version reads {MODEL_FORMAT_VERSION})")
    arch = metadata["arch"]
    if arch not in architecture_names():
        raise ModelFileError(f"{path}: unknown architecture {arch!r} "
                             f"(known: {', '.join(architecture_names())})")
    try:
        names = json.loads(metadata["class_names"])
        num_classes = int(metadata["num_classes"])
        clip_len, crop_size = int(metadata["clip_len"]), int(metadata["crop_size"])
        # Files written before presets recorded their crop rule and resize arithmetic get
        # their architecture's (torchvision's for r2plus1d_18).
        preset = Preprocessing.from_dict(json.loads(metadata["preprocessing"]),
                                         family=get_architecture(arch).preset)
    except (ValueError, TypeError, KeyError, AttributeError, C3DError) as error:
        raise ModelFileError(f"{path}: unreadable model file metadata: {error}") from None
    except RecursionError:
        raise ModelFileError(f"{path}: unreadable model file metadata: JSON nested too "
                             "deep") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ModelFileError(f"{path}: class_names must be a JSON list of strings")
    if len(names) != num_classes or not 1 <= num_classes <= MAX_CLASSES:
        raise ModelFileError(f"{path}: {len(names)} class names for num_classes = "
                             f"{metadata['num_classes']}")
    if not 1 <= clip_len <= MAX_CLIP_LEN or not 1 <= crop_size <= MAX_FRAME_SIDE:
        raise ModelFileError(f"{path}: clip_len ({clip_len}) must be from 1 to {MAX_CLIP_LEN} "
                             f"and crop_size ({crop_size}) from 1 to {MAX_FRAME_SIDE}")
    return {"arch": arch, "class_names": tuple(names), "clip_len": clip_len,
            "crop_size": crop_size, "preset": preset}
