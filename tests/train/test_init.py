"""--init and --freeze-backbone: which tensors come from the file, which head is new."""

from __future__ import annotations

import pytest
import torch

from c3d_extract.data import kinetics400_classes
from c3d_extract.errors import WeightsError
from c3d_extract.models.registry import create_model, get_architecture
from c3d_extract.train.model_init import build_model, class_names_for_run, kept_head_class_names


def test_torchvision_format_r2plus1d_file_loads_with_a_new_head(tmp_path):
    # A torchvision-format file: a plain state dict under torchvision's names, 400 classes.
    torch.manual_seed(11)
    source = create_model("r2plus1d_18", num_classes=400)
    path = tmp_path / "r2plus1d_18-kinetics.pth"
    torch.save(source.state_dict(), path)
    model, notes = build_model(get_architecture("r2plus1d_18"), 5, init=str(path))
    own, theirs = model.state_dict(), source.state_dict()
    assert own["fc.weight"].shape == (5, 512)
    for name, tensor in theirs.items():
        if not name.startswith("fc."):
            assert torch.equal(own[name], tensor), name
    assert any("new fc head for 5 classes" in note for note in notes)
    assert model.training
    # The head is new for 5 classes: no names from the file; kept for 400: Kinetics-400's.
    arch = get_architecture("r2plus1d_18")
    assert kept_head_class_names(str(path), arch, 5) == ()
    assert kept_head_class_names(str(path), arch, 400) == kinetics400_classes()
    assert kept_head_class_names(str(tmp_path / "moved.pth"), arch, 400) == ()


def test_a_kept_heads_names_replace_the_datasets_only_when_they_are_the_same_classes():
    head = ("abseiling", "air drumming", "playing organ")
    assert class_names_for_run(("a", "b"), ()) == (("a", "b"), [])
    assert class_names_for_run(head, head) == (head, [])
    names, notes = class_names_for_run(("abseiling", "air_drumming", "Playing-Organ"), head)
    assert names == head and "recorded" in notes[0]
    names, notes = class_names_for_run(("abseiling", "bowling", "playing organ"), head)
    assert names == ("abseiling", "bowling", "playing organ")
    assert "1 of 3 differ; class 1 is 'bowling'" in notes[0]


def test_wrong_tensors_are_refused_by_name(tmp_path):
    torch.manual_seed(11)
    state = create_model("r2plus1d_18", num_classes=400).state_dict()
    state.pop("layer1.0.conv1.0.0.weight")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "damaged.pth"
    torch.save({"model": state}, path)  # torchvision's reference trainer wraps it so
    with pytest.raises(WeightsError, match="layer1.0.conv1.0.0.weight.*extra.weight"):
        build_model(get_architecture("r2plus1d_18"), 5, init=str(path))


def test_c3d_from_sports1m_weights_keeps_the_backbone_and_freezes_it(random_weights):
    model, notes = build_model(get_architecture("c3d"), 7, init="random",
                               freeze_backbone=True)
    own = model.state_dict()
    assert torch.equal(own["conv1a.weight"], random_weights.state_dict["conv1a.weight"])
    assert torch.equal(own["fc7.bias"], random_weights.state_dict["fc7.bias"])
    assert own["fc8.weight"].shape == (7, 4096)
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == ["fc8.bias", "fc8.weight"]
    assert any("frozen" in note for note in notes)
