"""A tiny registered architecture for fast training tests, and a way to run c3d-train with it.

``tiny3d`` is a 3-D convolution, BatchNorm, ReLU, global pooling, dropout and a linear
head ``fc``: every kind of state a resumed run must restore (BatchNorm buffers, dropout's
random draws, optimizer moments) in a few hundred parameters. It takes torchvision's RGB
preset, any clip length and crop size.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Dict, Iterable, List, Optional, Sequence

import torch
from torch import nn

from c3d_extract.models.architecture import Architecture
from c3d_extract.models.registry import architecture_names, register
from tests.support.paths import ROOT as REPOSITORY

NAME = "tiny3d"


class Tiny3D(nn.Module):
    head_name = "fc"

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 6, kernel_size=3, stride=(1, 2, 2), padding=1)
        self.bn = nn.BatchNorm3d(6)
        self.dropout = nn.Dropout(0.3)
        self.fc = nn.Linear(6, num_classes)
        self.num_classes = num_classes

    @property
    def available_layers(self):
        return ("avgpool", "logits", "prob")

    def feature_dim(self, layer: str) -> int:
        return 6 if layer == "avgpool" else self.num_classes

    def features(self, clips: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(clips))).mean(dim=(2, 3, 4))

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(clips)))

    def extract(self, clips: torch.Tensor, layers: Iterable[str]) -> Dict[str, torch.Tensor]:
        pooled = self.features(clips)
        logits = self.fc(pooled)
        every = {"avgpool": pooled, "logits": logits, "prob": torch.softmax(logits, dim=1)}
        return {layer: every[layer] for layer in layers}


def build_tiny(*, num_classes: int) -> Tiny3D:
    return Tiny3D(num_classes).eval()


def register_tiny() -> None:
    if NAME in architecture_names():
        return
    from c3d_extract.models.registry import get_architecture

    preset = get_architecture("r2plus1d_18").preset
    register(Architecture(name=NAME, build=build_tiny, preset=preset, clip_len=4, crop_size=32,
                          layers=("avgpool", "logits", "prob"), default_layer="avgpool",
                          fixed_input=False, head_name="fc"))


#: Runs c3d-train's entry point with the tiny architecture registered first.
_LAUNCH = ("import sys; from tests.support.train_support import register_tiny; register_tiny(); "
           "from c3d_extract.cli.train import main; sys.argv[0] = 'c3d-train'; main()")
ROOT = str(REPOSITORY)


def tiny_train_command(args: Sequence[str]) -> List[str]:
    return [sys.executable, "-c", _LAUNCH, *args]


def run_tiny_train(args: Sequence[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(tiny_train_command(args), capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def start_tiny_train(args: Sequence[str]) -> subprocess.Popen:
    return subprocess.Popen(tiny_train_command(args), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)


def invoke_in_process(args: Sequence[str]):
    """c3d-train's command in this process (click's runner): for runs that stop early or are
    short, without a new interpreter's start-up. Not for --deterministic, which sets
    process-wide state."""
    from click.testing import CliRunner

    from c3d_extract.cli.train import cli

    register_tiny()
    return CliRunner().invoke(cli, list(args), prog_name="c3d-train")


def model_tensors(path: str) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


def identical(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> Optional[str]:
    """None when both hold the same tensors bit for bit, else the first difference."""
    if sorted(a) != sorted(b):
        return f"different tensor names: {sorted(set(a) ^ set(b))}"
    for name in sorted(a):
        if a[name].dtype != b[name].dtype or a[name].shape != b[name].shape:
            return f"{name}: {a[name].dtype} {tuple(a[name].shape)} vs {b[name].dtype} " \
                   f"{tuple(b[name].shape)}"
        if a[name].contiguous().numpy().tobytes() != b[name].contiguous().numpy().tobytes():
            diff = (a[name].double() - b[name].double()).abs().max().item()
            return f"{name} differs (largest difference {diff:.3g})"
    return None
