"""Shared pieces of the weights tests: a real decoded clip, a seeded source network, and
writers of every published format built from the documented layouts (SPEC section 4),
written independently of the readers under test."""

from __future__ import annotations

import functools
import os
import struct
import tempfile
from collections import OrderedDict
from typing import Dict, Iterable, Sequence, Tuple

import numpy as np
import torch

from c3d_extract.models.c3d import C3D, build_c3d

SOURCE_SEED = 1234
NUM_CLASSES = 11  # a small fc8 keeps the files small; the readers take any count
MEAN_BGR = (90.25, 97.66, 101.41)  # SPEC 2.4
CONV_NAMES = ["conv1a", "conv2a", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b"]
KERAS_NAMES = {"conv1a": "conv1", "conv2a": "conv2"}  # others keep their name


# ------------------------------------------------------------------ a real decoded clip

def write_video(path: str, n_frames: int = 18, width: int = 64, height: int = 48) -> None:
    """A short H.264 (or MPEG-4) video with moving coloured content, written with PyAV."""
    import av

    rng = np.random.default_rng(5)
    base = rng.integers(0, 256, size=(height // 4, width // 4, 3), dtype=np.uint8)
    with av.open(path, "w") as container:
        try:
            stream = container.add_stream("libx264", rate=25)
        except Exception:  # noqa: BLE001 - an FFmpeg build without libx264
            stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(n_frames):
            frame = np.kron(np.roll(base, index, axis=1), np.ones((4, 4, 1), np.uint8))
            frame[:, :, 1] = np.clip(frame[:, :, 1].astype(int) + 8 * index, 0, 255)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def decoded_clip(path: str, clip_len: int = 16) -> torch.Tensor:
    """1 x 3 x 16 x 112 x 112: PyAV decode, OpenCV bilinear resize to 128 x 171, centre crop
    rows 8..119 / columns 29..140, BGR, minus the per-channel mean."""
    import av
    import cv2

    frames = []
    with av.open(path) as container:
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            resized = cv2.resize(rgb, (171, 128), interpolation=cv2.INTER_LINEAR)
            frames.append(resized[8:120, 29:141, ::-1].astype(np.float32))
            if len(frames) == clip_len:
                break
    assert len(frames) == clip_len
    clip = np.stack(frames) - np.asarray(MEAN_BGR, np.float32)  # T x H x W x C(BGR)
    return torch.from_numpy(np.ascontiguousarray(clip.transpose(3, 0, 1, 2)))[None]


def source_model(num_classes: int = NUM_CLASSES) -> C3D:
    return build_c3d(num_classes=num_classes, seed=SOURCE_SEED)


# Built once per test process and shared by the weights test modules (never modified).

@functools.lru_cache(maxsize=None)
def shared_source() -> C3D:
    return source_model()


@functools.lru_cache(maxsize=None)
def shared_clip() -> torch.Tensor:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "clip.mp4")
        write_video(path)
        return decoded_clip(path)


@functools.lru_cache(maxsize=None)
def shared_reference_fc6() -> torch.Tensor:
    with torch.no_grad():
        return shared_source().extract(shared_clip(), ["fc6"])["fc6"]


def fc6_of(state_dict: Dict[str, torch.Tensor], clip: torch.Tensor) -> torch.Tensor:
    """fc6 of a C3D holding ``state_dict`` (strictly loaded) on ``clip``."""
    num_classes = int(state_dict["fc8.weight"].shape[0]) if "fc8.weight" in state_dict else 0
    with torch.device("meta"):  # skip the random initialisation: every tensor is replaced
        model = C3D(num_classes)
    model.load_state_dict(state_dict, strict=True, assign=True)
    with torch.no_grad():
        return model.eval().extract(clip, ["fc6"])["fc6"]


def assert_same_fc6(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert int((expected > 0).sum()) > 100, "the reference fc6 is degenerate"
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


#: The issue's bar for a right conversion on real video (a right one gives 1.0000000).
MIN_FC6_COSINE = 0.99999


def fc6_cosine(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(actual.double().flatten(),
                                                       expected.double().flatten(), dim=0))


def assert_right_conversion(state_dict: Dict[str, torch.Tensor], clip: torch.Tensor,
                            expected: torch.Tensor) -> None:
    """fc6 of ``state_dict`` on the real clip: cosine >= 0.99999 and equal within 1e-5."""
    actual = fc6_of(state_dict, clip)
    assert fc6_cosine(actual, expected) >= MIN_FC6_COSINE
    assert_same_fc6(actual, expected)


def relative_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


def numpy_params(model: C3D) -> Dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------ a tiny protobuf encoder

def varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def key(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def f_varint(number: int, value: int) -> bytes:
    return key(number, 0) + varint(value)


def f_bytes(number: int, payload: bytes) -> bytes:
    return key(number, 2) + varint(len(payload)) + payload


def f_packed_floats(number: int, values: np.ndarray) -> bytes:
    return f_bytes(number, np.ascontiguousarray(values, "<f4").tobytes())


def f_unpacked_floats(number: int, values: Iterable[float]) -> bytes:
    return b"".join(key(number, 5) + struct.pack("<f", float(v)) for v in values)


def blob_c3d_v10(array: np.ndarray) -> bytes:
    """C3D-v1.0 BlobProto: num=1 channels=2 length=3 height=4 width=5 (5-D, padded with
    leading ones), data=6 packed."""
    shape = (1,) * (5 - array.ndim) + tuple(array.shape)
    fields = b"".join(f_varint(n, d) for n, d in zip((1, 2, 3, 4, 5), shape))
    return fields + f_packed_floats(6, array.ravel())


def blob_bvlc(array: np.ndarray) -> bytes:
    """BVLC BlobProto: shape=7 {dim=1 packed int64}, data=5 packed."""
    dims = b"".join(varint(d) for d in array.shape)
    return f_bytes(7, f_bytes(1, dims)) + f_packed_floats(5, array.ravel())


def caffe_c3d_v10_net(params: Dict[str, np.ndarray], fc_names: Sequence[str]) -> bytes:
    """A NetParameter with V1 ``layers`` (field 2) as C3D-v1.0 wrote them, including layers
    without weights. Conv blobs (out, in, kD, kH, kW); FC weights (1, 1, 1, N, K)."""
    convolution3d, inner_product, pooling3d, relu, softmax = 30, 14, 31, 18, 20

    def layer(name: str, kind: int, blobs: Sequence[np.ndarray] = ()) -> bytes:
        body = f_bytes(4, name.encode()) + f_varint(5, kind)
        body += b"".join(f_bytes(6, blob_c3d_v10(b)) for b in blobs)
        return f_bytes(2, body)

    dropout = 6
    out = [f_bytes(1, b"DeepConv3DNet_Sport1M_Val"), layer("data", 29)]
    for name in CONV_NAMES:
        out.append(layer(name, convolution3d, [params[f"{name}.weight"],
                                               params[f"{name}.bias"].reshape(1, 1, 1, 1, -1)]))
        out.append(layer(f"relu{name[4:]}", relu))
        if name in ("conv1a", "conv2a", "conv3b", "conv4b", "conv5b"):
            out.append(layer(f"pool{name[4]}", pooling3d))
    for ours, caffe_name in zip(("fc6", "fc7", "fc8"), fc_names):
        weight = params[f"{ours}.weight"]
        out.append(layer(caffe_name, inner_product,
                         [weight.reshape(1, 1, 1, *weight.shape),
                          params[f"{ours}.bias"].reshape(1, 1, 1, 1, -1)]))
        if ours != "fc8":
            out += [layer(f"relu{ours[2]}", relu), layer(f"drop{ours[2]}", dropout)]
    out.append(layer("prob", softmax))
    return b"".join(out)


def caffe_bvlc_net(params: Dict[str, np.ndarray], fc_names: Sequence[str]) -> bytes:
    """A NetParameter with ``layer`` (field 100): name=1, type=2 (string), blobs=7."""

    def layer(name: str, kind: str, blobs: Sequence[np.ndarray] = ()) -> bytes:
        body = f_bytes(1, name.encode()) + f_bytes(2, kind.encode())
        body += b"".join(f_bytes(7, blob_bvlc(b)) for b in blobs)
        return f_bytes(100, body)

    out = [f_bytes(1, b"c3d_sport1m"), layer("data", "Input")]
    for name in CONV_NAMES:
        out.append(layer(name, "NdConvolution", [params[f"{name}.weight"],
                                                 params[f"{name}.bias"]]))
        out.append(layer(f"relu{name[4:]}", "ReLU"))
    for ours, caffe_name in zip(("fc6", "fc7", "fc8"), fc_names):
        out.append(layer(caffe_name, "InnerProduct", [params[f"{ours}.weight"],
                                                      params[f"{ours}.bias"]]))
    return b"".join(out)


# ------------------------------------------------------------------ Keras layouts

def thwc_row_order() -> np.ndarray:
    """For each row of a channels-last fc6 kernel, the pool5 (C, T, H, W) index it reads."""
    return np.arange(512 * 1 * 4 * 4).reshape(512, 1, 4, 4).transpose(1, 2, 3, 0).ravel()


def keras2_arrays(params: Dict[str, np.ndarray]) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Keras layer name -> (kernel, bias) as c3d-keras's convert_caffe_model.py writes them
    (SPEC 4.3): conv caffe.transpose(2, 3, 4, 1, 0), no flip; dense W.T with fc6's rows
    reordered from (C, T, H, W) to (T, H, W, C)."""
    out = {}
    for name in CONV_NAMES:
        kernel = params[f"{name}.weight"].transpose(2, 3, 4, 1, 0)
        out[KERAS_NAMES.get(name, name)] = (np.ascontiguousarray(kernel), params[f"{name}.bias"])
    for name in ("fc6", "fc7", "fc8"):
        kernel = params[f"{name}.weight"].T
        if name == "fc6":
            kernel = kernel[thwc_row_order()]
        out[name] = (np.ascontiguousarray(kernel), params[f"{name}.bias"])
    return out


def keras1_theano_arrays(params: Dict[str, np.ndarray]
                         ) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """As albertomontesg's gist / keras-model-zoo wrote them (SPEC 4.4): conv kernels kept
    (out, in, kD, kH, kW) with each 2-D kH x kW slice rotated by 180 degrees (kD untouched);
    dense W.T with fc6's rows left in Caffe's (C, T, H, W) order."""
    out = {}
    for name in CONV_NAMES:
        rotated = np.rot90(params[f"{name}.weight"], 2, axes=(3, 4))  # every kH x kW slice
        out[KERAS_NAMES.get(name, name)] = (np.ascontiguousarray(rotated), params[f"{name}.bias"])
    for name in ("fc6", "fc7", "fc8"):
        out[name] = (np.ascontiguousarray(params[f"{name}.weight"].T), params[f"{name}.bias"])
    return out


LAYER_SEQUENCE = ["conv1", "pool1", "conv2", "pool2", "conv3a", "conv3b", "pool3", "conv4a",
                  "conv4b", "pool4", "conv5a", "conv5b", "zeropadding3d_1", "pool5", "flatten_1",
                  "fc6", "dropout_1", "fc7", "dropout_2", "fc8"]


def _string_attr(node, name: str, value, kind: str) -> None:
    """An attribute the way Keras 2.0.0 (fixed-length bytes) or tf-keras (variable-length
    strings) writes it; ``value`` is a str or a list of str."""
    import h5py

    if kind == "fixed":
        node.attrs[name] = (np.array([v.encode("utf8") for v in value]) if isinstance(value, list)
                            else np.bytes_(value.encode("utf8")))  # numpy 'S' dtype: fixed
    else:
        node.attrs.create(name, value, dtype=h5py.string_dtype("utf-8"))


def write_keras2(path: str, arrays: Dict[str, Tuple[np.ndarray, np.ndarray]], *,
                 strings: str = "fixed", keras_version: str = "2.0.0",
                 backend: str = "tensorflow", weightless_layers: bool = True,
                 model_save: bool = False) -> None:
    """Keras 2's ``save_weights`` (or, ``model_save``, ``model.save`` under
    ``model_weights``): root attrs ``layer_names``, ``backend``, ``keras_version``; groups
    ``conv1/conv1/kernel:0``; layers without weights get an empty ``weight_names``."""
    import h5py

    names = [n for n in LAYER_SEQUENCE if weightless_layers or n in arrays]
    with h5py.File(path, "w") as f:
        root = f
        if model_save:
            _string_attr(f, "model_config", '{"class_name": "Sequential"}', strings)
            root = f.create_group("model_weights")
        _string_attr(root, "layer_names", names, strings)
        _string_attr(root, "backend", backend, strings)
        _string_attr(root, "keras_version", keras_version, strings)
        for name in names:
            group = root.create_group(name)
            if name not in arrays:
                group.attrs["weight_names"] = []  # what Keras 2.0.0 writes for an empty list
                continue
            weight_names = [f"{name}/kernel:0", f"{name}/bias:0"]
            _string_attr(group, "weight_names", weight_names, strings)
            for weight_name, value in zip(weight_names, arrays[name]):
                group.create_dataset(weight_name, data=value.astype(np.float32))


def write_keras1(path: str, arrays: Dict[str, Tuple[np.ndarray, np.ndarray]], *,
                 weightless_layers: bool = True,
                 weight_names: Tuple[str, str] = ("{}_W", "{}_b")) -> None:
    """Keras 1.0.5's ``save_weights``: root ``layer_names`` only (no backend, no
    keras_version), datasets ``conv1_W`` / ``conv1_b`` directly in each layer's group."""
    import h5py

    names = [n for n in LAYER_SEQUENCE if weightless_layers or n in arrays]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode("utf8") for n in names])  # h5py 2: 'S' arrays
        for name in names:
            group = f.create_group(name)
            if name not in arrays:
                group.attrs["weight_names"] = []
                continue
            names_here = [pattern.format(name) for pattern in weight_names]
            group.attrs["weight_names"] = np.array([n.encode("utf8") for n in names_here])
            for weight_name, value in zip(names_here, arrays[name]):
                group.create_dataset(weight_name, data=value.astype(np.float32))


