"""Readers of the published Sports-1M weights formats (SPEC section 4).

``read_stored(path)`` tells the format from the file's content (never its name)
and returns each layer's weight and bias as the file stores them, named the
project's way, with a description of the file's layout (``StoredLayout``):
Caffe C3D binaries (both protobuf dialects), Keras 2 / TensorFlow and Keras 1 /
Theano HDF5 files (told apart by their structure), DavideA's ``c3d.pickle``,
mmaction2 pretrain files and checkpoints (mmengine's included), and the
project's own state dicts. Putting the arrays in Caffe order is ``convert``'s
job. Nothing here runs code from a file.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from c3d_extract.errors import WeightsError
from c3d_extract.hdf5_checks import check_dataset, check_hdf5
from c3d_extract.models.c3d import CONV_LAYERS
from c3d_extract.weights import caffe_proto, layouts
from c3d_extract.weights.kernel_orders import CAFFE, KD_REVERSED, KHKW_REVERSED

Arrays = Dict[str, np.ndarray]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOL_2_PLUS = b"\x80"

#: Notes recorded with converted weights whose source ran a different pipeline.
MMACTION2_NOTE = ("mmaction2 fed its network RGB frames minus mean (104, 117, 128) and padded "
                  "pool5 symmetrically; this tool always uses the Caffe preset (BGR, the C3D "
                  "mean, ceil-mode pool5)")
PICKLE_NOTE = ("DavideA/c3d-pytorch's own model padded pool5 symmetrically and subtracted no "
               "mean; this tool always uses the Caffe preset and ceil-mode pool5")


@dataclass(frozen=True)
class StoredLayout:
    """How a file stores the network, relative to Caffe.

    ``kernel_order``: the order its conv kernels hold (``kernel_orders``), None when the
    format does not tell (the user must declare it); ``kernel_order_assumed``: inferred
    from the file's history, not verified.
    """

    conv_channels_last: bool = False   # conv kernels (kD, kH, kW, in, out), else (out, in, ...)
    dense_in_out: bool = False         # dense kernels (in, out), else (out, in)
    fc6_inputs_thwc: bool = False      # fc6 reads pool5 flattened (T, H, W, C), else (C, T, H, W)
    kernel_order: Optional[str] = CAFFE
    kernel_order_assumed: bool = False


@dataclass(frozen=True)
class StoredWeights:
    """A file's tensors as stored (``conv1a.weight`` ... in the project's names), float32."""

    arrays: Arrays
    source_format: str
    layout: StoredLayout = StoredLayout()
    notes: Tuple[str, ...] = ()


# ---------------------------------------------------------------------------- detection

def looks_like_safetensors(head: bytes, size: int) -> bool:
    """Whether a file of ``size`` bytes starting with ``head`` is safetensors: an 8-byte
    little-endian header length that fits in the file, then a JSON object."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    header_length = int.from_bytes(head[:8], "little")
    return 2 <= header_length <= size - 8


