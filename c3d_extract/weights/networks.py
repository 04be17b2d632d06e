"""Resolve a ``--weights`` value to a network of any registered architecture.

Recognised, in order: a ``model.safetensors`` written by ``save_model_file`` (its
architecture, classes, clip length and preset come from its metadata); a torchvision
R(2+1)D-18 state dict (``.pth``, read with ``weights_only=True``, loaded strictly; with 400
outputs it carries the Kinetics-400 class names, and torchvision's preset);
anything else is a C3D weights source for ``hub.resolve_weights`` (a file in any
published format, a registry name, ``random``, or the default file).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from c3d_extract.errors import ModelFileError, WeightsError
from c3d_extract.models.architecture import parameter_count
from c3d_extract.models.registry import get_architecture
from c3d_extract.video.preprocess import Preprocessing
from c3d_extract.weights.convert import LoadedWeights
from c3d_extract.weights.formats import read_torch_file
from c3d_extract.weights.hub import resolve_weights
from c3d_extract.weights.kernel_orders import CAFFE
from c3d_extract.weights.loading import file_sha256, load_network
from c3d_extract.weights.model_file import build_strict, is_model_file, read_model_file
from c3d_extract.weights.pickle_scan import starts_with_zip

TORCHVISION_R2PLUS1D = "r2plus1d_18"
#: Tensors only torchvision's R(2+1)D-18 state dict has (torchvision's names).
_R2PLUS1D_MARKERS = ("stem.0.weight", "stem.3.weight", "layer4.1.conv2.0.3.weight", "fc.weight")


@dataclass(frozen=True)
class LoadedModel:
    """A network in eval mode with everything needed to feed it and to name its outputs."""

    model: nn.Module = field(repr=False)
    arch: str
    preset: Preprocessing
    clip_len: int
    crop_size: int
    class_names: Tuple[str, ...]
    name: str            # as given: path, registry name or "random"
    sha256: str          # of the source file ("random-seed-0" for random weights)
    source_format: str   # "c3d-extract.model", "torchvision", or a C3D weights format
    metadata: Dict[str, str] = field(default_factory=dict, repr=False)
    kernel_order: str = CAFFE  # the kernel order the source file held, as read
    kernel_order_assumed: bool = False  # that order was inferred, not declared or known
    notes: Tuple[str, ...] = ()  # what the conversion assumed or how the source differed

    @property
    def num_classes(self) -> int:
        return int(getattr(self.model, "num_classes", 0))

    @property
    def layers(self) -> Tuple[str, ...]:
        """The layers this network can give (a C3D without fc8 has no fc8 or prob)."""
        return tuple(self.model.available_layers)  # type: ignore[arg-type]

    @property
    def probability_layer(self) -> Optional[str]:
        """The layer giving class probabilities; None for a network without a classifier."""
        return "prob" if "prob" in self.layers else None

    @property
    def default_layer(self) -> str:
        return get_architecture(self.arch).default_layer

    @property
    def is_random(self) -> bool:
        return self.source_format == "random"


def from_c3d_weights(weights: LoadedWeights) -> LoadedModel:
    """A checked C3D state dict (``loading.LoadedWeights``) as a ``LoadedModel``."""
    arch = get_architecture("c3d")
    return LoadedModel(model=load_network(weights), arch=arch.name,
                       preset=weights.preprocessing, clip_len=arch.clip_len,
                       crop_size=arch.crop_size, class_names=weights.class_names,
                       name=weights.name, sha256=weights.sha256,
                       source_format=weights.source_format, kernel_order=weights.kernel_order,
                       kernel_order_assumed=weights.kernel_order_assumed,
                       notes=weights.conversion_notes)


def load_model(spec: Union[str, LoadedWeights, LoadedModel, None], *,
               kernel_order: Optional[str] = None) -> LoadedModel:
    """``--weights`` of any architecture: a model file, a torchvision R(2+1)D-18 file, or
    any C3D weights source (``random``, a registry name, a file, None for the default);
    ``kernel_order`` declares the kernel order of a C3D file (see ``kernel_orders``)."""
    if isinstance(spec, LoadedModel):
        return spec
    if isinstance(spec, LoadedWeights):
        return from_c3d_weights(spec)
    if spec is not None and os.path.isfile(spec):
        if is_model_file(spec):
            return _from_model_file(spec)
        state_dict = torchvision_r2plus1d_state_dict(spec)
        if state_dict is not None:
            return _from_torchvision(spec, state_dict)
    return from_c3d_weights(resolve_weights(spec, kernel_order=kernel_order))


def _from_model_file(path: str) -> LoadedModel:
    read = read_model_file(path)
    preset = read.preset
    if preset.crop != read.crop_size:  # trained on crops of another size: centre-crop that
        try:
            preset = replace(preset, crop=read.crop_size)
        except ValueError as error:
            raise ModelFileError(f"{path}: crop size {read.crop_size} does not fit the "
                                 f"preprocessing: {error}") from None
    return LoadedModel(model=read.build(), arch=read.arch, preset=preset,
                       clip_len=read.clip_len, crop_size=read.crop_size,
                       class_names=read.class_names, name=path, sha256=file_sha256(path),
                       source_format=read.metadata["format"], metadata=read.metadata)


def _from_torchvision(path: str, state_dict: Dict[str, torch.Tensor]) -> LoadedModel:
    arch = get_architecture(TORCHVISION_R2PLUS1D)
    num_classes = int(state_dict["fc.weight"].shape[0])
    model = build_strict(arch.name, num_classes, state_dict, path)
    return LoadedModel(model=model, arch=arch.name, preset=arch.preset, clip_len=arch.clip_len,
                       crop_size=arch.crop_size, class_names=torchvision_class_names(num_classes),
                       name=path,
                       sha256=file_sha256(path), source_format="torchvision")


def torchvision_class_names(num_classes: int) -> Tuple[str, ...]:
    """The class names of a torchvision-format file: Kinetics-400's (torchvision's order) for
    400 outputs, none otherwise."""
    from c3d_extract.data import KINETICS400_COUNT, kinetics400_classes

    return kinetics400_classes() if num_classes == KINETICS400_COUNT else ()


def _looks_like_torch_file(path: str) -> bool:
    """A zip archive (torch.save since PyTorch 1.6), or a ``.pth``/``.pt`` pickle (older
    torch.save, as torchvision's 2019 files): other pickles, e.g. ``c3d.pickle``, are C3D
    files that would otherwise be read twice."""
    if starts_with_zip(path):
        return True
    if not path.lower().endswith((".pth", ".pt")):
        return False
    with open(path, "rb") as handle:
        return handle.read(1) == b"\x80"


def unwrap_state_dict(loaded: Any) -> Any:
    """The state dict inside a training checkpoint: under ``model`` or ``state_dict`` (as the
    reference trainers save it), with DistributedDataParallel's ``module.`` prefix removed.
    Anything else is returned as it is."""
    for key in ("model", "state_dict"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
    if isinstance(loaded, Mapping) and loaded and all(
            isinstance(k, str) and k.startswith("module.") for k in loaded):
        return {k[len("module."):]: v for k, v in loaded.items()}
    return loaded


def torchvision_r2plus1d_state_dict(path: str) -> Optional[Dict[str, torch.Tensor]]:
    """The state dict of ``path`` if it holds a torchvision R(2+1)D-18 state dict (as
    ``torch.save(model.state_dict(), path)`` writes it, or inside a checkpoint as
    ``unwrap_state_dict`` finds it), else None. Read with
    ``weights_only=True``; a zip-format file is memory-mapped, so ruling it out is cheap."""
    if not _looks_like_torch_file(path):
        return None
    try:
        loaded = read_torch_file(path, mmap=starts_with_zip(path))
    except (WeightsError, pickle.UnpicklingError, RuntimeError, OSError, ValueError, EOFError):
        return None  # not a plain state dict: left to the C3D readers and their messages
    loaded = unwrap_state_dict(loaded)
    if not isinstance(loaded, dict) or not all(k in loaded for k in _R2PLUS1D_MARKERS):
        return None
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()):
        return None
    return dict(loaded)


@dataclass(frozen=True)
class NetworkFile:
    """The tensors of a model file or a torchvision file as stored, and what they are."""

    path: str
    arch: str
    source_format: str  # "c3d-extract.model" or "torchvision"
    sha256: str
    state_dict: Dict[str, torch.Tensor] = field(repr=False)
    class_names: Tuple[str, ...]
    clip_len: int
    crop_size: int
    preset: Preprocessing
    metadata: Dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        head = get_architecture(self.arch).head_name
        weight = self.state_dict.get(f"{head}.weight")
        return len(self.class_names) if weight is None else int(weight.shape[0])


def read_network_file(path: str) -> Optional[NetworkFile]:
    """``path`` read as a model file or a torchvision R(2+1)D-18 file (tensors checked against
    the architecture), else None: then it is a C3D weights file for ``loading``."""
    from c3d_extract.weights.model_file import check_shapes

    if not os.path.isfile(path):
        return None
    if is_model_file(path):
        read = read_model_file(path)
        return NetworkFile(path=path, arch=read.arch, source_format=read.metadata["format"],
                           sha256=file_sha256(path), state_dict=read.state_dict,
                           class_names=read.class_names, clip_len=read.clip_len,
                           crop_size=read.crop_size, preset=read.preset,
                           metadata=dict(read.metadata))
    found = torchvision_r2plus1d_state_dict(path)
    if found is None:
        return None
    arch = get_architecture(TORCHVISION_R2PLUS1D)
    num_classes = int(found["fc.weight"].shape[0])
    check_shapes(arch.name, num_classes, found, path)
    return NetworkFile(path=path, arch=arch.name, source_format="torchvision",
                       sha256=file_sha256(path), state_dict=found,
                       class_names=torchvision_class_names(num_classes),
                       clip_len=arch.clip_len, crop_size=arch.crop_size, preset=arch.preset)


def convert_network_file(source: NetworkFile, out: str,
                         class_names: Optional[Tuple[str, ...]] = None) -> NetworkFile:
    """Write ``source`` as a model file (``model_file``'s format: safetensors whose metadata
    names the architecture, classes, clip length, crop size and preset) at ``out``, with
    ``source_format`` and ``source_sha256``; ``class_names`` replace the file's own."""
    from c3d_extract.errors import LabelsError, UsageError
    from c3d_extract.weights.model_file import RESERVED_KEYS, model_metadata
    from c3d_extract.weights.safetensors_file import write_safetensors_file

    if os.path.abspath(out) == os.path.abspath(source.path):
        raise UsageError("the output would overwrite the source file")
    names = source.class_names if class_names is None else tuple(class_names)
    if len(names) != source.num_classes:
        if class_names is not None:
            raise LabelsError(f"{len(names)} class names for a network with "
                              f"{source.num_classes} classes")
        names = tuple(f"class {i}" for i in range(source.num_classes))
    extra = {k: v for k, v in source.metadata.items() if k not in RESERVED_KEYS}
    extra.update({"source_format": extra.get("source_format", source.source_format),
                  "source_sha256": extra.get("source_sha256", source.sha256)})
    metadata = model_metadata(arch=source.arch, class_names=names, clip_len=source.clip_len,
                              crop_size=source.crop_size, preset=source.preset,
                              extra_metadata=extra)
    tensors = {k: v.detach().contiguous() for k, v in source.state_dict.items()}
    write_safetensors_file(tensors, out, metadata)
    return replace(source, path=out, class_names=names, metadata=metadata,
                   source_format=metadata["format"], sha256=file_sha256(out))


@dataclass(frozen=True)
class ModelInfo:
    """What ``c3d-weights info`` shows about a model file or a torchvision file."""

    path: str
    source_format: str
    arch: str
    sha256: str
    tensors: Tuple[Tuple[str, Tuple[int, ...]], ...]  # name, shape (buffers included)
    parameter_count: int  # learnable parameters (BatchNorm statistics excluded)
    num_classes: int
    class_names: Tuple[str, ...]
    clip_len: int
    crop_size: int
    preset: Preprocessing
    layers: Tuple[str, ...]
    default_layer: str
    extra_metadata: Dict[str, str]


def describe_model(path: str) -> Optional[ModelInfo]:
    """Describe ``path`` if it is a model file or a torchvision R(2+1)D-18 file, else None
    (then it is a C3D weights file for ``loading.describe``). Nothing is written."""
    from c3d_extract.models.registry import create_model
    from c3d_extract.weights.model_file import RESERVED_KEYS

    read = read_network_file(path)
    if read is None:
        return None
    extra = {k: v for k, v in read.metadata.items() if k not in RESERVED_KEYS}
    arch = get_architecture(read.arch)
    with torch.device("meta"):
        model = create_model(read.arch, num_classes=read.num_classes)
    return ModelInfo(
        path=path, source_format=read.source_format, arch=read.arch, sha256=read.sha256,
        tensors=tuple((k, tuple(v.shape)) for k, v in read.state_dict.items()),
        parameter_count=parameter_count(model),
        num_classes=read.num_classes, class_names=read.class_names, clip_len=read.clip_len,
        crop_size=read.crop_size, preset=read.preset, layers=tuple(model.available_layers),
        default_layer=arch.default_layer, extra_metadata=extra)
