"""``c3d-weights info``, ``convert`` and ``compare`` on R(2+1)D-18 files (torchvision's layout
and c3d-train's model files), and the Kinetics-400 names a 400-class torchvision file gets."""

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open

from c3d_extract.cli.weights import cli
from c3d_extract.data import kinetics400_classes
from c3d_extract.models.c3d import build_c3d
from c3d_extract.models.r2plus1d import build_r2plus1d_18
from c3d_extract.video.preprocess import KINETICS400_TORCHVISION
from c3d_extract.weights.compare import DIFFERENT, IDENTICAL, TRANSFORMED, compare_files
from c3d_extract.weights.model_file import save_model_file
from c3d_extract.weights.networks import load_model

pytestmark = pytest.mark.slow  # R(2+1)D-18 files of 31 M parameters, written and read


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], prog_name="c3d-weights")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("r21d")
    state = build_r2plus1d_18(num_classes=400, seed=3).state_dict()
    torchvision_file = folder / "r2plus1d_18.pth"
    torch.save(state, torchvision_file)  # as torchvision's published file is laid out
    other = folder / "other.pth"  # another network: some tensors differ
    changed = dict(state)
    for key in ("layer1.0.conv1.0.0.weight", "layer3.1.conv2.1.bias", "fc.weight"):
        changed[key] = state[key] + 0.01 * torch.randn(state[key].shape,
                                                       generator=torch.Generator().manual_seed(1))
    torch.save(changed, other)
    flipped = dict(state)
    flipped["layer2.0.conv1.0.0.weight"] = torch.flip(state["layer2.0.conv1.0.0.weight"], (4,))
    flipped_file = folder / "flipped.pth"
    torch.save(flipped, flipped_file)
    small = build_r2plus1d_18(num_classes=3, seed=5)
    model_file = folder / "model.safetensors"  # what c3d-train writes
    save_model_file(model_file, small, arch="r2plus1d_18", class_names=("a", "b", "c"),
                    clip_len=16, crop_size=112, preset=KINETICS400_TORCHVISION)
    model_file_2 = folder / "model2.safetensors"
    save_model_file(model_file_2, small, arch="r2plus1d_18", class_names=("a", "b", "c"),
                    clip_len=16, crop_size=112, preset=KINETICS400_TORCHVISION)
    c3d = folder / "c3d.safetensors"
    from safetensors.torch import save_file
    save_file(build_c3d(num_classes=3, seed=0).state_dict(), str(c3d))
    return {"tv": torchvision_file, "other": other, "flipped": flipped_file,
            "model": model_file, "model2": model_file_2, "c3d": c3d, "folder": folder}


def test_a_400_class_torchvision_file_carries_kinetics_names_and_torchvisions_preset(files):
    loaded = load_model(str(files["tv"]))
    assert loaded.class_names == kinetics400_classes()
    assert loaded.preset == KINETICS400_TORCHVISION and loaded.preset.offsets == (8, 30)
    info = run("info", files["tv"])
    assert info.exit_code == 0, info.output
    assert "classes: 400 (abseiling, air drumming," in info.output
    assert '"crop_rule": "round"' in info.output and '"resize_method": "torchvision"' in info.output