def detect_format(path: str) -> str:
    """``safetensors``, ``hdf5``, ``torch`` or ``caffe``, from the file's first bytes."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
        size = os.path.getsize(path)
    except OSError as error:
        raise WeightsError(f"cannot read {path}: {error}") from None
    if looks_like_safetensors(head, size):
        return "safetensors"
    if head.startswith(HDF5_MAGIC):
        return "hdf5"
    if head.startswith(ZIP_MAGIC) or head.startswith(PICKLE_PROTOCOL_2_PLUS):
        return "torch"
    if caffe_proto.looks_like_net(head):
        return "caffe"
    if not head:
        raise WeightsError(f"{path} is empty")
    raise WeightsError(f"cannot tell the format of {path}: it is none of safetensors, Caffe "
                       "binary, Keras HDF5, PyTorch state dict or checkpoint")


def read_stored(path: str) -> StoredWeights:
    """Read any supported non-safetensors weights file, its arrays as stored."""
    kind = detect_format(path)
    if kind == "caffe":
        return read_caffe(path)
    if kind == "hdf5":
        return read_keras_h5(path)
    if kind == "torch":
        return torch_stored(read_torch_file(path), path)
    raise WeightsError(f"{path} is a safetensors file; read it with load_state_dict")


def _array(value: object) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float32).numpy()
    return np.asarray(value, dtype=np.float32)


def _conv_shapes() -> Dict[str, Tuple[int, int]]:
    return {name: (c_out, c_in) for name, c_in, c_out in CONV_LAYERS}


# -------------------------------------------------------------------------------- Caffe

def caffe_arrays(layers: Sequence[caffe_proto.CaffeLayer], source: str) -> Arrays:
    """Decoded Caffe layers as the project's named arrays (FC blobs reshaped to (N, K))."""
    state: Arrays = {}
    seen: Dict[str, str] = {}
    for layer in layers:
        ours = layouts.caffe_layer_name(layer.name)
        if ours is None or not layer.blobs:
            continue
        if ours in seen:
            raise WeightsError(f"{source}: layers {seen[ours]!r} and {layer.name!r} both "
                               f"map to {ours}")
        seen[ours] = layer.name
        if len(layer.blobs) != 2:
            raise WeightsError(f"{source}: layer {layer.name} has {len(layer.blobs)} blobs, "
                               "expected weights and bias")
        weight, bias = layer.blobs
        try:
            if ours.startswith("conv"):
                if weight.ndim != 5:
                    raise ValueError(f"a convolution weight blob must be 5-D, not {weight.shape}")
            else:
                weight = layouts.caffe_fc_weight(weight)
            bias = layouts.caffe_bias(bias)
        except ValueError as error:
            raise WeightsError(f"{source}: layer {layer.name}: {error}") from None
        state[f"{ours}.weight"] = _array(weight)
        state[f"{ours}.bias"] = _array(bias)
    if not state:
        raise WeightsError(f"{source} is a Caffe model without any C3D layer "
                           f"(found {', '.join(l.name for l in layers[:8])})")
    return state


def read_caffe(path: str) -> StoredWeights:
    return StoredWeights(caffe_arrays(caffe_proto.read_net_file(path), path), "caffe")


# -------------------------------------------------------------------------------- Keras

_KERAS2_NAME = re.compile(r"(?:^|/)(kernel|bias)(?::\d+)?$")


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _keras_layer_datasets(group, layer: str, source: str) -> Tuple[List[str], List[object]]:
    """Weight names and datasets of one Keras layer group (Keras 1 or 2 nesting); nothing
    is read yet."""
    import h5py

    names = [_text(n) for n in group.attrs.get("weight_names", [])]
    if len(names) > 16:
        raise WeightsError(f"{source}: layer {layer} names {len(names)} weights")
    if names:
        try:
            datasets = [group[n] for n in names]
        except KeyError as error:
            raise WeightsError(f"{source}: layer {layer} names a missing weight: {error}") from None
        if not all(isinstance(d, h5py.Dataset) for d in datasets):
            raise WeightsError(f"{source}: layer {layer} names a weight that is not a dataset")
        return names, datasets
    found: List[Tuple[str, object]] = []
    group.visititems(lambda name, item: found.append((name, item))
                     if isinstance(item, h5py.Dataset) else None)
    found.sort(key=lambda pair: pair[0])
    return [n for n, _ in found], [d for _, d in found]


#: The most values one C3D tensor has (fc6's kernel, 8192 x 4096).
MAX_TENSOR_ELEMENTS = 8192 * 4096


