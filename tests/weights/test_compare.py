"""``c3d-weights compare``: the transform found per layer (on small tensors whose transforms are
written out independently), and the command's verdicts and exit codes on whole files."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from c3d_extract.cli.weights import cli
from c3d_extract.weights.compare import DIFFERENT, IDENTICAL, TRANSFORMED, compare_weights
from c3d_extract.weights.convert import LoadedWeights
from tests.support.weights_support import (caffe_c3d_v10_net, numpy_params, pickle_state_dict,
                                           thwc_row_order)


def _small(seed=0):
    generator = torch.Generator().manual_seed(seed)
    shapes = {"conv1a.weight": (4, 2, 3, 3, 3), "conv1a.bias": (4,),
              "conv2a.weight": (3, 4, 3, 3, 3), "conv2a.bias": (3,),
              "fc6.weight": (3, 8192), "fc6.bias": (3,),
              "fc7.weight": (5, 5), "fc7.bias": (5,)}
    return {k: torch.randn(shape, generator=generator) for k, shape in shapes.items()}


def _loaded(state, kernel_order="caffe", assumed=False):
    return LoadedWeights(state_dict=state, name="x", sha256="0" * 64, source_format="test",
                         kernel_order=kernel_order, kernel_order_assumed=assumed)


def _by_layer(comparison):
    return {r.layer: r for r in comparison.layers}


def test_identical_weights():
    a = _small()
    result = compare_weights(_loaded(a), _loaded({k: v.clone() for k, v in a.items()}))
    assert result.status == IDENTICAL
    assert all(r.transform == "identity" and r.max_difference == 0 for r in result.layers)


def test_a_float16_copy_still_matches():
    a = _small()
    half = {k: v.half().float() for k, v in a.items()}
    result = compare_weights(_loaded(a), _loaded(half))
    assert result.status == IDENTICAL
    assert 0 < max(r.max_difference for r in result.layers) <= 2 ** -10 * 5


@pytest.mark.parametrize("axes, name", [
    ((2,), "kD reversed"), ((3, 4), "kH, kW reversed"), ((2, 3, 4), "kD, kH, kW reversed"),
    ((4,), "kW reversed"),
])
def test_kernel_reversals_are_found(axes, name):
    a = _small()
    b = dict(a)
    for layer in ("conv1a", "conv2a"):
        kernel = a[f"{layer}.weight"].numpy()
        b[f"{layer}.weight"] = torch.from_numpy(np.ascontiguousarray(np.flip(kernel, axes)))
    result = compare_weights(_loaded(a), _loaded(b))
    assert result.status == TRANSFORMED
    layers = _by_layer(result)
    assert layers["conv1a"].transform == name and layers["conv1a"].max_difference == 0
    assert layers["fc6"].transform == "identity"
    assert name in result.verdict


def test_the_assumed_order_that_would_make_them_equal_is_named():
    """A pickle read as kD-reversed whose kernels were kH/kW-reversed ends up reversed in all
    three axes against Caffe: compare says which order to declare."""
    a = _small()
    b = dict(a)
    for layer in ("conv1a", "conv2a"):
        b[f"{layer}.weight"] = torch.flip(a[f"{layer}.weight"], (2, 3, 4))
    result = compare_weights(_loaded(a, "kd-reversed", assumed=True), _loaded(b))
    assert "--kernel-order khkw-reversed" in result.verdict
    assert "assumed as kd-reversed" in result.verdict


def test_fc6_row_orders_and_transposes_are_found():
    a = _small()
    b = dict(a)
    # B's fc6 reads pool5 flattened (T, H, W, C): column j of B is column thwc_row_order()[j]
    # of A (written from the index map, not from the library's permutation).
    b["fc6.weight"] = a["fc6.weight"][:, torch.from_numpy(thwc_row_order())]
    b["fc7.weight"] = a["fc7.weight"].T.contiguous()
    layers = _by_layer(compare_weights(_loaded(a), _loaded(b)))
    assert layers["fc6"].transform == "fc6 inputs (C,T,H,W) -> (T,H,W,C)"
    assert layers["fc7"].transform == "transposed"
    back = _by_layer(compare_weights(_loaded(b), _loaded(a)))
    assert back["fc6"].transform == "fc6 inputs (T,H,W,C) -> (C,T,H,W)"


def test_different_weights_and_missing_layers():
    a, b = _small(0), _small(1)
    result = compare_weights(_loaded(a), _loaded(b))
    assert result.status == DIFFERENT and all(r.transform is None for r in result.layers)
    del b["fc7.weight"], b["fc7.bias"]
    same = {k: v for k, v in a.items()}
    result = compare_weights(_loaded(same), _loaded({k: v for k, v in a.items()
                                                     if not k.startswith("fc7")}))
    assert result.status == IDENTICAL and "fc7 only in A" in result.verdict
    a["fc6.bias"] = a["fc6.bias"] + 1
    result = compare_weights(_loaded(a), _loaded(same))
    assert result.status == DIFFERENT and "fc6" in result.verdict


# ------------------------------------------------------------------ whole files, CLI


@pytest.fixture(scope="module")
def files(source, tmp_path_factory):
    params = numpy_params(source)
    folder = tmp_path_factory.mktemp("compare")
    caffe = folder / "conv3d_deepnetA_sport1m_iter_1900000"
    caffe.write_bytes(caffe_c3d_v10_net(params, ["fc6-1", "fc7-1", "fc8-1"]))
    kd = folder / "c3d.pickle"
    torch.save(pickle_state_dict(params), str(kd))
    khkw = folder / "c3d_khkw.pickle"
    torch.save(pickle_state_dict(params, reversed_axes=(3, 4)), str(khkw))
    return {"caffe": str(caffe), "kd": str(kd), "khkw": str(khkw)}


def run(*args):
    return CliRunner().invoke(cli, ["compare", *map(str, args)], prog_name="c3d-weights")


def test_compare_a_pickle_with_the_caffe_file(files):
    result = run(files["kd"], files["caffe"])
    assert result.exit_code == 0, result.output
    assert "kernel order kd-reversed, assumed" in result.output
    assert "verdict: same network: all 11 layers" in result.output


def test_compare_settles_the_pickle_kernel_order(files):
    result = run(files["khkw"], files["caffe"])
    assert result.exit_code == 3, result.output
    verdict = result.output.split("verdict: ")[1]
    assert "kD, kH, kW reversed" in verdict and "--kernel-order khkw-reversed" in verdict
    declared = run(files["khkw"], files["caffe"], "--kernel-order-a", "khkw-reversed")
    assert declared.exit_code == 0, declared.output


def test_compare_different_networks_and_bad_files(files, tmp_path):
    other = tmp_path / "other.pt"
    from c3d_extract.models.c3d import build_c3d
    torch.save(build_c3d(num_classes=11, seed=99).state_dict(), str(other))
    result = run(files["caffe"], other)
    assert result.exit_code == 4, result.output
    assert "verdict: different networks: 11 of 11 layers" in result.output
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"nothing")
    result = run(files["caffe"], garbage)
    assert result.exit_code == 1 and "cannot tell the format" in result.output
    assert "Traceback" not in result.output
