"""The pure layout transforms and name maps, each against a computation written differently."""

import itertools

import numpy as np
import pytest
import torch

from c3d_extract.weights import layouts
from c3d_extract.weights.formats import keras_backend_from_evidence


@pytest.mark.parametrize("caffe_name, ours", [
    ("conv1a", "conv1a"), ("conv5b", "conv5b"), ("fc6", "fc6"), ("fc6-1", "fc6"),
    ("fc7-1", "fc7"), ("fc8", "fc8"), ("fc8-1", "fc8"),
    ("pool5", None), ("relu1a", None), ("data", None), ("prob", None), ("fc9", None),
    ("conv1", None), ("fc6-2", None),
])
def test_caffe_layer_names(caffe_name, ours):
    assert layouts.caffe_layer_name(caffe_name) == ours


def test_caffe_fc_weight_drops_the_three_leading_axes():
    blob = np.arange(12, dtype=np.float32).reshape(1, 1, 1, 3, 4)
    weight = layouts.caffe_fc_weight(blob)
    assert weight.shape == (3, 4)
    assert weight[2, 1] == 2 * 4 + 1
    assert layouts.caffe_fc_weight(blob[0, 0, 0]).shape == (3, 4)  # BVLC: already (N, K)
    with pytest.raises(ValueError):
        layouts.caffe_fc_weight(np.zeros((2, 1, 1, 3, 4), np.float32))


def test_caffe_bias():
    assert layouts.caffe_bias(np.arange(5.0).reshape(1, 1, 1, 1, 5)).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        layouts.caffe_bias(np.zeros((2, 5)))


def test_keras_kernel_storage_is_told_by_shape():
    assert layouts.keras_kernel_is_channels_first((64, 3, 3, 3, 3), 64, 3)
    assert not layouts.keras_kernel_is_channels_first((3, 3, 3, 3, 64), 64, 3)
    with pytest.raises(ValueError, match="neither"):
        layouts.keras_kernel_is_channels_first((3, 3, 3, 64, 3), 64, 3)


@pytest.mark.parametrize("flipped", [False, True])
def test_keras_conv_kernel_channels_last(flipped):
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3, 3, 3, 2, 4)).astype(np.float32)  # kD kH kW in out
    out = layouts.keras_conv_kernel(kernel, channels_first=False, flipped=flipped)
    assert out.shape == (4, 2, 3, 3, 3)
    for o, i, d, h, w in itertools.product(range(4), range(2), range(3), range(3), range(3)):
        src = (2 - d, 2 - h, 2 - w) if flipped else (d, h, w)
        assert out[o, i, d, h, w] == kernel[src + (i, o)]


def test_keras_conv_kernel_channels_first_flipped():
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal((4, 2, 3, 3, 3)).astype(np.float32)
    out = layouts.keras_conv_kernel(kernel, channels_first=True, flipped=True)
    for o, i, d, h, w in itertools.product(range(4), range(2), range(3), range(3), range(3)):
        assert out[o, i, d, h, w] == kernel[o, i, 2 - d, 2 - h, 2 - w]
    assert np.array_equal(layouts.keras_conv_kernel(kernel, channels_first=True, flipped=False),
                          kernel)


def test_flipping_turns_convolution_into_cross_correlation():
    """Theano convolves: conv(x, k) == cross-correlation(x, flip(k)), which is why Theano
    kernels are flipped back."""
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.standard_normal((1, 2, 5, 6, 7)).astype(np.float32))
    kernel = rng.standard_normal((3, 3, 3, 2, 1)).astype(np.float32)  # Keras (kD, kH, kW, in, out)
    # True convolution written out directly from its definition, 'same' padding.
    padded = np.pad(x.numpy()[0], ((0, 0), (1, 1), (1, 1), (1, 1)))
    expected = np.zeros((5, 6, 7), np.float32)
    for t, r, c in itertools.product(range(5), range(6), range(7)):
        for i, d, h, w in itertools.product(range(2), range(3), range(3), range(3)):
            expected[t, r, c] += padded[i, t + 2 - d, r + 2 - h, c + 2 - w] * kernel[d, h, w, i, 0]
    weight = layouts.keras_conv_kernel(kernel, channels_first=False, flipped=True)
    actual = torch.nn.functional.conv3d(x, torch.from_numpy(weight), padding=1)[0, 0].numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_keras_dense_kernel_is_transposed():
    kernel = np.arange(6, dtype=np.float32).reshape(2, 3)  # (in, out)
    assert layouts.keras_dense_kernel(kernel).tolist() == [[0, 3], [1, 4], [2, 5]]