def _keras_array(dataset, name: str, path: str, file_size: int) -> np.ndarray:
    """One Keras weight, once its declared shape, dtype and storage are checked (nothing is
    read before): at most ``MAX_TENSOR_ELEMENTS`` floating-point values, written to the
    file (not only a fill value) and backed by its bytes."""
    shape = tuple(int(d) for d in (dataset.shape or ()))
    count = 1
    for dim in shape:
        count *= dim
    if count > MAX_TENSOR_ELEMENTS:
        raise WeightsError(f"{path}: weight {name} declares shape {shape}, larger than any "
                           "C3D tensor")
    if dataset.dtype.kind != "f":
        raise WeightsError(f"{path}: weight {name} has dtype {dataset.dtype}; Keras writes "
                           "weights as floating point")
    check_dataset(dataset, name, path, file_size, WeightsError, written=True)
    return np.asarray(dataset[()])


@dataclass(frozen=True)
class _KerasLayer:
    names: Tuple[str, str]      # weight names: kernel, bias
    kernel: object              # h5py datasets, not read yet
    bias: object


def _keras_layers(root, layer_names: Sequence[str], source: str) -> Dict[str, _KerasLayer]:
    found: Dict[str, _KerasLayer] = {}
    for layer in layer_names:
        if layer not in layouts.KERAS_LAYER_NAMES or layer not in root:
            continue
        names, values = _keras_layer_datasets(root[layer], layer, source)
        if not values:
            continue
        kernels = [(n, a) for n, a in zip(names, values) if len(a.shape or ()) >= 2]
        biases = [(n, a) for n, a in zip(names, values) if len(a.shape or ()) == 1]
        if len(kernels) != 1 or len(biases) != 1 or len(values) != 2:
            raise WeightsError(f"{source}: layer {layer} holds arrays of shapes "
                               f"{[a.shape for a in values]}, expected a kernel and a bias")
        found[layer] = _KerasLayer((kernels[0][0], biases[0][0]), kernels[0][1], biases[0][1])
    return found


def _keras_kernel_misfit(layers: Dict[str, _KerasLayer], channels_first: bool) -> str:
    """Why the convolution kernels are not all stored channels first (or last), naming the
    first that is not; "" when they all are. The shapes are ``layouts.keras_kernel_shape``'s,
    the one definition the conversion (``keras_kernel_is_channels_first``) reads too."""
    conv_shapes = _conv_shapes()
    for keras_name, ours in layouts.KERAS_LAYER_NAMES.items():
        if ours not in conv_shapes or keras_name not in layers:
            continue
        shape = tuple(layers[keras_name].kernel.shape)
        wanted = layouts.keras_kernel_shape(*conv_shapes[ours], channels_first=channels_first)
        if shape != wanted:
            axes = layouts.KERAS_KERNEL_AXES[channels_first]
            return f"layer {keras_name}: kernel of shape {shape} is not {axes} = {wanted}"
    return ""


def _keras_structure(layers: Dict[str, _KerasLayer],
                     attrs: Dict[str, str]) -> Tuple[Optional[str], str]:
    """``("keras2" | "keras1", "")`` from weight names and kernel shapes, or ``(None, why)``
    for a file that fits neither."""

    def keras2_pair(names: Tuple[str, str]) -> bool:
        kinds = [_KERAS2_NAME.search(name) for name in names]
        return all(kinds) and [kind.group(1) for kind in kinds if kind] == ["kernel", "bias"]

    version, backend = attrs.get("keras_version", ""), attrs.get("backend", "")
    if all(keras2_pair(layer.names) for layer in layers.values()):
        problem = _keras_kernel_misfit(layers, channels_first=False)
        if not problem and version.startswith("1"):
            problem = f"Keras 2 weight names, but keras_version {version}"
        return (None, problem) if problem else ("keras2", "")
    if all(layer.names == (f"{name}_W", f"{name}_b") for name, layer in layers.items()):
        problem = _keras_kernel_misfit(layers, channels_first=True)
        if not problem and (version.startswith("2") or backend.lower() not in ("", "theano")):
            problem = f"Keras 1 weight names, but keras_version {version!r}, backend {backend!r}"
        return (None, problem) if problem else ("keras1", "")
    name, layer = next(iter(layers.items()))
    return None, f"layer {name} has weights named {', '.join(layer.names)}"


