"""Extraction and ``c3d-weights info`` with a model file of another architecture: R(2+1)D-18
descriptors against the network called directly on frames preprocessed here as torchvision
does (PyAV decode, float bilinear resize of the whole T x C x H x W stack rounded to uint8,
centre crop at torchvision's rounded offset, numpy normalisation with its constants)."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from c3d_extract.extraction.options import ExtractOptions
from c3d_extract.extraction.run import extract
from c3d_extract.models.r2plus1d import build_r2plus1d_18
from c3d_extract.store.read import read_attributes, read_clip_features, read_features
from c3d_extract.video.preprocess import KINETICS400_TORCHVISION
from c3d_extract.weights.model_file import save_model_file
from tests.support.videos import decode_rgb, write_video

pytestmark = pytest.mark.slow

CLIP_LEN = 4  # short clips keep R(2+1)D fast on a CPU
MEAN_RGB = np.array([0.43216, 0.394666, 0.37645])
STD_RGB = np.array([0.22803, 0.22145, 0.216989])


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    model = build_r2plus1d_18(num_classes=3, seed=11)
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_model_file(path, model, arch="r2plus1d_18", class_names=("a", "b", "c"),
                    clip_len=CLIP_LEN, crop_size=112, preset=KINETICS400_TORCHVISION)
    return path, model


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("videos") / "bar.mp4", 8)  # clips at 0, 2, 4


def torchvision_clip_input(rgb_frames: np.ndarray) -> np.ndarray:
    """(n, H, W, 3) RGB uint8 -> (3, n, 112, 112) float64: resize 128x171 (float bilinear,
    no antialiasing, rounded to uint8), centre crop at int(round(59 / 2)) = 30, [0, 1], minus
    mean, over std."""
    stack = torch.from_numpy(rgb_frames).permute(0, 3, 1, 2).to(torch.float32)
    resized = torch.nn.functional.interpolate(stack, size=(128, 171), mode="bilinear",
                                              align_corners=False, antialias=False)
    frames = torch.round(resized).to(torch.uint8).permute(0, 2, 3, 1).numpy()[:, 8:120, 30:142]
    x = (frames / 255.0 - MEAN_RGB) / STD_RGB
    return x.transpose(3, 0, 1, 2)


def test_r2plus1d_features_are_one_512_row_per_video_equal_to_a_direct_computation(
        model_file, video, tmp_path):
    path, model = model_file
    out = tmp_path / "feats.h5"
    summary = extract(str(video.parent), str(out), weights=str(path),
                      options=ExtractOptions(decoder="pyav", per_clip=True))
    assert summary.complete and summary.n_failed == 0
    ids, features = read_features(str(out), "avgpool")  # the default layer
    assert ids == ["bar.mp4"] and features.shape == (1, 512)
    attributes = read_attributes(str(out))
    assert attributes["layers"] == "avgpool" and attributes["clip_len"] == CLIP_LEN
    assert attributes["stride"] == CLIP_LEN // 2
    assert attributes["crop_rule"] == "round" and attributes["resize_method"] == "torchvision"

    x = torchvision_clip_input(decode_rgb(video))
    starts = [0, 2, 4]
    clips = torch.from_numpy(np.stack([x[:, s:s + CLIP_LEN] for s in starts]).astype(np.float32))
    with torch.inference_mode():
        direct = model.eval().extract(clips, ["avgpool"])["avgpool"].numpy().astype(np.float64)
    _, clip_starts, per_clip = read_clip_features(str(out), "avgpool")
    assert list(clip_starts) == starts
    # float32 through ~18 layers of <= 3456 products each: sqrt(K) * eps per layer, relative
    # to the features' magnitude (the uint8 resize is the same on both sides).
    bound = 18 * np.sqrt(3456) * np.finfo(np.float32).eps * 8 * np.abs(direct).max()
    assert np.abs(per_clip - direct).max() <= bound
    mean = direct.mean(0)
    assert np.abs(features[0] - mean / np.linalg.norm(mean)).max() <= 1e-5
    again = extract(str(video.parent), str(out), weights=str(path),
                    options=ExtractOptions(decoder="pyav", per_clip=True))
    assert again.n_skipped_existing == 1 and again.n_processed == 0  # resumed, not redone


def run_cli(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=600)


def test_cli_logits_layer_and_layers_the_model_lacks(model_file, video, tmp_path):
    path, _ = model_file
    out = tmp_path / "logits.h5"
    done = run_cli("c3d_extract", str(video.parent), "-o", str(out), "--weights", str(path),
                   "--layer", "logits,prob", "--decoder", "pyav", "--quiet")
    assert done.returncode == 0, done.stderr
    for layer in ("logits", "prob"):
        ids, values = read_features(str(out), layer)
        assert ids == ["bar.mp4"] and values.shape == (1, 3)
    wrong = run_cli("c3d_extract", str(video), "-o", str(tmp_path / "w.h5"), "--weights",
                    str(path), "--layer", "fc6", "--decoder", "pyav")
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert "r2plus1d_18" in wrong.stderr and "avgpool, logits, prob" in wrong.stderr
    assert not (tmp_path / "w.h5").exists()


def test_weights_info_describes_a_model_file(model_file):
    path, _ = model_file
    info = run_cli("c3d_extract.cli.weights", "info", str(path))
    assert info.returncode == 0, info.stderr
    lines = info.stdout.splitlines()
    assert "architecture: r2plus1d_18" in lines and "format: c3d-extract.model" in lines
    assert "classes: 3 (a, b, c)" in lines and f"clip length: {CLIP_LEN}" in lines
    assert "crop size: 112" in lines and "parameters: 31,301,664" in lines
    assert "extractable layers: avgpool, logits, prob (default avgpool)" in lines
    assert any(line.startswith("preprocessing: ") and '"std": [0.22803' in line
               for line in lines)


def test_extract_help_lists_every_architectures_layers():
    from c3d_extract.cli.extract import LAYER_HELP
    from c3d_extract.models.registry import architecture_names, get_architecture

    for name in architecture_names():
        arch = get_architecture(name)
        assert f"{arch.default_layer} (default" in LAYER_HELP
        assert all(layer in LAYER_HELP for layer in arch.layers)


def test_predict_takes_class_names_and_clip_length_from_a_model_file(model_file, video):
    import json

    path, model = model_file
    done = run_cli("c3d_extract.cli.predict", str(video), "--weights", str(path), "--json",
                   "--decoder", "pyav", "--top-k", "3")
    assert done.returncode == 0, done.stderr
    (prediction,) = json.loads(done.stdout)
    assert prediction["n_clips"] == 3  # 8 frames, clips of 4 at stride 2
    x = torchvision_clip_input(decode_rgb(video))
    clips = torch.from_numpy(np.stack([x[:, s:s + CLIP_LEN] for s in (0, 2, 4)]).astype(np.float32))
    with torch.inference_mode():
        expected = torch.softmax(model.eval()(clips).double(), 1).mean(0).numpy()
    found = {t["name"]: (t["index"], t["probability"]) for t in prediction["top"]}
    assert {name: index for name, (index, _) in found.items()} == {"a": 0, "b": 1, "c": 2}
    assert all(abs(p - expected[i]) <= 1e-5 for i, p in found.values())
