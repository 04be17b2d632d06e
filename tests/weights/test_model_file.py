"""model.safetensors: written atomically, read back exactly, refused with a clear message when
its metadata or tensors are wrong; torchvision's own R(2+1)D-18 file format is recognised."""

import json
from collections import OrderedDict

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from c3d_extract.errors import ModelFileError, WeightsError
from c3d_extract.models.r2plus1d import build_r2plus1d_18
from c3d_extract.video.preprocess import KINETICS400_TORCHVISION, SPORTS1M
from c3d_extract.weights.model_file import read_model_file, save_model_file
from c3d_extract.weights.networks import describe_model, load_model
from tests.support.r2plus1d_reference import synthetic_state_dict

CLASSES = ("brush_hair", "cartwheel", "catch")


@pytest.fixture(scope="module")
def r21d():
    model = build_r2plus1d_18(num_classes=3, seed=3)
    # Non-trivial BatchNorm statistics, so that losing a buffer would show.
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0)
            elif name.endswith("running_mean"):
                buffer.normal_(0, 0.1)
            elif name.endswith("num_batches_tracked"):
                buffer.fill_(7)
    return model


@pytest.fixture(scope="module")
def r21d_file(r21d, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_model_file(path, r21d, arch="r2plus1d_18", class_names=CLASSES, clip_len=8,
                    crop_size=56, preset=KINETICS400_TORCHVISION,
                    extra_metadata={"train_args": json.dumps({"lr": 1e-4})})
    return path


def test_file_holds_the_state_dict_and_the_contract_metadata(r21d, r21d_file):
    # Read back with safetensors itself, not with the code under test.
    with safe_open(str(r21d_file), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    assert metadata["format"] == "c3d-extract.model" and metadata["format_version"] == "1"
    assert metadata["arch"] == "r2plus1d_18" and metadata["num_classes"] == "3"
    assert json.loads(metadata["class_names"]) == list(CLASSES)
    assert (metadata["clip_len"], metadata["crop_size"]) == ("8", "56")
    assert json.loads(metadata["preprocessing"]) == KINETICS400_TORCHVISION.to_dict()
    assert json.loads(metadata["train_args"]) == {"lr": 1e-4}
    expected = r21d.state_dict()
    assert list(tensors) == sorted(expected)  # safetensors stores names sorted
    assert all(torch.equal(tensors[k], v) for k, v in expected.items())


def test_read_and_build_give_the_same_network(r21d, r21d_file):
    read = read_model_file(str(r21d_file))
    assert (read.arch, read.class_names, read.clip_len, read.crop_size) == (
        "r2plus1d_18", CLASSES, 8, 56)
    assert read.preset == KINETICS400_TORCHVISION and read.metadata["train_args"]
    built = read.build()
    assert not built.training
    clips = torch.randn(1, 3, 4, 32, 32)
    with torch.inference_mode():
        assert torch.equal(built(clips), r21d.eval()(clips))


def test_load_model_takes_arch_classes_clip_len_and_preset_from_the_file(r21d_file):
    loaded = load_model(str(r21d_file))
    assert (loaded.arch, loaded.clip_len, loaded.crop_size, loaded.class_names) == (
        "r2plus1d_18", 8, 56, CLASSES)
    # The file's crop size is the centre crop used on the resized frames.
    assert loaded.preset.crop == 56 and loaded.preset.std == KINETICS400_TORCHVISION.std
    assert loaded.layers == ("avgpool", "logits", "prob") and loaded.default_layer == "avgpool"


def test_nothing_is_left_behind_when_writing_fails(r21d, tmp_path):
    with pytest.raises(ValueError):
        save_model_file(tmp_path / "m.safetensors", r21d, arch="r2plus1d_18",
                        class_names=CLASSES, clip_len=8, crop_size=56,
                        preset=KINETICS400_TORCHVISION, extra_metadata={"arch": "c3d"})
    with pytest.raises(ValueError, match="2 class names for a model with 3 classes"):
        save_model_file(tmp_path / "m.safetensors", r21d, arch="r2plus1d_18",
                        class_names=CLASSES[:2], clip_len=8, crop_size=56,
                        preset=KINETICS400_TORCHVISION)
    assert list(tmp_path.iterdir()) == []


def _rewrite(source, target, *, metadata_changes=(), drop=(), tensors=None):
    with safe_open(str(source), framework="pt") as handle:
        metadata = dict(handle.metadata())
        state = {k: handle.get_tensor(k) for k in handle.keys()}
    for key, value in dict(metadata_changes).items():
        if value is None:
            metadata.pop(key)
        else:
            metadata[key] = value
    for key in drop:
        state.pop(key)
    state.update(tensors or {})
    save_file(state, str(target), metadata=metadata)
    return str(target)


@pytest.mark.parametrize("changes, message", [
    ({"format_version": "2"}, "format version '2' is not supported"),
    ({"arch": "resnet50"}, "unknown architecture 'resnet50'"),
    ({"clip_len": None}, "lacks clip_len"),
    ({"class_names": "not json"}, "unreadable model file metadata"),
    ({"class_names": json.dumps(["a", "b"])}, "2 class names for num_classes = 3"),
    ({"preprocessing": json.dumps({"channel_order": "YUV"})}, "unreadable"),
])
def test_wrong_or_missing_metadata_is_named(r21d_file, tmp_path, changes, message):
    path = _rewrite(r21d_file, tmp_path / "bad.safetensors", metadata_changes=changes)
    with pytest.raises(ModelFileError, match=message):
        read_model_file(path)


def test_missing_or_misshapen_tensors_are_named(r21d_file, tmp_path):
    missing = _rewrite(r21d_file, tmp_path / "missing.safetensors",
                       drop=["layer3.1.conv2.1.running_var"])
    with pytest.raises(ModelFileError, match="missing layer3.1.conv2.1.running_var"):
        read_model_file(missing)
    shape = _rewrite(r21d_file, tmp_path / "shape.safetensors",
                     tensors={"fc.weight": torch.zeros(3, 256)})
    with pytest.raises(ModelFileError, match=r"fc.weight has shape \(3, 256\)"):
        read_model_file(shape)


def test_files_that_are_not_model_files(tmp_path):
    with pytest.raises(WeightsError, match="no model file"):
        read_model_file(str(tmp_path / "nowhere.safetensors"))
    other = tmp_path / "c3d.safetensors"
    save_file({"x": torch.zeros(2)}, str(other), metadata={"format": "c3d-extract-weights/1"})
    with pytest.raises(ModelFileError, match="not a c3d-extract model file"):
        read_model_file(str(other))


def test_c3d_model_file_round_trip(tmp_path):
    from c3d_extract.models.c3d import build_c3d

    model = build_c3d(num_classes=2, seed=5)
    path = tmp_path / "c3d.safetensors"
    save_model_file(path, model, arch="c3d", class_names=("a", "b"), clip_len=16,
                    crop_size=112, preset=SPORTS1M)
    loaded = load_model(str(path))
    assert loaded.arch == "c3d" and loaded.default_layer == "fc6"
    assert loaded.class_names == ("a", "b") and loaded.preset == SPORTS1M
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("legacy", [False, True])
def test_a_torchvision_state_dict_file_loads_strictly(tmp_path, legacy):
    # As torchvision's checkpoints are written: torch.save of the state dict OrderedDict
    # (r2plus1d_18-91a641e6.pth predates the zip format: legacy=True writes that form).
    state = OrderedDict(synthetic_state_dict())
    path = tmp_path / "r2plus1d_18-91a641e6.pth"
    torch.save(state, str(path), _use_new_zipfile_serialization=not legacy)
    loaded = load_model(str(path))
    assert loaded.arch == "r2plus1d_18" and loaded.source_format == "torchvision"
    assert loaded.num_classes == 400 and loaded.preset == KINETICS400_TORCHVISION
    ours = loaded.model.state_dict()
    assert list(ours) == list(state)
    assert all(torch.equal(ours[k], v) for k, v in state.items())
    info = describe_model(str(path))
    assert info.parameter_count == 31_505_325 and info.num_classes == 400
    assert info.default_layer == "avgpool"


def test_a_torchvision_file_with_a_wrong_tensor_is_refused(tmp_path):
    state = OrderedDict(synthetic_state_dict())
    state["layer2.0.downsample.1.running_var"] = torch.ones(64)
    path = tmp_path / "r21d.pth"
    torch.save(state, str(path))
    with pytest.raises(ModelFileError, match="layer2.0.downsample.1.running_var"):
        load_model(str(path))