# ------------------------------------------------------------------ PyTorch files

def pickle_state_dict(params: Dict[str, np.ndarray], *, reversed_axes: Tuple[int, ...] = (2,)
                      ) -> "OrderedDict[str, torch.Tensor]":
    """DavideA/c3d-pytorch's model's state dict (SPEC 4.5): keys conv1, conv2, conv3a ... fc8;
    conv kernels Caffe's reversed along ``reversed_axes`` (kD by default, the likely case)."""
    renamed = {"conv1a": "conv1", "conv2a": "conv2"}
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key_name, value in params.items():
        layer, _, kind = key_name.rpartition(".")
        if kind == "weight" and layer.startswith("conv") and reversed_axes:
            value = np.flip(value, axis=reversed_axes)
        out[f"{renamed.get(layer, layer)}.{kind}"] = torch.from_numpy(np.ascontiguousarray(value))
    return out


def mmaction2_backbone(params: Dict[str, np.ndarray], prefix: str = ""
                       ) -> "OrderedDict[str, torch.Tensor]":
    """mmaction2's C3D backbone state dict (SPEC 4.6): ``conv1a.conv.weight`` ... ``fc7``,
    no fc8, each key under ``prefix``."""
    state: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key_name, value in params.items():
        layer, _, kind = key_name.rpartition(".")
        if layer == "fc8":
            continue
        inner = f"{layer}.conv" if layer.startswith("conv") else layer
        state[f"{prefix}{inner}.{kind}"] = torch.from_numpy(value.copy())
    return state


def mmaction2_checkpoint(params: Dict[str, np.ndarray]) -> Dict[str, object]:
    """The published pretrain file: the unprefixed backbone under ``state_dict`` with mmcv's
    ``meta``."""
    return {"meta": {"mmcv_version": "1.1.5", "time": "Fri Oct 16 2020"},
            "state_dict": mmaction2_backbone(params)}


def recognizer3d_checkpoint(params: Dict[str, np.ndarray], num_classes: int = 101
                            ) -> Dict[str, object]:
    """A fine-tuned Recognizer3D: the backbone under ``backbone.`` plus ``cls_head.fc_cls``."""
    state = mmaction2_backbone(params, prefix="backbone.")
    generator = torch.Generator().manual_seed(7)
    state["cls_head.fc_cls.weight"] = torch.randn(num_classes, 4096, generator=generator)
    state["cls_head.fc_cls.bias"] = torch.zeros(num_classes)
    return {"meta": {"mmaction2_version": "1.2.0"}, "state_dict": state}
