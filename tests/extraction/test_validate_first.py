"""A rerun that the existing output refuses is refused before any weights are loaded or any
network converted, with the message the store gives; a conversion is announced on stderr
before it starts."""

import importlib.util
import time
from dataclasses import replace

import pytest
from click.testing import CliRunner

from c3d_extract.errors import ParameterMismatchError
from c3d_extract.extraction import backends, openvino_runner, run, stream
from c3d_extract.extraction.options import ExtractOptions
from c3d_extract.extraction.run import extract
from c3d_extract.store.read import read_attributes
from c3d_extract.store.records import RunParameters
from c3d_extract.store.write import FeatureStore
from c3d_extract.weights import networks
from tests.support.tiny_network import tiny_prepared
from tests.support.videos import write_video

# The tests that ask the CLI for the OpenVINO backend; the others run with torch alone.
needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="needs openvino")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """An output of two videos, fc6 of the tiny network recorded as the random weights."""
    root = tmp_path_factory.mktemp("made")
    videos = root / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", 24)
    write_video(videos / "b.mp4", 16)
    out = root / "feats.h5"
    prepared = replace(tiny_prepared("random"), backend="torch")
    summary = extract(str(videos), str(out), weights=prepared,
                      options=ExtractOptions(device="cpu", precision="fp32", backend="torch"))
    assert summary.n_failed == 0
    return videos, out


@pytest.fixture
def nothing_expensive(monkeypatch):
    """Loading weights, building a runner or converting a network fails the test."""
    def expensive(*args, **kwargs):
        raise AssertionError("an expensive step ran before the rerun was refused")

    monkeypatch.setattr(networks, "load_model", expensive)
    monkeypatch.setattr(backends, "make_runner", expensive)
    monkeypatch.setattr(openvino_runner, "converted_model", expensive)
    monkeypatch.setattr(openvino_runner, "convert_network", expensive)


def store_message(out, **changes):
    """The store's own refusal of a run with ``changes`` to the recorded parameters."""
    recorded = RunParameters.from_attrs(read_attributes(str(out)))
    requested = replace(recorded, **changes)
    with pytest.raises(ParameterMismatchError) as refused:
        FeatureStore(str(out), requested, {}).open()
    return str(refused.value)


@needs_openvino
@pytest.mark.parametrize("arguments, changes", [
    (["--layer", "fc7"], {"layers": ("fc7",)}),
    (["--layer", "fc6,pool5"], {"layers": ("fc6", "pool5")}),
    (["--clip-len", "8"], {"clip_len": 8, "stride": 4}),
    (["--stride", "3"], {"stride": 3}),
    (["--per-clip"], {"per_clip": True}),
    (["--short", "skip"], {"short_policy": "skip"}),
])
def test_a_refused_rerun_is_refused_before_loading_or_converting(made, nothing_expensive,
                                                                 arguments, changes):
    from c3d_extract.cli.extract import cli

    videos, out = made
    expected = store_message(out, **changes)
    started = time.monotonic()
    result = CliRunner().invoke(cli, [str(videos), "-o", str(out), "--weights", "random",
                                      "--backend", "openvino", "-q", *arguments])
    assert time.monotonic() - started < 10
    assert result.exit_code == 1, result.output
    assert expected in result.output
    assert "Traceback" not in result.output


@needs_openvino
def test_other_weights_are_refused_before_they_are_loaded(made, nothing_expensive, tmp_path):
    from c3d_extract.cli.extract import cli

    videos, out = made
    import torch
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"conv1.weight": torch.zeros(1)}, str(other))  # a weights file by its format
    from c3d_extract.weights.loading import file_sha256

    expected = store_message(out, weights_sha256=file_sha256(other))
    result = CliRunner().invoke(cli, [str(videos), "-o", str(out), "--weights", str(other),
                                      "--backend", "openvino", "-q"])
    assert result.exit_code == 1, result.output
    assert expected in result.output