def read_keras_h5(path: str) -> StoredWeights:
    """A Keras 2 (TensorFlow layout) or Keras 1 (Theano layout) HDF5 weights file, written
    by ``save_weights`` or ``model.save``, with or without its weightless layers."""
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise WeightsError(f"cannot read {path} as HDF5 (truncated or damaged?): {error}") from None
    with handle:
        try:
            check_hdf5(handle, path, WeightsError, sizes=False)
            root = handle["model_weights"] if "model_weights" in handle else handle
            attrs = {name: _text(root.attrs.get(name, handle.attrs.get(name, "")))
                     for name in ("backend", "keras_version")}
            attrs = {k: v for k, v in attrs.items() if v}
            layer_names = [_text(n) for n in root.attrs.get("layer_names", [])][:10_000] \
                or list(root.keys())
            layers = _keras_layers(root, layer_names, path)
            if not layers:
                raise WeightsError(f"{path} is an HDF5 file without Keras C3D layers (expected "
                                   f"conv1 ... fc8; found {', '.join(layer_names[:8])})")
            for keras_name, ours in layouts.KERAS_LAYER_NAMES.items():
                if keras_name not in layers and ours != "fc8":
                    raise WeightsError(f"{path}: no Keras layer {keras_name!r}")
            structure, problem = _keras_structure(layers, attrs)
            if structure is None:
                raise WeightsError(
                    f"{path} is neither a Keras 2 / TensorFlow file (weights named "
                    "conv1/kernel:0, conv kernels (kD, kH, kW, in, out)) nor a Keras 1 / Theano "
                    "file (weights named conv1_W, conv kernels (out, in, kD, kH, kW), no backend "
                    f"attribute): {problem}")
            file_size = int(handle.id.get_filesize())
            arrays: Arrays = {}
            for keras_name, layer in layers.items():
                ours = layouts.KERAS_LAYER_NAMES[keras_name]
                arrays[f"{ours}.weight"] = _array(
                    _keras_array(layer.kernel, f"{keras_name}/{layer.names[0]}", path, file_size))
                arrays[f"{ours}.bias"] = _array(
                    _keras_array(layer.bias, f"{keras_name}/{layer.names[1]}", path, file_size))
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise WeightsError(f"cannot read {path} (truncated or damaged?): {error}") from None
    if structure == "keras1":
        layout = StoredLayout(conv_channels_last=False, dense_in_out=True, fc6_inputs_thwc=False,
                              kernel_order=KHKW_REVERSED)
        return StoredWeights(arrays, "keras1-theano", layout)
    backend = attrs.get("backend", "tensorflow").lower()
    layout = StoredLayout(conv_channels_last=True, dense_in_out=True, fc6_inputs_thwc=True,
                          kernel_order=CAFFE if backend != "theano" else None)
    return StoredWeights(arrays, f"keras2-{backend}", layout)


# -------------------------------------------------------------------------------- PyTorch

