"""Tiny stand-ins for C3D in extraction tests, with C3D's preset and clip length.

``TinyPooling``: a few cheap layers and features that show every pixel region of a crop,
so that a wrong crop, mirror or mean is seen at once and runs take milliseconds.
``TinyConvolution``: a single convolution that OpenVINO converts in about a second."""

from __future__ import annotations

from typing import Dict, Iterable

import torch
from torch import nn

from c3d_extract.extraction.network import PreparedNetwork
from c3d_extract.models.registry import get_architecture
from c3d_extract.video.preprocess import SPORTS1M
from c3d_extract.weights.networks import LoadedModel


class TinyPooling(nn.Module):
    """``fc6``: the clip averaged over 4 x 8 x 8 blocks (3 x 4 x 14 x 14 = 2352 values for a
    16 x 112 x 112 clip); ``prob``: a seeded linear map of it with a softmax."""

    num_classes = 5

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.head = nn.Linear(2352, self.num_classes)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(self.num_classes, 2352, generator=generator) / 50)
            self.head.bias.zero_()

    @property
    def available_layers(self):
        return ("fc6", "prob")

    def feature_dim(self, layer: str) -> int:
        return 2352 if layer == "fc6" else self.num_classes

    def extract(self, clips: torch.Tensor, layers: Iterable[str]) -> Dict[str, torch.Tensor]:
        pooled = nn.functional.avg_pool3d(clips.float(), (4, 8, 8)).flatten(1)
        every = {"fc6": pooled, "prob": torch.softmax(self.head(pooled), dim=1)}
        return {layer: every[layer] for layer in layers}

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.head(self.extract(clips, ["fc6"])["fc6"])


def tiny_model(seed: int = 0) -> LoadedModel:
    return LoadedModel(model=TinyPooling(seed).eval(), arch="c3d", preset=SPORTS1M,
                       clip_len=16, crop_size=112, class_names=(), name="tiny",
                       sha256=f"tiny-{seed}", source_format="test")


class TinyConvolution(nn.Module):
    """A stand-in for C3D with its interface: one 1x1x1 convolution, then a mean over
    time and space, so "fc6" is 2 numbers per clip; converts in about a second."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(3, 2, kernel_size=1)
        self.num_classes = 0

    @property
    def available_layers(self):
        return ("fc6",)

    def feature_dim(self, layer: str) -> int:
        return 2

    def extract(self, clips, layers):
        return {"fc6": self.conv(clips).mean(dim=(2, 3, 4))}


def tiny_prepared(name: str = "tiny") -> PreparedNetwork:
    """``TinyConvolution`` prepared as C3D for the OpenVINO backend on the CPU in fp32,
    named ``name``; nothing of it needs openvino until it is run with that backend."""
    arch = get_architecture("c3d")
    model = TinyConvolution().eval()
    loaded = LoadedModel(model=model, arch="c3d", preset=SPORTS1M, clip_len=arch.clip_len,
                         crop_size=arch.crop_size, class_names=(), name=name,
                         sha256=f"{name}-sha256", source_format="test")
    return PreparedNetwork(None, model, loaded, SPORTS1M, "fp32", "cpu", "openvino",
                           torch.device("cpu"))
