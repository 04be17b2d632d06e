"""Caffe binaries (both protobuf dialects) and mean blobs, written by a tiny encoder here."""

import hashlib
import json

import numpy as np
import pytest
import torch

from c3d_extract.errors import UsageError, WeightsError
from c3d_extract.video.preprocess import SPORTS1M, preprocessing_with_mean
from c3d_extract.weights import caffe_proto
from c3d_extract.weights.formats import detect_format
from c3d_extract.weights.hub import resolve_weights
from c3d_extract.weights.loading import converted_cache_path, load_state_dict
from c3d_extract.weights.means import load_mean
from tests.support.weights_support import (assert_right_conversion, assert_same_fc6, blob_bvlc,
                                           blob_c3d_v10, caffe_bvlc_net, caffe_c3d_v10_net, f_bytes,
                                           f_unpacked_floats, f_varint, fc6_of, numpy_params,
                                           source_model, varint)

# ------------------------------------------------------------------ wire format


@pytest.mark.parametrize("value", [0, 1, 127, 128, 150, 300, 16383, 16384, 2**32 + 5, 2**63 - 1])
def test_varints_round_trip_with_the_test_encoder(value):
    encoded = varint(value)
    assert caffe_proto.read_varint(memoryview(encoded), 0) == (value, len(encoded))


def test_iter_fields_on_hand_assembled_bytes():
    # Field 1 varint 150 (the protobuf documentation's example), field 2 "testing",
    # field 3 fixed32 1.5, field 4 fixed64.
    message = (b"\x08\x96\x01" + b"\x12\x07testing" + b"\x1d" + np.float32(1.5).tobytes()
               + b"\x21" + (7).to_bytes(8, "little"))
    fields = [(n, w, v if isinstance(v, int) else bytes(v))
              for n, w, v in caffe_proto.iter_fields(message)]
    assert fields == [(1, 0, 150), (2, 2, b"testing"), (3, 5, np.float32(1.5).tobytes()),
                      (4, 1, (7).to_bytes(8, "little"))]


@pytest.mark.parametrize("cut", [1, 2, 5])
def test_truncated_messages_are_refused(cut):
    message = f_bytes(6, np.arange(4, dtype="<f4").tobytes())
    with pytest.raises(caffe_proto.WireFormatError):
        list(caffe_proto.iter_fields(message[:-cut]))


def test_blob_c3d_v10_packed_and_unpacked():
    array = np.arange(2 * 3 * 2 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2, 2) / 7
    assert np.array_equal(caffe_proto.decode_blob(blob_c3d_v10(array)), array)
    unpacked = b"".join(f_varint(n, d) for n, d in zip((1, 2, 3, 4, 5), array.shape))
    unpacked += f_unpacked_floats(6, array.ravel())
    decoded = caffe_proto.decode_blob(unpacked)
    assert decoded.shape == (2, 3, 2, 2, 2) and np.array_equal(decoded, array)


def test_blob_with_a_diff_keeps_the_data():
    array = np.arange(6, dtype=np.float32).reshape(1, 1, 1, 2, 3)
    blob = blob_c3d_v10(array) + f_bytes(7, np.full(6, -1, "<f4").tobytes())  # diff = 7
    assert np.array_equal(caffe_proto.decode_blob(blob), array)


def test_blob_bvlc_shape_and_legacy_dims():
    array = np.arange(24, dtype=np.float32).reshape(4, 6)
    assert np.array_equal(caffe_proto.decode_blob(blob_bvlc(array)), array)
    legacy = b"".join(f_varint(n, d) for n, d in zip((1, 2, 3, 4), (1, 2, 3, 4)))
    legacy += f_bytes(5, np.arange(24, dtype="<f4").tobytes())
    assert caffe_proto.decode_blob(legacy).shape == (1, 2, 3, 4)


def test_blob_with_too_few_values_is_refused():
    array = np.arange(6, dtype=np.float32).reshape(1, 1, 1, 2, 3)
    blob = b"".join(f_varint(n, d) for n, d in zip((1, 2, 3, 4, 5), (1, 1, 1, 2, 4)))
    blob += f_bytes(6, array.tobytes())
    with pytest.raises(caffe_proto.WireFormatError, match="expected 8"):
        caffe_proto.decode_blob(blob)


# ------------------------------------------------------------------ mean binaryproto

def test_mean_binaryproto_c3d_volume(tmp_path):
    rng = np.random.default_rng(0)
    mean = rng.uniform(80, 110, size=(1, 3, 16, 128, 171)).astype(np.float32)
    path = tmp_path / "train01_16_128_171_mean.binaryproto"
    path.write_bytes(blob_c3d_v10(mean))
    read = caffe_proto.read_mean_binaryproto(str(path))
    assert read.shape == (1, 3, 16, 128, 171) and read.dtype == np.float32
    assert np.array_equal(read, mean)
    preset = preprocessing_with_mean(SPORTS1M, load_mean(str(path)))
    assert preset.mean_volume.shape == (3, 16, 128, 171)
    assert np.array_equal(preset.cropped_mean(16), mean[0, :, :, 8:120, 29:141])


