"""c3d-train end to end on a tiny UCF101-shaped dataset with a tiny registered network:
run-folder files, kill -9 and resume bit-identical, refusals (other parameters, a second
run, a leaking split)."""

from __future__ import annotations

import csv
import json
import re
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.support.train_data import write_tiny_ucf101
from tests.support.train_support import (identical, invoke_in_process, model_tensors,
                                         run_tiny_train, start_tiny_train)


@pytest.fixture(scope="module")
def tiny_ucf(tmp_path_factory):
    # 3 classes x 4 groups x 2 clips: split 1 trains on 18 videos (6 carved for validation
    # with --val-fraction 0.3) and tests on the 6 of group g01.
    return write_tiny_ucf101(tmp_path_factory.mktemp("data"), clips=2)


def _args(data, run_dir, *extra):
    return [str(data.root), "-o", str(run_dir), "--dataset", "ucf101", "--arch", "tiny3d",
            "--clip-len", "4", "--crop-size", "32", "--batch-size", "3", "--epochs", "3",
            "--optimizer", "adam", "--lr", "0.01", "--seed", "1", "--deterministic",
            "--checkpoint-every", "2", "--workers", "0", "--val-fraction", "0.3", *extra]


@pytest.fixture(scope="module")
def finished_run(tiny_ucf, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "reference"
    result = run_tiny_train(_args(tiny_ucf, run_dir))
    assert result.returncode == 0, result.stderr
    return run_dir, result


def _wait_for(condition, process, what: str, limit: float = 300.0) -> bool:
    """Poll ``condition`` until true (True) or the process ends first (False)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.002)
    raise AssertionError(f"timed out waiting for {what}")


def _metric_rows(path: Path):
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_run_folder_holds_results_metrics_plots_and_model(finished_run, tiny_ucf):
    run_dir, result = finished_run
    results = json.loads((run_dir / "results.json").read_text())
    test = results["test"]
    assert test["videos"] == 6
    for key in ("top1", "clip_top1"):
        assert 0.0 <= test[key] <= 1.0
    # Three classes: every label is among the top five, so top-5 is not reported.
    assert test["top5"] is None and test["clip_top5"] is None
    assert "top-5" not in result.stderr + result.stdout
    assert list(test["per_class"]) == list(tiny_ucf.classes)
    assert sum(c["videos"] for c in test["per_class"].values()) == 6
    assert sum(map(sum, test["confusion"])) == 6
    rows = _metric_rows(run_dir / "metrics.csv")
    assert [(r["epoch"], r["split"]) for r in rows] == [
        ("1", "train"), ("1", "val"), ("2", "train"), ("2", "val"), ("3", "train"),
        ("3", "val"), ("3", "test")]
    assert all(float(r["loss"]) > 0 and 0 <= float(r["top1"]) <= 1 for r in rows)
    assert all(r["top5"] == "" for r in rows)
    assert [r["samples"] for r in rows[:2]] == ["12", "6"]
    for picture in ("curves.png", "confusion.png"):
        assert (run_dir / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from safetensors import safe_open
    with safe_open(str(run_dir / "model.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["arch"] == "tiny3d"
    assert json.loads(metadata["class_names"]) == list(tiny_ucf.classes)
    assert (metadata["clip_len"], metadata["crop_size"]) == ("4", "32")
    splits = json.loads((run_dir / "splits.json").read_text())
    assert len(splits["test"]) == 6
    assert "test: top-1" in result.stderr
    leftovers = [p.name for p in run_dir.iterdir() if ".tmp-" in p.name]
    assert leftovers == []
    modes = {p.name: p.stat().st_mode & 0o777 for p in run_dir.iterdir() if p.is_file()}
    assert modes["model.safetensors"] == modes["results.json"] == modes["metrics.csv"], modes


@pytest.mark.slow
def test_killed_runs_resume_to_bit_identical_weights(finished_run, tiny_ucf, tmp_path):
    reference_dir, _ = finished_run
    run_dir = tmp_path / "killed"
    args = _args(tiny_ucf, run_dir)
    checkpoint = run_dir / "checkpoint.pt"

    # First kill: as soon as the first checkpoint (step 2, inside epoch 1) exists.
    process = start_tiny_train(args)
    assert _wait_for(checkpoint.exists, process, "the first checkpoint"), process.communicate()
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL

    # Second kill: once the resumed run has logged epoch 1.
    process = start_tiny_train(args)
    killed_twice = _wait_for(lambda: len(_metric_rows(run_dir / "metrics.csv")) >= 2, process,
                             "epoch 1's metrics")
    if killed_twice:
        process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate()
    resumed = re.search(r"resuming from step (\d+)", stderr)
    assert resumed and int(resumed.group(1)) >= 2, stderr

    final = run_tiny_train(args)
    assert final.returncode == 0, final.stderr
    if killed_twice:
        assert re.search(r"resuming from step \d+", final.stderr), final.stderr
    difference = identical(model_tensors(str(reference_dir / "model.safetensors")),
                           model_tensors(str(run_dir / "model.safetensors")))
    assert difference is None, difference
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa
    assert strip(_metric_rows(run_dir / "metrics.csv")) == \
        strip(_metric_rows(reference_dir / "metrics.csv"))


def _output(result) -> str:
    """What a command run in process wrote, stderr included, and any exception's traceback."""
    import traceback

    text = result.output
    if result.exc_info and not isinstance(result.exception, SystemExit):
        text += "".join(traceback.format_exception(*result.exc_info))
    return text


def test_rerun_of_a_complete_run_does_nothing(finished_run, tiny_ucf):
    run_dir, _ = finished_run
    before = (run_dir / "model.safetensors").stat().st_mtime_ns
    result = invoke_in_process(_args(tiny_ucf, run_dir))
    assert result.exit_code == 0, _output(result)
    assert "complete" in result.output
    assert (run_dir / "model.safetensors").stat().st_mtime_ns == before


def test_rerun_with_other_parameters_is_refused_unless_overwrite(finished_run, tiny_ucf,
                                                                 tmp_path):
    reference_dir, _ = finished_run
    run_dir = tmp_path / "run"
    shutil.copytree(reference_dir, run_dir)
    other = [a for a in _args(tiny_ucf, run_dir) if a != "--deterministic"]
    other += ["--epochs", "1", "--lr", "0.02"]
    refused = invoke_in_process(other)
    assert refused.exit_code == 2, _output(refused)
    assert "Traceback" not in _output(refused)
    assert "lr: 0.01 then, 0.02 now" in refused.output and "--overwrite" in refused.output
    again = invoke_in_process([*other, "--overwrite"])
    assert again.exit_code == 0, _output(again)
    recorded = json.loads((run_dir / "args.json").read_text())
    assert recorded["options"]["lr"] == 0.02
    rows = _metric_rows(run_dir / "metrics.csv")
    assert [(r["epoch"], r["split"]) for r in rows] == [("1", "train"), ("1", "val"),
                                                        ("1", "test")]


def test_second_concurrent_run_is_refused(tiny_ucf, tmp_path):
    from c3d_extract.store.locking import OutputLock

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with OutputLock(str(run_dir / "run")):  # as a running c3d-train holds it
        result = invoke_in_process(_args(tiny_ucf, run_dir))
    assert result.exit_code == 1, _output(result)
    assert "another c3d-train run" in result.output and "Traceback" not in _output(result)
    assert not (run_dir / "checkpoint.pt").exists()


def test_leaking_split_is_refused_naming_the_group(tiny_ucf, tmp_path):
    splits = tmp_path / "leaky"
    shutil.copytree(tiny_ucf.splits_dir, splits)
    leaked = next(path for path, (_, group) in tiny_ucf.videos.items() if group == 1)
    with open(splits / "trainlist01.txt", "a") as handle:
        handle.write(f"{leaked} 1\n")
    run_dir = tmp_path / "run"
    result = invoke_in_process(_args(tiny_ucf, run_dir, "--splits", str(splits)))
    assert result.exit_code == 2, _output(result)
    assert "Traceback" not in _output(result)
    assert "g01" in result.output
    assert not (run_dir / "checkpoint.pt").exists()


@pytest.mark.slow
def test_exported_model_predicts_as_the_run_evaluated(finished_run, tiny_ucf):
    """c3d-predict with RUN_DIR/model.safetensors: the model's class names, and the same
    video-level decisions as the run's test confusion matrix (same windows, same preset)."""
    from click.testing import CliRunner

    from c3d_extract.cli.predict import cli as predict
    from tests.support.train_support import register_tiny

    register_tiny()
    run_dir, _ = finished_run
    test_videos = sorted(p for p, (_, group) in tiny_ucf.videos.items() if group == 1)
    result = CliRunner().invoke(predict, [
        *[str(tiny_ucf.root / p) for p in test_videos], "--weights",
        str(run_dir / "model.safetensors"), "--json", "--decoder", "pyav", "--top-k", "1"])
    assert result.exit_code == 0, result.output
    predictions = json.loads(result.stdout)
    classes = list(tiny_ucf.classes)
    matrix = [[0] * 3 for _ in classes]
    for path, prediction in zip(test_videos, predictions):
        true = classes.index(tiny_ucf.videos[path][0])
        matrix[true][classes.index(prediction["top"][0]["name"])] += 1
    results = json.loads((run_dir / "results.json").read_text())
    assert matrix == results["test"]["confusion"]


def test_c3d_refuses_other_clip_sizes(tiny_ucf, tmp_path):
    args = [str(tiny_ucf.root), "-o", str(tmp_path / "run"), "--dataset", "ucf101",
            "--arch", "c3d", "--clip-len", "8"]
    result = invoke_in_process(args)
    assert result.exit_code == 2, _output(result)
    assert "16-frame clips of 112 x 112 only" in result.output
    assert not (tmp_path / "run").exists()


def test_a_run_that_failed_before_its_first_checkpoint_is_simply_rerun(tiny_ucf, tmp_path):
    run_dir = tmp_path / "run"
    broken = tmp_path / "init.safetensors"
    broken.write_bytes(b"\x00" * 64)  # not a safetensors file
    failed = invoke_in_process(_args(tiny_ucf, run_dir, "--init", str(broken), "--epochs", "1"))
    assert failed.exit_code == 1, _output(failed)
    assert "Traceback" not in _output(failed) and str(broken) in failed.output
    assert not (run_dir / "checkpoint.pt").exists()
    corrected = invoke_in_process(_args(tiny_ucf, run_dir, "--epochs", "1"))
    assert corrected.exit_code == 0, _output(corrected)  # no --overwrite needed
    assert json.loads((run_dir / "args.json").read_text())["options"]["init"] is None
