"""The messages of common mistakes name the mistake: an empty folder, c3d-svm's arguments in
the wrong order, a split folder not found (named with its option), and c3d-svm's layer
following the file."""

from __future__ import annotations

import h5py
import pytest
from click.testing import CliRunner

from c3d_extract.errors import DatasetError
from c3d_extract.store import FORMAT


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
