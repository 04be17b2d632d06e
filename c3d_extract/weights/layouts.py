"""Pure layout transforms between the published weights formats and the project's own.

Each function takes one array in a foreign layout and returns it in the layout of
``nn.Conv3d`` / ``nn.Linear`` (SPEC section 4); they know nothing about files.
"""

from __future__ import annotations

import re
from typing import Dict, Optional, Tuple

import numpy as np

from c3d_extract.models.c3d import CONV_LAYERS, POOL5_SIZE
from c3d_extract.weights.kernel_orders import REVERSED_AXES

#: pool5's output, whose flattening fc6 reads: (channels, frames, height, width).
POOL5_CTHW: Tuple[int, int, int, int] = (512, 1, 4, 4)
assert int(np.prod(POOL5_CTHW)) == POOL5_SIZE

OUR_LAYERS: Tuple[str, ...] = tuple(name for name, _, _ in CONV_LAYERS) + ("fc6", "fc7", "fc8")

#: Keras ports name the first two convolutions without the ``a``.
KERAS_LAYER_NAMES: Dict[str, str] = {
    "conv1": "conv1a", "conv2": "conv2a", "conv3a": "conv3a", "conv3b": "conv3b",
    "conv4a": "conv4a", "conv4b": "conv4b", "conv5a": "conv5a", "conv5b": "conv5b",
    "fc6": "fc6", "fc7": "fc7", "fc8": "fc8",
}
#: DavideA/c3d-pytorch uses the Keras names with ``.weight`` / ``.bias``.
PICKLE_LAYER_NAMES: Dict[str, str] = KERAS_LAYER_NAMES

_CAFFE_FC = re.compile(r"^(fc[678])(?:-1)?$")


def caffe_layer_name(name: str) -> Optional[str]:
    """Our name for a Caffe layer (``fc6-1`` -> ``fc6``), or None for layers without weights
    we use (data, pools, ReLUs, dropouts, loss)."""
    if name in OUR_LAYERS and name.startswith("conv"):
        return name
    match = _CAFFE_FC.match(name)
    return match.group(1) if match else None


def caffe_fc_weight(blob: np.ndarray) -> np.ndarray:
    """An InnerProduct weight blob, (1, 1, 1, N, K) in C3D-v1.0 or (N, K) in BVLC, as (N, K)."""
    if blob.ndim < 2 or any(d != 1 for d in blob.shape[:-2]):
        raise ValueError(f"an inner-product weight blob must be (1, ..., 1, N, K), "
                         f"not {blob.shape}")
    return blob.reshape(blob.shape[-2:])


def caffe_bias(blob: np.ndarray) -> np.ndarray:
    """A bias blob, (1, 1, 1, 1, N) in C3D-v1.0 or (N,) in BVLC, as (N,)."""
    if blob.ndim < 1 or any(d != 1 for d in blob.shape[:-1]):
        raise ValueError(f"a bias blob must be (1, ..., 1, N), not {blob.shape}")
    return blob.reshape(-1)


#: The axes of a Keras Conv3D kernel: channels first (Keras 1 with Theano dim ordering) or
#: channels last (every other case), keyed by ``channels_first``.
KERAS_KERNEL_AXES: Dict[bool, str] = {True: "(out, in, kD, kH, kW)",
                                      False: "(kD, kH, kW, in, out)"}


def keras_kernel_shape(c_out: int, c_in: int, *, channels_first: bool) -> Tuple[int, ...]:
    """The shape a Keras file stores a ``c_in`` -> ``c_out`` 3x3x3 kernel in, in the axes of
    ``KERAS_KERNEL_AXES[channels_first]``: one definition for the check and its message."""
    return (c_out, c_in, 3, 3, 3) if channels_first else (3, 3, 3, c_in, c_out)


def keras_kernel_is_channels_first(shape: Tuple[int, ...], c_out: int, c_in: int) -> bool:
    """Whether a Keras Conv3D kernel of ``shape`` is stored (out, in, kD, kH, kW) (Keras 1
    with Theano dim ordering) rather than (kD, kH, kW, in, out) (every other case).

    ``ValueError`` when it is neither for a ``c_in`` -> ``c_out`` 3x3x3 convolution.
    """
    shape = tuple(shape)
    if shape == keras_kernel_shape(c_out, c_in, channels_first=True):
        return True
    if shape == keras_kernel_shape(c_out, c_in, channels_first=False):
        return False
    channels_last = keras_kernel_shape(c_out, c_in, channels_first=False)
    raise ValueError(f"kernel of shape {shape} is neither {KERAS_KERNEL_AXES[False]} = "
                     f"{channels_last} nor {KERAS_KERNEL_AXES[True]}")


