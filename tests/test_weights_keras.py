"""Keras HDF5 files in the TensorFlow and Theano layouts, Keras 1 and Keras 2 naming, written
with h5py directly from the documented transforms."""

import shutil

import h5py
from click.testing import CliRunner
import pytest
import torch

from c3d_extract.cli.weights import cli
from c3d_extract.errors import WeightsError
from c3d_extract.weights.convert import convert_file
from c3d_extract.weights.formats import KERAS_LAYOUTS, detect_format, read_keras_h5
from c3d_extract.weights.loading import load_state_dict
from tests.weights_support import (
    assert_same_fc6, fc6_of, keras_arrays, numpy_params, relative_difference, write_keras1, write_keras2,
)


@pytest.fixture(scope="module")
def keras_files(source, tmp_path_factory):
    params = numpy_params(source)
    folder = tmp_path_factory.mktemp("keras")
    tf2 = str(folder / "sports1M_weights_tf.h5")
    write_keras2(tf2, keras_arrays(params, theano=False, channels_first_kernels=False))
    th1 = str(folder / "c3d-sports1M_weights.h5")
    write_keras1(th1, keras_arrays(params, theano=True, channels_first_kernels=True))
    return {"tf2": tf2, "th1": th1}


def test_keras2_tensorflow_file(keras_files, source, clip, reference_fc6):
    path = keras_files["tf2"]
    assert detect_format(path) == "hdf5"
    weights = load_state_dict(path, use_cache=False)
    assert weights.source_format == "keras-tensorflow"
    assert weights.num_classes == source.num_classes
    assert_same_fc6(fc6_of(weights.state_dict, clip), reference_fc6)


def test_keras1_theano_file_is_detected_from_its_weight_names(keras_files, clip, reference_fc6):
    weights = load_state_dict(keras_files["th1"], use_cache=False)
    assert weights.source_format == "keras-theano"
    assert_same_fc6(fc6_of(weights.state_dict, clip), reference_fc6)


def test_theano_file_read_as_tensorflow_layout_is_wrong(keras_files, clip, reference_fc6):
    """Only the kernel flip differs between the two readings: it must change fc6."""
    converted = read_keras_h5(keras_files["th1"], layout=KERAS_LAYOUTS["tensorflow"])
    assert relative_difference(fc6_of(converted.state_dict, clip), reference_fc6) > 1e-2


def test_fc6_order_matters(keras_files, clip, reference_fc6):
    converted = read_keras_h5(keras_files["tf2"],
                              layout=KERAS_LAYOUTS["tensorflow-channels-first"])
    assert relative_difference(fc6_of(converted.state_dict, clip), reference_fc6) > 1e-2


def test_undecidable_file_needs_an_explicit_layout(keras_files, clip, reference_fc6, tmp_path):
    """Keras 0.x-style ``param_N`` names and no ``backend``: refuse to guess the flip."""
    path = str(tmp_path / "params.h5")
    shutil.copyfile(keras_files["th1"], path)
    with h5py.File(path, "r+") as f:
        for layer in f.attrs["layer_names"]:
            group = f[layer]
            names = [n.decode() if isinstance(n, bytes) else str(n)
                     for n in group.attrs["weight_names"]]
            for index, name in enumerate(names):
                group.move(name, f"param_{index}")
            group.attrs["weight_names"] = [f"param_{i}".encode() for i in range(len(names))]
    with pytest.raises(WeightsError, match="--keras-layout theano"):
        load_state_dict(path, use_cache=False)
    result = CliRunner().invoke(cli, ["info", path], prog_name="c3d-weights")
    assert result.exit_code == 1 and "--keras-layout" in result.output
    out = str(tmp_path / "converted.safetensors")
    weights = convert_file(path, out, keras_layout="theano")
    assert weights.source_format == "keras-theano"
    assert_same_fc6(fc6_of(load_state_dict(out).state_dict, clip), reference_fc6)


def test_keras_file_missing_a_layer(tmp_path):
    path = str(tmp_path / "partial.h5")
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"conv1"]
        group = f.create_group("conv1")
        group.attrs["weight_names"] = [b"conv1_W:0", b"conv1_b:0"]
        group.create_dataset("conv1_W:0", data=torch.zeros(3, 3, 3, 3, 64).numpy())
        group.create_dataset("conv1_b:0", data=torch.zeros(64).numpy())
    with pytest.raises(WeightsError, match="no Keras layer 'conv2'"):
        load_state_dict(path, use_cache=False)


def test_keras_file_with_a_wrong_kernel_names_the_layer(tmp_path):
    path = str(tmp_path / "wrong.h5")
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"conv1"]
        f.attrs["backend"] = b"tensorflow"
        group = f.create_group("conv1")
        group.attrs["weight_names"] = [b"conv1/kernel:0", b"conv1/bias:0"]
        group.create_dataset("conv1/kernel:0", data=torch.zeros(3, 3, 3, 4, 64).numpy())
        group.create_dataset("conv1/bias:0", data=torch.zeros(64).numpy())
    with pytest.raises(WeightsError, match="layer conv1"):
        load_state_dict(path, use_cache=False)


def test_truncated_hdf5_is_refused(keras_files, tmp_path):
    data = open(keras_files["tf2"], "rb").read()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or damaged"):
        load_state_dict(str(cut), use_cache=False)
