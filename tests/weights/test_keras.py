"""Keras HDF5 files as their producers wrote them (SPEC 4.3, 4.4): Keras 2 / TensorFlow
(c3d-keras, Keras 2.0.0 fixed-length strings and tf-keras variable-length strings) and
Keras 1 / Theano (keras-model-zoo), written with h5py directly."""

import hashlib

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from c3d_extract.cli.weights import cli
from c3d_extract.errors import WeightsError
from c3d_extract.weights import loading
from c3d_extract.weights.formats import detect_format
from c3d_extract.weights.loading import load_state_dict
from tests.support.weights_support import (assert_right_conversion, fc6_of, keras1_theano_arrays,
                                           keras2_arrays, numpy_params, relative_difference,
                                           write_keras1, write_keras2)


@pytest.fixture(scope="module")
def params(source):
    return numpy_params(source)


@pytest.fixture(scope="module")
def keras_files(params, tmp_path_factory):
    folder = tmp_path_factory.mktemp("keras")
    tf2 = str(folder / "sports1M_weights_tf.h5")
    write_keras2(tf2, keras2_arrays(params))
    th1 = str(folder / "c3d-sports1M_weights.h5")
    write_keras1(th1, keras1_theano_arrays(params))
    return {"tf2": tf2, "th1": th1}


def test_keras2_tensorflow_file(keras_files, source, clip, reference_fc6):
    path = keras_files["tf2"]
    assert detect_format(path) == "hdf5"
    with h5py.File(path) as f:  # the fixture is written as Keras 2.0.0 writes
        assert f.attrs["keras_version"] == b"2.0.0" and "model_weights" not in f
        assert len(f.attrs["layer_names"]) == 20 and len(f["pool1"].attrs["weight_names"]) == 0
    weights = load_state_dict(path, use_cache=False)
    assert weights.source_format == "keras2-tensorflow" and weights.kernel_order == "caffe"
    assert weights.num_classes == source.num_classes
    for key, value in source.state_dict().items():
        assert torch.equal(weights.state_dict[key], value), key
    assert_right_conversion(weights.state_dict, clip, reference_fc6)


def test_tf_keras_file_with_variable_length_strings(params, source, tmp_path):
    """tf-keras writes variable-length strings; ``model.save`` nests under model_weights; a
    file may list only the layers with weights."""
    path = str(tmp_path / "tf_keras.h5")
    write_keras2(path, keras2_arrays(params), strings="variable", keras_version="2.15.0",
                 weightless_layers=False, model_save=True)
    with h5py.File(path) as f:
        assert isinstance(f["model_weights"].attrs["backend"], str)
    weights = load_state_dict(path, use_cache=False)
    assert weights.source_format == "keras2-tensorflow"
    for key, value in source.state_dict().items():
        assert torch.equal(weights.state_dict[key], value), key


def test_keras1_theano_file(keras_files, source, clip, reference_fc6):
    path = keras_files["th1"]
    with h5py.File(path) as f:
        assert "backend" not in f.attrs and "keras_version" not in f.attrs
        assert f["conv1"].attrs["weight_names"].tolist() == [b"conv1_W", b"conv1_b"]
        assert len(f["pool5"].attrs["weight_names"]) == 0
    weights = load_state_dict(path, use_cache=False)
    assert weights.source_format == "keras1-theano"
    assert weights.kernel_order == "khkw-reversed" and not weights.kernel_order_assumed
    assert any("reversed in kH and kW" in note for note in weights.conversion_notes)
    for key, value in source.state_dict().items():
        assert torch.equal(weights.state_dict[key], value), key
    assert_right_conversion(weights.state_dict, clip, reference_fc6)


def test_keras1_theano_file_without_weightless_groups(params, source, tmp_path):
    path = str(tmp_path / "c3d-sports1M_weights.h5")
    write_keras1(path, keras1_theano_arrays(params), weightless_layers=False)
    weights = load_state_dict(path, use_cache=False)
    assert weights.source_format == "keras1-theano"
    for key, value in source.state_dict().items():
        assert torch.equal(weights.state_dict[key], value), key


def test_keras1_theano_kernels_read_in_another_order_give_other_features(keras_files, clip,
                                                                         reference_fc6):
    """The reversal is what makes the features right: reading the file as Caffe order, or
    reversing every axis (a generic "Theano flips kernels" rule), changes fc6."""
    as_stored = load_state_dict(keras_files["th1"], kernel_order="caffe", use_cache=False)
    assert relative_difference(fc6_of(as_stored.state_dict, clip), reference_fc6) > 1e-2
    all_axes = {k: (torch.flip(v, (2, 3, 4)) if v.dim() == 5 else v)
                for k, v in as_stored.state_dict.items()}
    assert relative_difference(fc6_of(all_axes, clip), reference_fc6) > 1e-2


CONV_SHAPES = {"conv1": (64, 3), "conv2": (128, 64), "conv3a": (256, 128),
               "conv3b": (256, 256), "conv4a": (512, 256), "conv4b": (512, 512),
               "conv5a": (512, 512), "conv5b": (512, 512)}