def read_torch_file(path: str, *, mmap: bool = False) -> object:
    """What a PyTorch file holds, read without running code from it: the file is checked
    first (``pickle_scan``: zip members, nesting, sizes and integers of its pickle), then
    read by ``torch.load`` with ``weights_only=True``; a zip checkpoint holding other objects
    too (mmengine's) is read again keeping its tensors only (``unpickle``). Every tensor is
    then checked to lie inside its storage (``check_tensor_views``)."""
    from c3d_extract.weights.pickle_scan import check_torch_file, starts_with_zip

    check_torch_file(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        if starts_with_zip(path):
            from c3d_extract.weights.unpickle import load_tensors_only
            return load_tensors_only(path)
        first = str(error).strip().splitlines()[0] if str(error).strip() else "unsafe content"
        raise WeightsError(f"refusing to load {path}: it holds more than tensors ({first}); "
                           "only plain state dicts are read") from None
    except (RuntimeError, EOFError, OSError, ValueError, AssertionError, TypeError,
            IndexError, KeyError, MemoryError, RecursionError) as error:
        first = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
        raise WeightsError(f"cannot read {path} as a PyTorch file (truncated or damaged?): "
                           f"{type(error).__name__}: {first}") from None
    check_tensor_views(loaded, path)
    return loaded


def _tensors_in(value: object, depth: int = 0):
    if depth > 100:
        return
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors_in(item, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors_in(item, depth + 1)


def check_tensor_views(loaded: object, source: str) -> None:
    """Refuse tensors that are not plain strided views inside their storage: a stride-0 or
    overlapping view makes a few bytes look like gigabytes once copied."""
    from c3d_extract.weights.unpickle import _Refusal, check_view

    for tensor in _tensors_in(loaded):
        if tensor.layout != torch.strided or tensor.is_quantized or tensor.device.type != "cpu":
            raise WeightsError(f"refusing to load {source}: it holds a {tensor.layout} "
                               "tensor (only dense tensors are read)")
        element = tensor.element_size()
        available = tensor.untyped_storage().nbytes() // element if element else 0
        try:
            check_view(tuple(tensor.shape), tuple(tensor.stride()), tensor.storage_offset(),
                       available)
        except _Refusal as refusal:
            raise WeightsError(f"refusing to load {source}: it holds {refusal}") from None


_MMACTION2_CONV_KEY = re.compile(r"^(?:backbone\.)?conv\w+\.conv\.(?:weight|bias)$")


def _some(keys: Sequence[str]) -> str:
    return f"{', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"


def torch_stored(loaded: object, source: str) -> StoredWeights:
    """A loaded PyTorch object: DavideA's ``c3d.pickle``, an mmaction2 pretrain file or
    checkpoint (bare or under ``state_dict``), or the project's own state dict."""
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not loaded:
        raise WeightsError(f"{source} is not a state dict of tensors")
    bad = [k for k, v in loaded.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"{source} is not a state dict of tensors ({bad[0]!r} is a "
                           f"{type(loaded[bad[0]]).__name__})")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in loaded.items()}
    keys = list(state)
    wrong_type = [k for k, v in state.items() if not v.is_floating_point()
                  and not k.endswith("num_batches_tracked")]
    if wrong_type:
        raise WeightsError(f"{source}: tensor {wrong_type[0]} has dtype "
                           f"{str(state[wrong_type[0]].dtype)[6:]}; weights are floating point "
                           "(quantised weights are not read)")

    if any(_MMACTION2_CONV_KEY.match(k) for k in keys):
        prefixed = any(k.startswith("backbone.") for k in keys)
        backbone = [k for k in keys if k.startswith("backbone.") or not prefixed]
        unknown = [k for k in backbone if layouts.mmaction2_key(k) is None]
        if unknown:
            raise WeightsError(f"{source} looks like an mmaction2 C3D but has backbone keys "
                               f"outside the C3D: {_some(unknown)}")
        arrays = {str(layouts.mmaction2_key(k)): _array(state[k]) for k in backbone}
        notes = [MMACTION2_NOTE]
        dropped = [k for k in keys if k not in backbone]
        if dropped:
            notes.append(f"ignored {len(dropped)} keys outside the C3D backbone ({_some(dropped)})")
        return StoredWeights(arrays, "mmaction2", StoredLayout(), tuple(notes))
    if "conv1.weight" in state:
        unknown = [k for k in keys if layouts.pickle_key(k) is None]
        if unknown:
            raise WeightsError(f"{source} looks like DavideA's c3d.pickle but has unexpected keys "
                               f"{', '.join(unknown[:6])}")
        arrays = {str(layouts.pickle_key(k)): _array(v) for k, v in state.items()}
        layout = StoredLayout(kernel_order=KD_REVERSED, kernel_order_assumed=True)
        return StoredWeights(arrays, "c3d-pytorch-pickle", layout, (PICKLE_NOTE,))
    return StoredWeights({k: _array(v) for k, v in state.items()}, "pytorch")
