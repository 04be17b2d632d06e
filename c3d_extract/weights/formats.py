"""Readers of the published Sports-1M weights formats (SPEC section 4).

``read_weights(path)`` tells the format from the file's first bytes (never its
name) and converts it to the project's state dict: Caffe C3D binaries (both
protobuf dialects), Keras HDF5 files (TensorFlow and Theano layouts, Keras 1
and 2 naming), DavideA's ``c3d.pickle``, mmaction2 checkpoints, and the
project's own ``torch.save``d state dicts. Each reader is a pure conversion
built from the transforms in ``layouts``; nothing here runs code from a file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from c3d_extract.errors import WeightsError
from c3d_extract.models.c3d import CONV_LAYERS
from c3d_extract.weights import caffe_proto, layouts

StateDict = Dict[str, torch.Tensor]

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
class ConvertedWeights:
    """A state dict in the project's naming, the format it came from, and what to know."""

    state_dict: StateDict
    source_format: str
    notes: Tuple[str, ...] = ()


@dataclass(frozen=True)
class KerasLayout:
    """How a Keras file stores C3D.

    ``flipped``: kernels reversed along kD, kH, kW (written for Theano, which convolves).
    ``fc6_channels_last``: fc6's inputs follow a (T, H, W, C) flatten of pool5 instead of
    PyTorch's and Caffe's (C, T, H, W).
    """

    flipped: bool
    fc6_channels_last: bool = True


#: Values of ``--keras-layout``. Both published files flatten pool5 channels-last
#: (SPEC 4); the ``-channels-first`` variants are for files that do not.
KERAS_LAYOUTS: Dict[str, KerasLayout] = {
    "tensorflow": KerasLayout(flipped=False, fc6_channels_last=True),
    "theano": KerasLayout(flipped=True, fc6_channels_last=True),
    "tensorflow-channels-first": KerasLayout(flipped=False, fc6_channels_last=False),
    "theano-channels-first": KerasLayout(flipped=True, fc6_channels_last=False),
}


def keras_layout_name(layout: KerasLayout) -> str:
    return next(name for name, known in KERAS_LAYOUTS.items() if known == layout)


# ---------------------------------------------------------------------------- detection

def detect_format(path: str) -> str:
    """``safetensors``, ``hdf5``, ``torch`` or ``caffe``, from the file's first bytes."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError as error:
        raise WeightsError(f"cannot read {path}: {error}") from None
    from c3d_extract.weights.loading import looks_like_safetensors

    if looks_like_safetensors(head, os.path.getsize(path)):
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


def read_weights(path: str, *, keras_layout: Optional[KerasLayout] = None) -> ConvertedWeights:
    """Read any supported non-safetensors weights file, converted to the project's naming.

    ``keras_layout`` overrides the detected layout of Keras files (ignored otherwise).
    """
    kind = detect_format(path)
    if kind == "caffe":
        return read_caffe(path)
    if kind == "hdf5":
        return read_keras_h5(path, layout=keras_layout)
    if kind == "torch":
        return read_torch_weights(path)
    raise WeightsError(f"{path} is a safetensors file; read it with load_state_dict")


def read_any(path: str) -> Tuple[StateDict, str]:
    """``(state_dict, format name)`` of a non-safetensors weights file."""
    converted = read_weights(path)
    return converted.state_dict, converted.source_format


def registry_path(name: str) -> Optional[Path]:
    """Path of a registry entry already downloaded to the cache (checksum verified), or None."""
    from c3d_extract.weights import registry

    return registry.registry_path(name)


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float32, copy=True))


def _conv_shapes() -> Dict[str, Tuple[int, int]]:
    return {name: (c_out, c_in) for name, c_in, c_out in CONV_LAYERS}


# -------------------------------------------------------------------------------- Caffe

def caffe_state_dict(layers: Sequence[caffe_proto.CaffeLayer], source: str) -> StateDict:
    """Pure conversion of decoded Caffe layers to the project's state dict."""
    state: StateDict = {}
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
        state[f"{ours}.weight"] = _tensor(weight)
        state[f"{ours}.bias"] = _tensor(bias)
    if not state:
        raise WeightsError(f"{source} is a Caffe model without any C3D layer "
                           f"(found {', '.join(l.name for l in layers[:8])})")
    return state