def test_a_complete_output_is_resumed_without_building_the_runner(made, monkeypatch):
    videos, out = made

    def fail(*args, **kwargs):
        raise AssertionError("the runner was built with nothing to do")

    for module in (run, stream):  # each looks it up in its own namespace
        monkeypatch.setattr(module, "with_runner", fail)
    prepared = replace(tiny_prepared("random"), backend="torch")
    summary = extract(str(videos), str(out), weights=prepared,
                      options=ExtractOptions(device="cpu", precision="fp32", backend="torch"))
    assert summary.n_skipped_existing == 2 and summary.n_processed == 0


@needs_openvino
def test_the_cli_announces_a_first_use_conversion(tmp_path, monkeypatch):
    """The first-use conversion is announced on stderr before it starts, and the rates
    shown after it do not count it."""
    from c3d_extract.cli.extract import cli

    monkeypatch.setenv("C3D_EXTRACT_OPENVINO_CACHE", str(tmp_path / "cache"))
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", 16)
    tiny = tiny_prepared("random").weights
    monkeypatch.setattr(networks, "load_model", lambda *args, **kwargs: tiny)
    seen = []
    real = openvino_runner.convert_network

    def convert(*args):
        seen.append("conversion")
        return real(*args)

    monkeypatch.setattr(openvino_runner, "convert_network", convert)
    monkeypatch.setattr("c3d_extract.cli.extract.click.echo",
                        lambda text="", err=False, **kw: seen.append(str(text)))
    result = CliRunner().invoke(cli, [str(videos), "-o", str(tmp_path / "f.h5"),
                                      "--weights", "random", "--backend", "openvino"])
    assert result.exit_code == 0, (result.output, seen)
    (notice,) = [line for line in seen if line.startswith("converting")]
    assert "OpenVINO" in notice and str(tmp_path / "cache") in notice
    assert seen.index(notice) < seen.index("conversion")
    # A second run converts nothing and says nothing about it.
    seen.clear()
    result = CliRunner().invoke(cli, [str(videos), "-o", str(tmp_path / "g.h5"),
                                      "--weights", "random", "--backend", "openvino"])
    assert result.exit_code == 0
    assert not [line for line in seen if line.startswith(("converting", "conversion"))]


@needs_openvino
def test_an_unfinished_runs_journal_refuses_before_loading(made, nothing_expensive, tmp_path):
    """A run interrupted before its first commit left only a journal: a rerun with other
    layers is refused by it, before anything is loaded."""
    from c3d_extract.cli.extract import cli
    from c3d_extract.store.records import VideoRecord

    videos, out = made
    recorded = RunParameters.from_attrs(read_attributes(str(out)))
    fresh = tmp_path / "fresh.h5"
    store = FeatureStore(str(fresh), recorded, {"fc6": 2}).open()
    store.add(VideoRecord(id="a.mp4", status="error", error="stopped"))
    store.sync()
    store.close()  # no commit: the journal holds the run
    assert not fresh.exists() and (tmp_path / "fresh.h5.journal").exists()
    with pytest.raises(ParameterMismatchError) as refused:
        FeatureStore(str(fresh), replace(recorded, layers=("pool5",)), {}).open()
    result = CliRunner().invoke(cli, [str(videos), "-o", str(fresh), "--weights", "random",
                                      "--backend", "openvino", "-q", "--layer", "pool5"])
    assert result.exit_code == 1, result.output
    assert str(refused.value) in result.output and "journal" in str(refused.value)


def test_a_file_that_is_no_weights_is_named_before_the_output_is_compared(made, tmp_path):
    from c3d_extract.cli.extract import cli

    videos, out = made
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"\x93NUMPY not weights")
    result = CliRunner().invoke(cli, [str(videos), "-o", str(out), "--weights", str(garbage),
                                      "-q"])
    assert result.exit_code == 1
    assert "cannot tell the format of" in result.output and "garbage.npy" in result.output
