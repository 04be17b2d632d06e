"""The pure layout transforms and name maps, each against a computation written differently."""

import itertools

import numpy as np
import pytest
import torch

from c3d_extract.weights import layouts


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


def test_keras_conv_kernel_channels_last():
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3, 3, 3, 2, 4)).astype(np.float32)  # kD kH kW in out
    out = layouts.keras_conv_kernel(kernel, channels_first=False)
    assert out.shape == (4, 2, 3, 3, 3)
    for o, i, d, h, w in itertools.product(range(4), range(2), range(3), range(3), range(3)):
        assert out[o, i, d, h, w] == kernel[d, h, w, i, o]
    assert np.array_equal(layouts.keras_conv_kernel(out, channels_first=True), out)


@pytest.mark.parametrize("order, source", [
    ("caffe", lambda d, h, w: (d, h, w)),
    ("kd-reversed", lambda d, h, w: (2 - d, h, w)),
    ("khkw-reversed", lambda d, h, w: (d, 2 - h, 2 - w)),
])
def test_kernel_to_caffe_order_index_by_index(order, source):
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal((4, 2, 3, 3, 3)).astype(np.float32)
    out = layouts.kernel_to_caffe_order(kernel, order)
    for o, i, d, h, w in itertools.product(range(4), range(2), range(3), range(3), range(3)):
        assert out[o, i, d, h, w] == kernel[(o, i) + source(d, h, w)]
    with pytest.raises(ValueError):
        layouts.kernel_to_caffe_order(kernel[0], order)


def test_theano_convolution_of_a_rotated_kernel_is_caffe_reversed_in_time():
    """SPEC 4.4: the Theano file holds Caffe's kernels with each kH x kW slice rotated by 180
    degrees; Theano's conv3d convolves (flips all three axes), so keras-model-zoo's model
    computes Caffe's cross-correlation with the kernels reversed in time only."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 5, 6))        # in, T, H, W (float64 throughout: the
    caffe = rng.standard_normal((1, 2, 3, 3, 3))  # 54-term sums then agree to ~1e-15)
    theano_file = np.rot90(caffe, 2, axes=(3, 4))
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (1, 1)))
    convolution = np.zeros((4, 5, 6))  # true convolution, from its definition
    for t, r, c in itertools.product(range(4), range(5), range(6)):
        for i, d, h, w in itertools.product(range(2), range(3), range(3), range(3)):
            convolution[t, r, c] += padded[i, t + 2 - d, r + 2 - h, c + 2 - w] * \
                theano_file[0, i, d, h, w]
    reversed_in_time = np.ascontiguousarray(caffe[:, :, ::-1])
    expected = torch.nn.functional.conv3d(torch.from_numpy(x)[None],
                                          torch.from_numpy(reversed_in_time), padding=1)[0, 0]
    np.testing.assert_allclose(convolution, expected.numpy(), rtol=0, atol=1e-12)
    # Read with the file's order declared, the file gives Caffe's kernel back exactly.
    assert np.array_equal(layouts.kernel_to_caffe_order(theano_file, "khkw-reversed"), caffe)


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


def test_fc6_columns_to_thwc_inverts_from_thwc():
    weight = np.arange(2 * 8192, dtype=np.float32).reshape(2, 8192)
    there = layouts.fc6_columns_to_thwc(weight)
    assert not np.array_equal(there, weight)
    assert np.array_equal(layouts.fc6_columns_from_thwc(there), weight)


@pytest.mark.parametrize("key, ours", [
    ("conv1a.conv.weight", "conv1a.weight"),
    ("fc6.weight", "fc6.weight"),
    ("conv1a.weight", None),
    ("fc6.conv.weight", None),
    ("backbone.conv1a.conv.weight", "conv1a.weight"),
    ("backbone.conv5b.conv.bias", "conv5b.bias"),
    ("backbone.fc6.weight", "fc6.weight"),
    ("backbone.fc7.bias", "fc7.bias"),
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
