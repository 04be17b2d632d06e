"""The messages of common mistakes name the mistake: an empty folder, c3d-svm's arguments in
the wrong order, a split folder not found (named with its option), and c3d-svm's layer
following the file."""

from __future__ import annotations

import h5py
import pytest
from click.testing import CliRunner

from c3d_extract.errors import DatasetError
from c3d_extract.store.layout import FORMAT


def _feature_file(path, layers: str):
    with h5py.File(path, "w") as handle:
        handle.attrs["format"] = FORMAT
        handle.attrs["layers"] = layers
    return path


def test_an_empty_folder_is_no_videos_found(tmp_path):
    from c3d_extract.cli.extract import cli

    empty = tmp_path / "emptydir"
    empty.mkdir()
    result = CliRunner().invoke(cli, [str(empty), "-o", str(tmp_path / "f.h5"),
                                      "--decode-only"], prog_name="c3d-extract")
    assert result.exit_code == 2, result.output
    assert f"no videos found in {empty}" in result.stderr
    assert not (tmp_path / "f.h5").exists()


@pytest.mark.parametrize("command", [
    ["train", "{labels}", "{features}", "-o", "{model}"],
    ["cv", "{labels}", "{features}"],
])
def test_svm_arguments_in_the_wrong_order_are_named(tmp_path, command):
    from c3d_extract.cli.svm import main

    labels = tmp_path / "labels.csv"
    labels.write_text("id,label\na.mp4,x\n")
    features = _feature_file(tmp_path / "feats.h5", "fc6")
    names = {"labels": labels, "features": features, "model": tmp_path / "m.skops"}
    result = CliRunner().invoke(main, [part.format(**names) for part in command],
                                prog_name="c3d-svm")
    assert result.exit_code == 2, result.output
    assert f"{labels} is not an HDF5 feature file" in result.stderr
    assert f"but {features} is: the arguments are in the wrong order" in result.stderr
    assert f"c3d-svm {command[0]} FEATURES.h5" in result.stderr
    assert "UTF-8" not in result.stderr


def test_svm_layer_defaults_to_the_files(tmp_path):
    from c3d_extract.cli.svm import default_layer

    assert default_layer(str(_feature_file(tmp_path / "r.h5", "avgpool,logits"))) == "avgpool"
    assert default_layer(str(_feature_file(tmp_path / "c.h5", "fc7,fc6"))) == "fc6"
    assert default_layer(str(_feature_file(tmp_path / "p.h5", "pool5"))) == "pool5"


def test_a_split_folder_not_found_names_the_option(tmp_path):
    from c3d_extract.train.datasets import load_dataset

    root = tmp_path / "UCF-101"
    (root / "Jump").mkdir(parents=True)
    (root / "Jump" / "v_Jump_g01_c01.avi").write_bytes(b"x")
    with pytest.raises(DatasetError, match="give the split folder with --splits DIR"):
        load_dataset("ucf101", str(root))


def test_a_layer_the_weights_lack_lists_only_their_layers(tmp_path):
    from c3d_extract.cli.extract import cli

    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "a.mp4").write_bytes(b"x")
    result = CliRunner().invoke(cli, [str(tmp_path / "v"), "-o", str(tmp_path / "f.h5"),
                                      "--weights", "random", "--layer", "avgpool"],
                                prog_name="c3d-extract")
    assert result.exit_code == 2, result.output
    assert "has no layer avgpool; choose from pool5, fc6, fc7, fc8, prob" in result.stderr
    assert "logits" not in result.stderr


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_safetensors_files_get_the_mode_of_any_new_file(tmp_path, umask):
    import os

    import torch

    from c3d_extract.weights.safetensors_file import write_safetensors_file

    previous = os.umask(umask)
    try:
        write_safetensors_file({"w": torch.zeros(2)}, tmp_path / "model.safetensors", {})
        (tmp_path / "other.json").write_text("{}")
    finally:
        os.umask(previous)
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "other.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_train_refuses_a_run_folder_whose_parent_is_missing_like_extract(tmp_path):
    from c3d_extract.cli.extract import cli as extract_cli
    from tests.support.train_support import invoke_in_process

    data = tmp_path / "UCF-101"
    data.mkdir()
    run_dir = tmp_path / "no" / "such" / "run"
    result = invoke_in_process([str(data), "-o", str(run_dir), "--dataset", "ucf101",
                                "--arch", "tiny3d"])
    assert result.exit_code == 1, result.output
    assert f"the output directory {run_dir.parent} does not exist" in result.stderr
    assert not (tmp_path / "no").exists()
    (tmp_path / "a.mp4").write_bytes(b"x")
    extracted = CliRunner().invoke(extract_cli, [str(tmp_path / "a.mp4"), "-o",
                                                 str(run_dir / "f.h5"),
                                                 "--decode-only"], prog_name="c3d-extract")
    assert extracted.exit_code == 1, extracted.output
    assert f"the output directory {run_dir} does not exist" in extracted.stderr


def test_the_hidden_default_command_reports_usage_errors_as_its_group():
    """`c3d-weights cache` runs its hidden `list`; a usage error there names the group, not a
    command the help does not show."""
    from c3d_extract.cli.weights import cli

    result = CliRunner().invoke(cli, ["cache"], prog_name="c3d-weights",
                                env={"C3D_EXTRACT_OPENVINO_CACHE_MB": "abc"})
    assert result.exit_code == 2, result.output
    assert "Usage: c3d-weights cache [OPTIONS] [COMMAND] [ARGS]..." in result.output
    assert "Try 'c3d-weights cache --help'" in result.output
    assert "cache list" not in result.output
    assert "C3D_EXTRACT_OPENVINO_CACHE_MB='abc'" in result.output