def read_caffe(path: str) -> ConvertedWeights:
    layers = caffe_proto.read_net_file(path)
    return ConvertedWeights(caffe_state_dict(layers, path), "caffe")


# -------------------------------------------------------------------------------- Keras

_TENSORFLOW_NAME = re.compile(r":\d+$")
_KERAS1_THEANO_NAME = re.compile(r"^\w+_[Wb]$")
_UNNAMED = re.compile(r"^param_\d+$")


def keras_backend_from_evidence(backend_attr: Optional[str],
                                weight_names: Sequence[str]) -> Optional[str]:
    """``theano``, ``tensorflow`` or None (undecidable) for a Keras weights file.

    Keras 2 records the ``backend``. Keras 1 did not, but its weight names tell:
    TensorFlow variables end in ``:0``, Theano's are ``<layer>_W`` / ``<layer>_b``
    (or ``<layer>/kernel`` in Keras 2); ``param_N`` names carry no information.
    Only Theano flips kernels; every other backend cross-correlates like Caffe.
    """
    if backend_attr:
        return "theano" if backend_attr.lower() == "theano" else "tensorflow"
    names = [n for n in weight_names if not _UNNAMED.match(n)]
    if not names:
        return None
    if all(_TENSORFLOW_NAME.search(n) for n in names):
        return "tensorflow"
    if all(not _TENSORFLOW_NAME.search(n) and (_KERAS1_THEANO_NAME.match(n) or "/" in n)
           for n in names):
        return "theano"
    return None


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _keras_layer_arrays(group, layer: str, source: str) -> Tuple[List[str], List[np.ndarray]]:
    """Weight names and arrays of one Keras layer group (Keras 1 or 2 nesting)."""
    import h5py

    names = [_text(n) for n in group.attrs.get("weight_names", [])]
    if names:
        try:
            return names, [np.asarray(group[n][()]) for n in names]
        except KeyError as error:
            raise WeightsError(f"{source}: layer {layer} names a missing weight: {error}") from None
    found: List[Tuple[str, np.ndarray]] = []
    group.visititems(lambda name, item: found.append((name, np.asarray(item[()])))
                     if isinstance(item, h5py.Dataset) else None)
    found.sort(key=lambda pair: pair[0])
    return [n for n, _ in found], [a for _, a in found]


def keras_state_dict(arrays: Dict[str, List[np.ndarray]], layout: KerasLayout,
                     source: str) -> StateDict:
    """Pure conversion of per-layer Keras arrays (Keras layer name -> [kernel, bias]) to the
    project's state dict."""
    state: StateDict = {}
    conv_shapes = _conv_shapes()
    for keras_name, ours in layouts.KERAS_LAYER_NAMES.items():
        if keras_name not in arrays:
            if ours == "fc8":
                continue
            raise WeightsError(f"{source}: no Keras layer {keras_name!r}")
        kernels = [a for a in arrays[keras_name] if a.ndim >= 2]
        biases = [a for a in arrays[keras_name] if a.ndim == 1]
        if len(kernels) != 1 or len(biases) != 1:
            raise WeightsError(f"{source}: layer {keras_name} holds arrays of shapes "
                               f"{[a.shape for a in arrays[keras_name]]}, expected a kernel "
                               "and a bias")
        kernel, bias = kernels[0], biases[0]
        try:
            if ours in conv_shapes:
                c_out, c_in = conv_shapes[ours]
                channels_first = layouts.keras_kernel_is_channels_first(kernel.shape, c_out, c_in)
                weight = layouts.keras_conv_kernel(kernel, channels_first=channels_first,
                                                   flipped=layout.flipped)
            else:
                weight = layouts.keras_dense_kernel(kernel)
                if ours == "fc6" and layout.fc6_channels_last:
                    weight = layouts.fc6_columns_from_thwc(weight)
        except ValueError as error:
            raise WeightsError(f"{source}: layer {keras_name}: {error}") from None
        state[f"{ours}.weight"] = _tensor(weight)
        state[f"{ours}.bias"] = _tensor(bias)
    return state


