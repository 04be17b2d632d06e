"""``benchmarks/gpu.sh``: a stage that fails is recorded and the rest goes on, and the whole
script rehearsed on the CPU with tiny sizes writes every section of its JSON and table."""

from __future__ import annotations

import json
import subprocess

import pytest

from benchmarks.gpu import GPU_SIZES, SECTIONS, TINY_SIZES, Stages, goals, markdown, network_configs
from tests.support.paths import ROOT


def test_a_failing_or_late_stage_is_recorded_and_the_next_one_runs():
    stages = Stages(budget=100, log=lambda line: None)

    def late(timeout):
        raise subprocess.TimeoutExpired("x", timeout)

    def broken(timeout):
        raise RuntimeError("measurement x failed:\nTraceback ...\nValueError: the cause")

    assert stages.run("late", 10, late) is None
    assert stages.run("broken", 10, broken) is None
    assert stages.run("fine", 10, lambda timeout: {"limit": timeout}) == {"limit": 10}
    assert stages.status["late"]["status"] == "timeout"
    assert stages.status["broken"]["status"] == "failed"
    assert stages.status["broken"]["error"] == "ValueError: the cause"
    assert stages.status["fine"]["status"] == "ok"
    stages.deadline = 0  # the budget is spent: what is left is skipped, not started
    assert stages.run("after", 10, lambda timeout: 1) is None
    assert stages.status["after"]["status"] == "skipped"


def test_network_configurations_cover_batches_precisions_and_variants():
    configs = network_configs(GPU_SIZES, on_cuda=True)
    defaults = [c for c in configs if c["variant"] == "default"]
    assert {(c["precision"], c["batch"]) for c in defaults} == {
        (p, b) for p in ("fp32", "bf16") for b in (16, 32, 64, 128, 256)}
    assert all(c["channels_last"] and c["cudnn_benchmark"] for c in defaults)
    variants = {(c["precision"], c["variant"]) for c in configs if c["variant"] != "default"}
    assert len(variants) == 6
    assert all(not c["cudnn_benchmark"] for c in network_configs(TINY_SIZES, on_cuda=False))


def test_the_table_is_written_when_every_stage_failed():
    results = {name: None for name in SECTIONS}
    results.update(settings={"device": "cuda", "tiny": False}, hardware_line=None,
                   versions={}, stages={"extract": {"status": "failed", "error": "x | y"}},
                   seconds=1.0)
    text = markdown(results)
    assert "| extract | failed |" in text and "x / y" in text


def test_goals_are_judged_from_the_measured_rows():
    results = {
        "network": {"rows": [{"precision": "bf16", "clips_per_s": 3500.0},
                             {"precision": "fp32", "clips_per_s": 9000.0},
                             {"precision": "bf16", "error": "out of memory"}]},
        "extract": {"rows": [{"corpus": "320x240", "workers": 1, "e2e_over_decode": 0.5},
                             {"corpus": "320x240", "workers": 4, "e2e_over_decode": 0.9},
                             {"corpus": "320x240", "workers": 8, "e2e_over_decode": 0.85},
                             {"corpus": "1080p", "workers": 8, "e2e_over_decode": 0.1}]},
        "train_steps": {"rows": [{"arch": "c3d", "clips_per_s": 500.0},
                                 {"arch": "r2plus1d_18", "error": "out of memory"}]},
    }
    judged = goals(results)
    assert judged["measured"] == {"network_bf16_clips_per_s": 3500.0, "e2e_over_decode": 0.85}
    assert judged["met"] == {"network_bf16_clips_per_s": True, "e2e_over_decode": True}
    assert judged["training_recorded"] == ["c3d"] and not judged["training_both"]
    nothing = goals({name: None for name in SECTIONS})
    assert nothing["met"] == {"network_bf16_clips_per_s": None, "e2e_over_decode": None}


@pytest.mark.slow
def test_cpu_rehearsal_of_the_gpu_benchmark_writes_every_section(tmp_path):
    out = tmp_path / "gpu"
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--no-install",
                           "--device", "cpu", "--tiny", "--out", str(out)],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "gpu-bench.json").read_text())
    for key in (*SECTIONS, "hardware", "hardware_line", "versions", "settings", "stages",
                "seconds"):
        assert key in results, key
    assert results["hardware_line"].startswith("Hardware: ")
    assert results["hardware_line"].endswith("; GPU: none")
    stages = results["stages"]
    for name in ("corpus", "openvino_free", "extract", "network", "train_steps", "c3d_train",
                 "resume", "tests"):
        assert stages[name]["status"] == "ok", (name, stages[name])
    # No NVDEC on a CPU: recorded with its reason; torch.compile and CUDA graphs: CUDA only.
    assert stages["nvdec"]["status"] in ("ok", "failed")
    assert stages["network_compiled"]["status"] == "skipped"
    assert results["openvino_free"]["ok"]
    assert [r["corpus"] for r in results["extract"]["rows"]] == ["320x240", "320x240", "1080p"]
    assert all(r["failed"] == 0 and r["e2e_clips_per_s"] > 0 for r in results["extract"]["rows"])
    assert results["network"]["rows"][0]["clips_per_s"] > 0
    assert results["train_steps"]["rows"][0]["clips_per_s"] > 0
    assert results["c3d_train"]["rows"][0]["exit"] == 0
    assert results["resume"]["checked"], results["resume"]
    assert results["tests"]["exit"] == 0 and results["tests"].get("failed", 0) == 0
    assert results["tests"]["files"] == ["tests/device/test_gpu.py"]
    assert results["goals"]["met"]["network_bf16_clips_per_s"] is None  # no bf16 in tiny
    table = (out / "gpu-bench.md").read_text()
    assert table.startswith("Hardware: ") and "| stage | status |" in table
    assert "bit-identical" in table