def test_mean_binaryproto_damaged(tmp_path):
    mean = np.ones((1, 3, 1, 2, 2), np.float32)
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(blob_c3d_v10(mean)[:-3])
    with pytest.raises(UsageError, match="not a Caffe mean blob"):
        caffe_proto.read_mean_binaryproto(str(path))
    with pytest.raises(UsageError, match="cannot read"):
        caffe_proto.read_mean_binaryproto(str(tmp_path / "missing.binaryproto"))


# ------------------------------------------------------------------ whole networks


@pytest.fixture(scope="module")
def caffe_files(source, tmp_path_factory):
    params = numpy_params(source)
    folder = tmp_path_factory.mktemp("caffe")
    v10 = folder / "conv3d_deepnetA_sport1m_iter_1900000"
    v10.write_bytes(caffe_c3d_v10_net(params, ["fc6-1", "fc7-1", "fc8-1"]))  # SPEC 4.1 names
    bvlc = folder / "c3d_sport1m.caffemodel"
    bvlc.write_bytes(caffe_bvlc_net(params, ["fc6", "fc7", "fc8"]))
    return {"v10": str(v10), "bvlc": str(bvlc)}


@pytest.mark.parametrize("dialect", ["v10", "bvlc"])
def test_caffe_net_gives_the_source_fc6(dialect, caffe_files, source, clip, reference_fc6,
                                        tmp_path, monkeypatch):
    monkeypatch.setenv("C3D_EXTRACT_CACHE", str(tmp_path / "cache"))
    path = caffe_files[dialect]
    assert detect_format(path) == "caffe"
    weights = load_state_dict(path, use_cache=False)
    assert weights.source_format == "caffe"
    assert weights.sha256 == hashlib.sha256(open(path, "rb").read()).hexdigest()
    for key, value in source.state_dict().items():
        assert torch.equal(weights.state_dict[key], value), key
    assert_right_conversion(weights.state_dict, clip, reference_fc6)


def test_caffe_conversion_is_cached_by_sha256(caffe_files, clip, reference_fc6, tmp_path,
                                              monkeypatch):
    monkeypatch.setenv("C3D_EXTRACT_CACHE", str(tmp_path / "cache"))
    path = caffe_files["v10"]
    first = resolve_weights(path)
    cached = converted_cache_path(first.sha256)
    assert cached.is_file()
    from safetensors import safe_open
    with safe_open(str(cached), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["source_sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert metadata["source_format"] == "caffe"
    assert json.loads(metadata["preprocessing"])["channel_order"] == "BGR"
    # The second resolve reads the cache: with the Caffe reader disabled it still works.
    from c3d_extract.weights import formats

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again instead of reading the cache")

    monkeypatch.setattr(formats, "read_stored", no_conversion)
    second = resolve_weights(path)
    assert second.source_format == "caffe" and second.sha256 == first.sha256
    assert_same_fc6(fc6_of(second.state_dict, clip), reference_fc6)


def test_truncated_caffe_file_is_refused(caffe_files, tmp_path, monkeypatch):
    monkeypatch.setenv("C3D_EXTRACT_CACHE", str(tmp_path / "cache"))
    data = open(caffe_files["v10"], "rb").read()
    cut = tmp_path / "cut"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(WeightsError, match="truncated"):
        load_state_dict(str(cut))
    assert not (tmp_path / "cache" / "converted").exists()


def test_caffe_layers_with_a_wrong_shape_name_the_layer():
    from c3d_extract.weights.formats import caffe_arrays
    from c3d_extract.weights.loading import check_state_dict

    params = numpy_params(source_model(num_classes=3))
    layers = []
    for name in ["conv1a", "conv2a", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b"]:
        weight = params[f"{name}.weight"]
        if name == "conv3b":
            weight = weight[:, :128]
        layers.append(caffe_proto.CaffeLayer(name, 30, (weight, params[f"{name}.bias"])))
    for name in ["fc6", "fc7", "fc8"]:
        weight = params[f"{name}.weight"]
        layers.append(caffe_proto.CaffeLayer(f"{name}-1", 14, (weight[None, None, None],
                                                               params[f"{name}.bias"])))
    state = {k: torch.from_numpy(v) for k, v in caffe_arrays(layers, "test.caffemodel").items()}
    with pytest.raises(WeightsError, match="layer conv3b"):
        check_state_dict(state, "test.caffemodel")
    layers[-1] = caffe_proto.CaffeLayer("fc8", 14, (np.zeros((2, 1, 3, 4), np.float32),
                                                    np.zeros(3, np.float32)))
    with pytest.raises(WeightsError, match="layer fc8"):
        caffe_arrays(layers, "test.caffemodel")


def test_caffe_net_without_c3d_layers(tmp_path):
    path = tmp_path / "other.caffemodel"
    blob = blob_c3d_v10(np.ones((1, 1, 1, 1, 2)))
    body = f_bytes(4, b"conv1") + f_varint(5, 4) + f_bytes(6, blob)
    path.write_bytes(f_bytes(1, b"alexnet") + f_bytes(2, body))
    with pytest.raises(WeightsError, match="without any C3D layer"):
        load_state_dict(str(path), use_cache=False)
