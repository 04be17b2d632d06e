"""R(2+1)D-18 against torchvision's: tensor names and shapes, parameter counts, and outputs
on seeded weights compared with a golden file written by torchvision itself."""

import numpy as np
import pytest
import torch

from c3d_extract.models.architecture import parameter_count
from c3d_extract.models.c3d import build_c3d
from c3d_extract.models.r2plus1d import build_r2plus1d_18, mid_planes
from c3d_extract.models.registry import architecture_names, create_model, get_architecture
from tests.support.r2plus1d_reference import GOLDEN, golden_input, synthetic_state_dict, tensor_list


@pytest.fixture(scope="module")
def model():
    return build_r2plus1d_18(num_classes=400, seed=0)


def test_tensor_names_and_shapes_are_torchvisions(model):
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert list(ours) == list(tensor_list())  # same names, same order
    assert ours == tensor_list()


def test_parameter_counts():
    with torch.device("meta"):
        assert parameter_count(create_model("r2plus1d_18", num_classes=400)) == 31_505_325
        assert parameter_count(create_model("c3d", num_classes=101)) == 78_409_573


def test_mid_planes_are_the_spec_values():
    # SPEC section 9: 144, 230, 288, 460, 576, 921, 1152.
    pairs = [(64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512)]
    assert [mid_planes(a, b) for a, b in pairs] == [144, 230, 288, 460, 576, 921, 1152]


def test_outputs_equal_torchvisions_on_the_same_weights():
    golden = np.load(GOLDEN)
    ours = build_r2plus1d_18(num_classes=400)
    ours.load_state_dict(synthetic_state_dict(), strict=True)
    with torch.inference_mode():
        out = ours.extract(golden_input(), ["avgpool", "logits", "prob"])
    # float32 error grows about sqrt(K) * eps per layer (K <= 1152 * 3 inputs per output)
    # over the 18 layers of the deepest path; relative to the outputs' magnitude.
    eps = np.finfo(np.float32).eps
    bound = 18 * np.sqrt(1152 * 3) * eps * 8
    for name in ("avgpool", "logits"):
        expected = golden[name]
        scale = np.abs(expected).max()
        assert out[name].shape == expected.shape
        assert np.abs(out[name].numpy() - expected).max() <= bound * scale, name
    assert np.array_equal(out["logits"].argmax(1).numpy(), golden["logits"].argmax(1))
    assert torch.allclose(out["prob"].sum(1), torch.ones(2))


def test_forward_gives_logits_and_extract_computes_only_what_is_asked(model):
    clips = torch.randn(1, 3, 4, 32, 32)
    with torch.inference_mode():
        logits = model(clips)
        out = model.extract(clips, ["avgpool"])
    assert logits.shape == (1, 400) and set(out) == {"avgpool"} and out["avgpool"].shape == (1, 512)
    with pytest.raises(ValueError, match="fc6"):
        model.extract(clips, ["fc6"])


def test_registry_entries():
    assert set(architecture_names()) >= {"c3d", "r2plus1d_18"}
    r21d = get_architecture("r2plus1d_18")
    assert (r21d.clip_len, r21d.crop_size, r21d.default_layer, r21d.fixed_input,
            r21d.head_name) == (16, 112, "avgpool", False, "fc")
    assert r21d.layers == ("avgpool", "logits", "prob")
    assert r21d.preset.channel_order == "RGB" and r21d.preset.scale == 1 / 255
    assert r21d.preset.mean == (0.43216, 0.394666, 0.37645)
    assert r21d.preset.std == (0.22803, 0.22145, 0.216989)
    c3d = get_architecture("c3d")
    assert (c3d.default_layer, c3d.head_name, c3d.fixed_input) == ("fc6", "fc8", True)
    model = create_model("r2plus1d_18", num_classes=3)
    assert not model.training and model.head_name == "fc" and model.fc.out_features == 3


def test_c3d_forward_gives_logits_and_dropout_acts_only_in_training():
    model = build_c3d(num_classes=5, seed=0)
    clips = torch.randn(1, 3, 16, 112, 112) * 50
    with torch.inference_mode():
        out = model.extract(clips, ["fc8", "prob"])
        assert torch.equal(model(clips), out["fc8"])
        assert torch.allclose(out["prob"], torch.softmax(out["fc8"], 1))
        model.train()
        torch.manual_seed(0)
        first = model(clips)
        torch.manual_seed(1)
        second = model(clips)
    assert not torch.equal(first, second)  # dropout after fc6 and fc7
    assert model.head_name == "fc8" and "dropout" not in str(list(model.state_dict()))