def keras_conv_kernel(kernel: np.ndarray, *, channels_first: bool) -> np.ndarray:
    """A Keras Conv3D kernel as (out, in, kD, kH, kW), its kernel order unchanged."""
    out = kernel if channels_first else np.transpose(kernel, (4, 3, 0, 1, 2))
    return np.ascontiguousarray(out)


def kernel_to_caffe_order(weight: np.ndarray, kernel_order: str) -> np.ndarray:
    """An (out, in, kD, kH, kW) kernel held in ``kernel_order`` (``kernel_orders``), in
    Caffe order: the reversed axes are reversed back."""
    if weight.ndim != 5:
        raise ValueError(f"a convolution kernel must be 5-D, not {weight.shape}")
    axes = REVERSED_AXES[kernel_order]
    return np.ascontiguousarray(np.flip(weight, axis=axes) if axes else weight)


def keras_dense_kernel(kernel: np.ndarray) -> np.ndarray:
    """A Keras Dense kernel, (in, out), as ``nn.Linear``'s (out, in)."""
    if kernel.ndim != 2:
        raise ValueError(f"a dense kernel must be 2-D, not {kernel.shape}")
    return np.ascontiguousarray(kernel.T)


def fc6_columns_from_thwc(weight: np.ndarray,
                          pool5_cthw: Tuple[int, int, int, int] = POOL5_CTHW) -> np.ndarray:
    """fc6's (out, in) weight whose inputs follow a channels-last flatten (T, H, W, C), with its
    columns put back in the channels-first order (C, T, H, W) that ``flatten(1)`` gives."""
    channels, frames, height, width = pool5_cthw
    if weight.ndim != 2 or weight.shape[1] != channels * frames * height * width:
        raise ValueError(f"fc6 weight of shape {weight.shape} does not read a "
                         f"{'x'.join(map(str, pool5_cthw))} pool5")
    n_out = weight.shape[0]
    thwc = weight.reshape(n_out, frames, height, width, channels)
    return np.ascontiguousarray(thwc.transpose(0, 4, 1, 2, 3).reshape(n_out, -1))


def fc6_columns_to_thwc(weight: np.ndarray,
                        pool5_cthw: Tuple[int, int, int, int] = POOL5_CTHW) -> np.ndarray:
    """The inverse of ``fc6_columns_from_thwc``: columns in (C, T, H, W) order put in
    channels-last (T, H, W, C) order."""
    channels, frames, height, width = pool5_cthw
    if weight.ndim != 2 or weight.shape[1] != channels * frames * height * width:
        raise ValueError(f"fc6 weight of shape {weight.shape} does not read a "
                         f"{'x'.join(map(str, pool5_cthw))} pool5")
    cthw = weight.reshape(weight.shape[0], channels, frames, height, width)
    return np.ascontiguousarray(cthw.transpose(0, 2, 3, 4, 1).reshape(weight.shape[0], -1))


_MMACTION_KEY = re.compile(r"^(\w+?)(?:\.conv)?\.(weight|bias)$")


def mmaction2_key(key: str) -> Optional[str]:
    """mmaction2's C3D backbone keys, unprefixed (the published pretrain file) or under
    ``backbone.`` (a Recognizer3D): ``conv1a.conv.weight`` / ``backbone.conv1a.conv.weight``
    -> ``conv1a.weight``; ``fc6.bias`` -> ``fc6.bias``. None for anything else (a
    ``cls_head``, a norm layer)."""
    if key.startswith("backbone."):
        key = key[len("backbone."):]
    match = _MMACTION_KEY.match(key)
    if not match or match.group(1) not in OUR_LAYERS:
        return None
    is_conv = match.group(1).startswith("conv")
    if is_conv != (".conv." in key):
        return None
    return f"{match.group(1)}.{match.group(2)}"


def pickle_key(key: str) -> Optional[str]:
    """DavideA/c3d-pytorch's ``conv1.weight`` -> ``conv1a.weight``; None if not one of its keys."""
    layer, _, kind = key.rpartition(".")
    if layer not in PICKLE_LAYER_NAMES or kind not in ("weight", "bias"):
        return None
    return f"{PICKLE_LAYER_NAMES[layer]}.{kind}"
