"""--deterministic gives the same weights bit for bit whatever the process's memory layout:
the same tiny training in five processes whose environments differ in size (which moves
every buffer's alignment) ends with identical weights; MKL runs in its strict conditional
numerical reproducibility mode."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.paths import ROOT
from tests.support.train_data import write_tiny_ucf101
from tests.support.train_support import identical, model_tensors, tiny_train_command

#: Bytes of padding in the environment of each run.
PADDINGS = (1, 63, 1000, 2049, 4099)


def test_environment_is_set_before_torch_and_user_values_are_kept():
    from c3d_extract.train.reproducibility import set_reproducible_environment

    environ = {"ONEDNN_DEFAULT_FPMATH_MODE": "BF16"}
    set_reproducible_environment(environ)
    assert environ == {"MKL_CBWR": "AUTO,STRICT", "ONEDNN_DEFAULT_FPMATH_MODE": "BF16"}


def _python(code: str, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    environ.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env=environ, timeout=120)


def test_mkl_is_pinned_by_the_environment_or_before_its_first_use():
    import torch

    if not torch.backends.mkl.is_available():
        pytest.skip("torch is built without MKL")
    probe = ("import warnings, torch; from c3d_extract.train import reproducibility as r; "
             "{before}; r.pin_mkl_results(); print(r.mkl_results_pinned())")
    assert _python(probe.format(before="pass"), MKL_CBWR="AUTO,STRICT").stdout.strip() == "True"
    assert _python(probe.format(before="pass")).stdout.strip() == "True"
    late = _python(probe.format(before="torch.ones(64, 64) @ torch.ones(64, 64)"))
    assert late.stdout.strip() == "False"
    assert "set MKL_CBWR=AUTO,STRICT" in late.stderr


@pytest.mark.slow
def test_deterministic_training_is_bit_identical_across_memory_layouts(tmp_path):
    data = write_tiny_ucf101(tmp_path / "data", clips=2)
    models = []
    for padding in PADDINGS:
        run_dir = tmp_path / f"pad{padding}"
        environ = dict(os.environ, C3D_TEST_PADDING="x" * padding)
        result = subprocess.run(tiny_train_command([
            str(data.root), "-o", str(run_dir), "--dataset", "ucf101", "--arch", "tiny3d",
            "--clip-len", "4", "--crop-size", "32", "--batch-size", "3", "--epochs", "1",
            "--optimizer", "adam", "--lr", "0.01", "--seed", "0", "--deterministic",
            "--val-fraction", "0", "--workers", "0", "--quiet"]),
            capture_output=True, text=True, cwd=ROOT, env=environ, timeout=300)
        assert result.returncode == 0, result.stderr
        models.append(model_tensors(str(run_dir / "model.safetensors")))
    for padding, model in zip(PADDINGS[1:], models[1:]):
        difference = identical(models[0], model)
        assert difference is None, f"padding {padding}: {difference}"
