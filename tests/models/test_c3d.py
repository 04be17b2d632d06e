"""The network's structure, against the SPEC table and hand-computed pooling."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from c3d_extract.models.architecture import parameter_count
from c3d_extract.models.c3d import C3D, POOL_AFTER, build_c3d


def test_parameter_counts_match_the_paper_table():
    model = C3D()
    assert parameter_count(model) == 79_991_015
    up_to_fc6 = sum(p.numel() for name, p in model.named_parameters()
                    if not name.startswith(("fc7", "fc8")))
    assert up_to_fc6 == 61_214_464


def test_pool5_rounds_up_and_clips_the_last_window_like_caffe():
    x = torch.arange(2 * 7 * 7, dtype=torch.float32).reshape(1, 1, 2, 7, 7)
    x[0, 0, 1] = -x[0, 0, 1]  # second frame smaller, so the temporal max is frame 0
    kernel, ceil = POOL_AFTER["conv5b"]
    pooled = F.max_pool3d(x, kernel, kernel, ceil_mode=ceil)
    # Windows [0,1] [2,3] [4,5] [6] along each spatial axis, by hand:
    frame = np.arange(49, dtype=np.float32).reshape(7, 7)
    windows = [(0, 2), (2, 4), (4, 6), (6, 7)]
    expected = np.array([[frame[a:b, c:d].max() for c, d in windows] for a, b in windows])
    assert pooled.shape == (1, 1, 1, 4, 4)
    assert np.array_equal(pooled[0, 0, 0].numpy(), expected)
    # The symmetric-padding variant of several ports gives other numbers.
    padded = F.max_pool3d(x, 2, 2, padding=(0, 1, 1))
    assert not np.array_equal(padded[0, 0, 0].numpy(), expected)


def test_intermediate_shapes_follow_the_spec_table():
    model = build_c3d(seed=0)
    shapes = {}
    x = torch.zeros(1, 3, 16, 112, 112)
    for name in ("conv1a", "conv2a", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b"):
        x = F.relu(getattr(model, name)(x))
        if name in POOL_AFTER:
            kernel, ceil = POOL_AFTER[name]
            x = F.max_pool3d(x, kernel, kernel, ceil_mode=ceil)
            shapes[name] = tuple(x.shape[1:])
    assert shapes == {
        "conv1a": (64, 16, 56, 56), "conv2a": (128, 8, 28, 28), "conv3b": (256, 4, 14, 14),
        "conv4b": (512, 2, 7, 7), "conv5b": (512, 1, 4, 4),
    }


@pytest.fixture(scope="module")
def outputs():
    model = build_c3d(seed=1)
    clips = torch.randn(2, 3, 16, 112, 112) * 50
    with torch.inference_mode():
        return model, clips, model.extract(clips, ["pool5", "fc6", "fc7", "fc8", "prob"])


def test_layer_outputs(outputs):
    model, clips, out = outputs
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "pool5": (2, 8192), "fc6": (2, 4096), "fc7": (2, 4096), "fc8": (2, 487), "prob": (2, 487)}
    # fc6 and fc7 are post-ReLU; prob is a softmax of fc8.
    assert out["fc6"].min() >= 0 and out["fc7"].min() >= 0
    assert torch.allclose(out["prob"].sum(1), torch.ones(2), atol=1e-5)
    assert torch.allclose(out["prob"], torch.softmax(out["fc8"], 1), atol=1e-6)


def test_fc6_reads_pool5_in_c_t_h_w_order(outputs):
    model, clips, out = outputs
    pool5 = out["pool5"].reshape(2, 512, 1, 4, 4)
    # Caffe's InnerProduct flattens the bottom blob (N, C, T, H, W) row-major.
    with torch.inference_mode():
        manual = torch.relu(pool5.reshape(2, -1) @ model.fc6.weight.T + model.fc6.bias)
    assert torch.allclose(manual, out["fc6"], atol=1e-4)


def test_only_the_needed_layers_are_computed(outputs):
    model, clips, _ = outputs
    with torch.inference_mode():
        assert set(model.extract(clips[:1], ["fc6"])) == {"fc6"}


def test_network_without_classifier_refuses_prob():
    model = C3D(num_classes=0)
    assert model.available_layers == ("pool5", "fc6", "fc7")
    with pytest.raises(ValueError, match="prob"):
        model.extract(torch.zeros(1, 3, 16, 112, 112), ["prob"])


def test_seeded_networks_are_reproducible():
    a, b = build_c3d(seed=5), build_c3d(seed=5)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_forward_equals_a_plain_functional_c3d():
    """The module against C3D written out here with F.conv3d and F.max_pool3d
    (ceil_mode only for pool5), using the module's own weights."""
    model = build_c3d(seed=3)
    weights = {k: v for k, v in model.state_dict().items()}
    clips = torch.randn(1, 3, 16, 112, 112) * 60
    x = clips
    pools = {"conv1a": (1, 2, 2), "conv2a": 2, "conv3b": 2, "conv4b": 2, "conv5b": 2}
    with torch.inference_mode():
        for name in ("conv1a", "conv2a", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a",
                     "conv5b"):
            x = torch.relu(F.conv3d(x, weights[f"{name}.weight"], weights[f"{name}.bias"],
                                    padding=1))
            if name in pools:
                x = F.max_pool3d(x, pools[name], pools[name], ceil_mode=name == "conv5b")
        pool5 = x.reshape(1, -1)
        fc6 = torch.relu(F.linear(pool5, weights["fc6.weight"], weights["fc6.bias"]))
        fc7 = torch.relu(F.linear(fc6, weights["fc7.weight"], weights["fc7.bias"]))
        prob = torch.softmax(F.linear(fc7, weights["fc8.weight"], weights["fc8.bias"]), 1)
        out = model.extract(clips, ["pool5", "fc6", "fc7", "prob"])
    assert torch.allclose(out["pool5"], pool5, atol=1e-4)
    assert torch.allclose(out["fc6"], fc6, atol=1e-4)
    assert torch.allclose(out["fc7"], fc7, atol=1e-4)
    assert torch.allclose(out["prob"], prob, atol=1e-6)
