"""Predictions: top-k of the mean of prob over clips, checked against a forward pass written
here (PyAV decode, OpenCV resize, crop, BGR, mean) on the same real video."""

import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from c3d_extract.cli.predict import cli, text_lines
from c3d_extract.errors import LabelsError
from c3d_extract.predict.classify import ClassScore, Prediction, class_names_for, top_classes
from c3d_extract.weights.loading import random_weights
from tests.support.weights_support import MEAN_BGR, source_model, write_video

N_FRAMES = 24  # clips start at 0 and 8


def test_top_classes_hand_example():
    probabilities = np.array([0.1, 0.4, 0.05, 0.4, 0.05])
    assert top_classes(probabilities, 3, ["a", "b", "c", "d", "e"]) == (
        ClassScore(1, "b", 0.4), ClassScore(3, "d", 0.4), ClassScore(0, "a", 0.1))
    assert [s.name for s in top_classes(probabilities, 2)] == ["class 1", "class 3"]
    assert len(top_classes(probabilities, 10)) == 5


def test_class_names_must_match_the_classes():
    weights = random_weights(num_classes=4)
    assert class_names_for(weights, ["a", "b", "c", "d"]) == ("a", "b", "c", "d")
    assert class_names_for(weights) == ()
    with pytest.raises(LabelsError, match="3 class names"):
        class_names_for(weights, ["a", "b", "c"])


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("videos") / "game.mp4"
    write_video(str(path), n_frames=N_FRAMES)
    return path


@pytest.fixture(scope="module")
def decisive_model():
    """A seeded C3D whose fc8 is scaled up so its classes are far apart."""
    model = source_model(num_classes=7)
    with torch.no_grad():
        model.fc8.weight.mul_(3000.0)
    return model


@pytest.fixture(scope="module")
def weights_file(decisive_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "decisive.safetensors"
    save_file({k: v.contiguous() for k, v in decisive_model.state_dict().items()}, str(path))
    return path


def _expected_probabilities(model, video_path):
    import av
    import cv2

    frames = []
    with av.open(str(video_path)) as container:
        for frame in container.decode(video=0):
            resized = cv2.resize(frame.to_ndarray(format="rgb24"), (171, 128),
                                 interpolation=cv2.INTER_LINEAR)
            frames.append(resized[8:120, 29:141, ::-1].astype(np.float32)
                          - np.asarray(MEAN_BGR, np.float32))
    frames = np.stack(frames)
    clips = [frames[start:start + 16] for start in (0, 8)]
    batch = torch.from_numpy(np.stack(clips).transpose(0, 4, 1, 2, 3).copy())
    with torch.no_grad():
        prob = model.extract(batch, ["prob"])["prob"].numpy()
    return prob.mean(axis=0)


def test_predict_cli_json(decisive_model, weights_file, video, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"sport-{n}\n" for n in range(7)))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    expected = _expected_probabilities(decisive_model, video)
    order = np.argsort(-expected)[:3]
    assert expected[order[0]] - expected[order[1]] > 1e-3  # the ranking is not a near tie
    result = CliRunner().invoke(cli, [str(video), str(broken), "--weights", str(weights_file),
                                      "--labels", str(labels), "--top-k", "3", "--json",
                                      "--decoder", "pyav", "--batch-size", "2"],
                                prog_name="c3d-predict")
    assert result.exit_code == 3, result.output  # one video could not be decoded
    prediction, failure = json.loads(result.stdout)
    assert prediction["id"] == os.path.normpath(str(video)) and prediction["n_clips"] == 2
    assert [entry["index"] for entry in prediction["top"]] == order.tolist()
    assert [entry["name"] for entry in prediction["top"]] == [f"sport-{i}" for i in order]
    np.testing.assert_allclose([entry["probability"] for entry in prediction["top"]],
                               expected[order], rtol=1e-4, atol=1e-5)
    assert failure["id"] == os.path.normpath(str(broken))
    assert failure["status"] == "error" and failure["error"] and failure["top"] == []


def test_text_lines():
    done = Prediction("a.mp4", "ok", n_clips=1, top=(ClassScore(367, "basketball", 0.75),
                                                     ClassScore(2, "golf", 0.125)))
    assert text_lines(done) == ["a.mp4 (1 clip)", "  1. basketball  0.7500",
                                "  2. golf        0.1250"]
    assert text_lines(Prediction("b.mp4", "error", "cannot decode")) == [
        "b.mp4: error: cannot decode"]


def test_predict_without_fc8_is_a_usage_error(decisive_model, video, tmp_path):
    path = tmp_path / "backbone.safetensors"
    state = {k: v.contiguous() for k, v in decisive_model.state_dict().items()
             if not k.startswith("fc8")}
    save_file(state, str(path))
    result = CliRunner().invoke(cli, [str(video), "--weights", str(path)],
                                prog_name="c3d-predict")
    assert result.exit_code == 2 and "no fc8" in result.output


def test_help():
    result = CliRunner().invoke(cli, ["--help"], prog_name="c3d-predict")
    assert result.exit_code == 0 and "Usage: c3d-predict" in result.output
    assert "--top-k" in result.output and "Examples" in result.output


def test_predict_refuses_a_truncated_video_and_a_text_file(weights_file, tmp_path):
    from tests.support.videos import write_video as write_coded

    whole = write_coded(tmp_path / "whole.avi", 96, codec="mpeg4")
    data = whole.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[:len(data) // 3])
    text = tmp_path / "notes.txt"
    text.write_text("shopping list\nmilk, eggs\n" * 20)
    result = CliRunner().invoke(cli, [str(cut), str(text), "--weights", str(weights_file),
                                      "--json", "--backend", "torch", "--batch-size", "2"],
                                prog_name="c3d-predict")
    assert result.exit_code == 3, result.output
    truncated, not_video = json.loads(result.stdout)
    assert truncated["status"] == "error" and truncated["top"] == []
    assert truncated["error"].startswith("truncated: ") and "of 96 frames decoded" in \
        truncated["error"]
    assert not_video["error"] == "notes.txt: not a video (FFmpeg reads it as tty/ansi text)"
    # Let through with --allow-damaged, the damage is still said, in the plain output too.
    result = CliRunner().invoke(cli, [str(cut), "--weights", str(weights_file), "-q", "-k", "1",
                                      "--allow-damaged", "--backend", "torch",
                                      "--batch-size", "2"], prog_name="c3d-predict")
    assert result.exit_code == 0, result.output
    assert "cut.avi: truncated: " in result.stderr and " of 96 frames decoded" in result.stderr
    assert "1. " in result.stdout