def test_convert_writes_a_model_file_that_loads_as_the_source(files):
    out = files["folder"] / "converted.safetensors"
    done = run("convert", files["tv"], "-o", out)
    assert done.exit_code == 0, done.output
    assert "torchvision (r2plus1d_18) -> safetensors model file" in done.output
    with safe_open(str(out), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["arch"] == "r2plus1d_18" and metadata["source_format"] == "torchvision"
    assert json.loads(metadata["class_names"]) == list(kinetics400_classes())
    assert json.loads(metadata["preprocessing"])["crop_rule"] == "round"
    source, converted = load_model(str(files["tv"])), load_model(str(out))
    assert converted.preset == source.preset and converted.class_names == source.class_names
    for key, value in source.model.state_dict().items():
        assert torch.equal(converted.model.state_dict()[key], value), key
    assert run("compare", files["tv"], out).exit_code == 0  # identical


def test_convert_with_labels_and_its_mistakes(files, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("x\ny\nz\n")
    out = tmp_path / "m.safetensors"
    assert run("convert", files["model"], "-o", out, "--labels", labels).exit_code == 0
    assert load_model(str(out)).class_names == ("x", "y", "z")
    wrong = run("convert", files["tv"], "-o", tmp_path / "w.safetensors", "--labels", labels)
    assert wrong.exit_code == 1 and "3 class names for a network with 400" in wrong.output
    order = run("convert", files["tv"], "-o", tmp_path / "o.safetensors", "--kernel-order",
                "caffe")
    assert order.exit_code == 2 and "C3D files only" in order.output
    assert not (tmp_path / "w.safetensors").exists() and not (tmp_path / "o.safetensors").exists()


def test_compare_reports_per_tensor_with_the_usual_exit_codes(files):
    same = run("compare", files["model"], files["model2"])
    assert same.exit_code == 0, same.output
    assert "architecture r2plus1d_18" in same.output and "stem.0.weight" in same.output
    assert "same network: all" in same.output

    flipped = run("compare", files["tv"], files["flipped"])
    assert flipped.exit_code == 3, flipped.output
    assert "kW reversed: layer2.0.conv1.0.0.weight" in flipped.output

    different = run("compare", files["tv"], files["other"])
    assert different.exit_code == 4 and "different networks" in different.output
    heads = run("compare", files["tv"], files["model"])  # 400 vs 3 classes
    assert heads.exit_code == 4 and "fc.weight" in heads.output
    architectures = run("compare", files["tv"], files["c3d"])
    assert architectures.exit_code == 4
    assert "A is r2plus1d_18, B is c3d" in architectures.output
    order = run("compare", files["tv"], files["model"], "--kernel-order-a", "caffe")
    assert order.exit_code == 2 and "C3D files only" in order.output


def test_compare_results_name_each_tensor(files):
    result = compare_files(str(files["tv"]), str(files["flipped"]))
    assert result.status == TRANSFORMED and result.arch_a == result.arch_b == "r2plus1d_18"
    by_name = {r.layer: r for r in result.layers}
    assert by_name["layer2.0.conv1.0.0.weight"].transform == "kW reversed"
    assert by_name["stem.1.running_var"].transform == "identity"
    assert len(result.layers) == len(torch.load(files["tv"], weights_only=True))
    assert compare_files(str(files["model"]), str(files["model2"])).status == IDENTICAL
    assert compare_files(str(files["tv"]), str(files["other"])).status == DIFFERENT


def test_predict_names_the_top_kinetics_class_and_labels_override(files, tmp_path):
    import numpy as np

    from c3d_extract.cli.predict import cli as predict_cli
    from c3d_extract.video.preprocess import prepare_frame
    from tests.support.videos import decode_rgb, write_video

    video = write_video(tmp_path / "bar.mp4", 16)  # one clip of 16 frames
    done = CliRunner().invoke(predict_cli, [str(video), "--weights", str(files["tv"]),
                                            "--json", "--decoder", "pyav", "--top-k", "2"],
                              prog_name="c3d-predict")
    assert done.exit_code == 0, done.output
    (prediction,) = json.loads(done.stdout)
    crops = np.stack([prepare_frame(f, KINETICS400_TORCHVISION) for f in decode_rgb(video)])
    model = load_model(str(files["tv"])).model
    with torch.inference_mode():
        logits = model(KINETICS400_TORCHVISION.normalise(torch.from_numpy(crops)[None]))
    top = int(logits.argmax())
    assert prediction["top"][0]["index"] == top
    assert prediction["top"][0]["name"] == kinetics400_classes()[top]
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"k{i}\n" for i in range(400)))
    again = CliRunner().invoke(predict_cli, [str(video), "--weights", str(files["tv"]),
                                             "--json", "--decoder", "pyav", "--labels",
                                             str(labels)], prog_name="c3d-predict")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)[0]["top"][0]["name"] == f"k{top}"


def test_a_torchvision_state_dict_inside_a_checkpoint_is_found(tmp_path):
    """``{"state_dict": ...}``, ``{"model": ...}`` (torchvision's reference trainer) and DDP's
    ``module.`` prefix are read as the plain state dict, as ``c3d-train --init`` reads them."""
    from c3d_extract.weights.networks import torchvision_r2plus1d_state_dict, unwrap_state_dict

    state = {name: torch.full((2,), float(i)) for i, name in enumerate(
        ("stem.0.weight", "stem.3.weight", "layer4.1.conv2.0.3.weight", "fc.weight",
         "fc.bias"))}
    wrapped = {
        "plain.pth": state,
        "state_dict.pth": {"state_dict": state, "epoch": 3},
        "model.pth": {"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3},
    }
    for name, content in wrapped.items():
        torch.save(content, tmp_path / name)
        found = torchvision_r2plus1d_state_dict(str(tmp_path / name))
        assert found is not None and found.keys() == state.keys(), name
        assert all(torch.equal(found[k], v) for k, v in state.items()), name
    assert unwrap_state_dict({"epoch": 3}) == {"epoch": 3}  # nothing to unwrap
    mixed = {"module.a": torch.zeros(1), "b": torch.zeros(1)}
    assert unwrap_state_dict(mixed) is mixed  # a prefix on some keys only is not DDP's