def test_fc6_columns_from_thwc_index_by_index():
    c, t, h, w = 3, 2, 2, 3
    n_in = c * t * h * w
    weight = np.arange(2 * n_in, dtype=np.float32).reshape(2, n_in)  # columns in THWC order
    out = layouts.fc6_columns_from_thwc(weight, (c, t, h, w))
    for ci, ti, hi, wi in itertools.product(range(c), range(t), range(h), range(w)):
        cthw = ((ci * t + ti) * h + hi) * w + wi
        thwc = ((ti * h + hi) * w + wi) * c + ci
        assert (out[:, cthw] == weight[:, thwc]).all()


def test_fc6_columns_from_thwc_computes_the_same_linear_layer():
    """A Keras fc6 applied to a channels-last flatten equals ours on a channels-first one.

    Both products sum the same 8192 terms in different orders, so they differ only by
    rounding: in float64 each is within K * u * sum|a * b| of the exact sum (K terms,
    unit roundoff u = 2**-53), a bound far below what a wrong column order gives.
    """
    rng = np.random.default_rng(3)
    pool5 = torch.from_numpy(rng.standard_normal((2, 512, 1, 4, 4)))
    keras_weight = torch.from_numpy(rng.standard_normal((8192, 5)).astype(np.float32))
    channels_last = pool5.permute(0, 2, 3, 4, 1).reshape(2, -1)
    keras_out = channels_last @ keras_weight.double()
    ours = torch.from_numpy(
        layouts.fc6_columns_from_thwc(layouts.keras_dense_kernel(keras_weight.numpy())))
    assert ours.dtype == torch.float32  # the conversion itself is exact: a permutation
    our_out = pool5.flatten(1) @ ours.double().T
    k = keras_weight.shape[0]
    bound = 2 * k * 2.0 ** -53 * (channels_last.abs() @ keras_weight.double().abs())
    assert ((our_out - keras_out).abs() <= bound).all()
    wrong = pool5.flatten(1) @ keras_weight.double()  # columns left in Keras order
    assert not ((wrong - keras_out).abs() <= bound).all()
    with pytest.raises(ValueError):
        layouts.fc6_columns_from_thwc(np.zeros((4, 100), np.float32))


@pytest.mark.parametrize("key, ours", [
    ("backbone.conv1a.conv.weight", "conv1a.weight"),
    ("backbone.conv5b.conv.bias", "conv5b.bias"),
    ("backbone.fc6.weight", "fc6.weight"),
    ("backbone.fc7.bias", "fc7.bias"),
    ("module.backbone.conv2a.conv.weight", "conv2a.weight"),
    ("cls_head.fc_cls.weight", None),
    ("backbone.conv1a.bn.weight", None),
])
def test_mmaction2_keys(key, ours):
    assert layouts.mmaction2_key(key) == ours


@pytest.mark.parametrize("key, ours", [
    ("conv1.weight", "conv1a.weight"), ("conv2.bias", "conv2a.bias"),
    ("conv3a.weight", "conv3a.weight"), ("fc8.bias", "fc8.bias"),
    ("conv1a.weight", None), ("pool1.weight", None), ("fc6.running_mean", None),
])
def test_pickle_keys(key, ours):
    assert layouts.pickle_key(key) == ours


@pytest.mark.parametrize("backend, names, expected", [
    ("theano", ["conv1/kernel:0"], "theano"),            # the attribute wins
    ("tensorflow", ["conv1_W"], "tensorflow"),
    ("cntk", [], "tensorflow"),                          # only Theano flips
    (None, ["conv1_W:0", "conv1_b:0"], "tensorflow"),    # Keras 1 on TensorFlow
    (None, ["conv1/kernel:0"], "tensorflow"),
    (None, ["conv1_W", "conv1_b"], "theano"),            # Keras 1 on Theano
    (None, ["conv1/kernel", "conv1/bias"], "theano"),
    (None, ["param_0", "param_1"], None),                # Keras 0.x: no evidence
    (None, [], None),
    (None, ["conv1_W", "conv1_b:0"], None),              # contradictory
])
def test_keras_backend_from_evidence(backend, names, expected):
    assert keras_backend_from_evidence(backend, names) == expected