def read_keras_h5(path: str, *, layout: Optional[KerasLayout] = None) -> ConvertedWeights:
    """A Keras 1 or Keras 2 HDF5 weights file (``save_weights`` or ``model.save``)."""
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise WeightsError(f"cannot read {path} as HDF5 (truncated or damaged?): {error}") from None
    with handle:
        root = handle["model_weights"] if "model_weights" in handle else handle
        backend_attr = _text(root.attrs.get("backend", handle.attrs.get("backend", ""))) or None
        layer_names = [_text(n) for n in root.attrs.get("layer_names", [])] or list(root.keys())
        arrays: Dict[str, List[np.ndarray]] = {}
        weight_names: List[str] = []
        try:
            for layer in layer_names:
                if layer in layouts.KERAS_LAYER_NAMES and layer in root:
                    names, values = _keras_layer_arrays(root[layer], layer, path)
                    arrays[layer] = values
                    weight_names.extend(names)
        except OSError as error:
            raise WeightsError(f"cannot read {path} (truncated or damaged?): {error}") from None
    if not arrays:
        raise WeightsError(f"{path} is an HDF5 file without Keras C3D layers "
                           f"(expected conv1 ... fc8; found {', '.join(layer_names[:8])})")
    if layout is None:
        backend = keras_backend_from_evidence(backend_attr, weight_names)
        if backend is None:
            raise WeightsError(
                f"cannot tell whether {path} was written for Theano (kernels flipped) or "
                "TensorFlow: it records no backend and its weight names do not tell. Convert "
                "it with `c3d-weights convert FILE -o OUT.safetensors --keras-layout theano` "
                "(or tensorflow); keras-model-zoo's c3d-sports1M_weights.h5 is theano")
        layout = KERAS_LAYOUTS[backend]
    name = keras_layout_name(layout)
    notes = () if layout == KERAS_LAYOUTS["tensorflow"] else (f"Keras layout: {name}",)
    return ConvertedWeights(keras_state_dict(arrays, layout, path), f"keras-{name}", notes)


# -------------------------------------------------------------------------------- PyTorch

def torch_state_dict(loaded: object, source: str) -> ConvertedWeights:
    """Pure conversion of a loaded PyTorch object: the project's state dict, DavideA's
    ``c3d.pickle`` or an mmaction2 checkpoint."""
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

    if any(k.startswith("backbone.") for k in keys):
        converted, dropped = {}, []
        for key, value in state.items():
            ours = layouts.mmaction2_key(key)
            if ours is None:
                dropped.append(key)
            else:
                converted[ours] = value
        notes = [MMACTION2_NOTE]
        if dropped:
            notes.append(f"ignored {len(dropped)} keys outside the C3D backbone "
                         f"({', '.join(dropped[:4])}{' ...' if len(dropped) > 4 else ''})")
        return ConvertedWeights(converted, "mmaction2", tuple(notes))
    if "conv1.weight" in state:
        unknown = [k for k in keys if layouts.pickle_key(k) is None]
        if unknown:
            raise WeightsError(f"{source} looks like DavideA's c3d.pickle but has unexpected keys "
                               f"{', '.join(unknown[:6])}")
        renamed = {str(layouts.pickle_key(k)): v for k, v in state.items()}
        return ConvertedWeights(renamed, "c3d-pytorch-pickle", (PICKLE_NOTE,))
    return ConvertedWeights(state, "pytorch")


def read_torch_weights(path: str) -> ConvertedWeights:
    from c3d_extract.weights.loading import read_torch_file

    return torch_state_dict(read_torch_file(path), path)