def write_keras_skeleton(path, names=("{}_W", "{}_b"), channels_first=True, attrs=None,
                         wrong=None):
    """A Keras file with the right layers and shapes whose datasets hold a fill value only,
    allocated and compressed when they are created: enough to test the structure checks
    without 300 MB of data."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    allocated = {"chunks": True, "compression": "gzip", "fillvalue": 0.01, "dcpl": dcpl,
                 "fill_time": "alloc"}
    with h5py.File(path, "w") as f:
        for key, value in (attrs or {}).items():
            f.attrs[key] = np.bytes_(value.encode())
        layers = list(CONV_SHAPES) + ["fc6", "fc7", "fc8"]
        f.attrs["layer_names"] = np.array([n.encode() for n in layers])
        for layer in layers:
            if layer in CONV_SHAPES:
                c_out, c_in = CONV_SHAPES[layer]
                shape = (c_out, c_in, 3, 3, 3) if channels_first else (3, 3, 3, c_in, c_out)
            else:
                c_out = {"fc6": 4096, "fc7": 4096, "fc8": 11}[layer]
                shape = ({"fc6": 8192}.get(layer, 4096), c_out)
            if layer == wrong:
                shape = shape[:-1] + (shape[-1] // 2,)
            group = f.create_group(layer)
            weight_names = [pattern.format(layer) for pattern in names]
            group.attrs["weight_names"] = np.array([n.encode() for n in weight_names])
            group.create_dataset(weight_names[0], shape=shape, dtype="f4", **allocated)
            group.create_dataset(weight_names[1], shape=(c_out,), dtype="f4", **allocated)


@pytest.mark.parametrize("case", ["param_names", "keras1_names_tf_kernels",
                                  "keras2_names_th_kernels", "keras1_names_tf_backend"])
def test_a_keras_file_fitting_neither_layout_is_refused(tmp_path, case):
    path = str(tmp_path / f"{case}.h5")
    if case == "param_names":
        write_keras_skeleton(path, names=("param_0", "param_1"))
    elif case == "keras1_names_tf_kernels":
        write_keras_skeleton(path, channels_first=False)
    elif case == "keras2_names_th_kernels":
        write_keras_skeleton(path, names=("{}/kernel:0", "{}/bias:0"))
    else:
        write_keras_skeleton(path, attrs={"backend": "tensorflow"})
    with pytest.raises(WeightsError, match="neither a Keras 2 / TensorFlow file"):
        load_state_dict(path, use_cache=False)
    result = CliRunner().invoke(cli, ["info", path], prog_name="c3d-weights")
    assert result.exit_code == 1 and "neither a Keras 2" in result.output
    assert "Traceback" not in result.output


def test_keras2_file_saved_with_theano_needs_a_declared_order(tmp_path):
    path = str(tmp_path / "keras2_theano.h5")
    write_keras_skeleton(path, names=("{}/kernel:0", "{}/bias:0"), channels_first=False,
                         attrs={"backend": "theano", "keras_version": "2.0.0"})
    with pytest.raises(WeightsError, match="--kernel-order"):
        load_state_dict(path, use_cache=False)
    weights = load_state_dict(path, kernel_order="caffe", use_cache=False)
    assert weights.source_format == "keras2-theano" and weights.kernel_order == "caffe"


def test_keras_file_missing_a_layer(tmp_path):
    path = str(tmp_path / "partial.h5")
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"conv1"]
        group = f.create_group("conv1")
        group.attrs["weight_names"] = [b"conv1_W", b"conv1_b"]
        group.create_dataset("conv1_W", data=np.zeros((64, 3, 3, 3, 3), np.float32))
        group.create_dataset("conv1_b", data=np.zeros(64, np.float32))
    with pytest.raises(WeightsError, match="no Keras layer 'conv2'"):
        load_state_dict(path, use_cache=False)


def test_keras_file_with_a_wrong_kernel_names_the_layer(tmp_path):
    path = str(tmp_path / "wrong.h5")
    write_keras_skeleton(path, names=("{}/kernel:0", "{}/bias:0"), channels_first=False,
                         wrong="conv3a")
    with pytest.raises(WeightsError, match=r"layer conv3a: kernel of shape \(3, 3, 3, 128, 128\)"):
        load_state_dict(path, use_cache=False)


def test_truncated_hdf5_is_refused(keras_files, tmp_path):
    data = open(keras_files["tf2"], "rb").read()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or damaged"):
        load_state_dict(str(cut), use_cache=False)


def test_a_known_derived_copy_is_named_as_unverified(keras_files, monkeypatch):
    """Files known by md5 (adamcasson/c3d's copy) carry a note saying they are unverified."""
    path = keras_files["tf2"]
    with open(path, "rb") as handle:
        md5 = hashlib.md5(handle.read()).hexdigest()
    monkeypatch.setitem(loading.DERIVED_FILES, md5, "a derived copy: NOT verified")
    weights = load_state_dict(path, use_cache=False)
    assert "a derived copy: NOT verified" in weights.conversion_notes
