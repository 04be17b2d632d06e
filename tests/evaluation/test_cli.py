"""Every evaluation command answers --help, and both entry points are click groups."""

import pytest
from click.testing import CliRunner

from c3d_extract.cli.pca import main as pca_main
from c3d_extract.cli.svm import main as svm_main


def _commands():
    for group in (svm_main, pca_main):
        yield group, []
        for name in group.commands:
            yield group, [name]


@pytest.mark.parametrize("group, path", list(_commands()),
                         ids=lambda value: " ".join(value) if isinstance(value, list) else
                         value.name)
def test_every_command_has_help_with_an_example(group, path):
    result = CliRunner().invoke(group, path + ["--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert "Example" in result.output


def test_expected_commands():
    assert set(svm_main.commands) == {"train", "eval", "predict", "cv", "pairs"}
    assert set(pca_main.commands) == {"compact", "fit", "transform", "tsne"}


def test_split_columns_are_explained_in_help():
    runner = CliRunner()
    assert "split == train" in runner.invoke(svm_main, ["train", "--help"]).output
    assert "split == test" in runner.invoke(svm_main, ["eval", "--help"]).output


def test_pca_without_command_name_defaults_to_compact():
    result = CliRunner().invoke(pca_main, ["missing.h5", "missing.csv", "--dims", "10"])
    assert result.exit_code == 2  # a missing input is a usage error
    assert "no such file: missing.csv" in result.output
    bad = CliRunner().invoke(pca_main, ["x.h5", "y.csv", "--dims", "10,abc"])
    assert bad.exit_code == 2 and "--dims" in bad.output
