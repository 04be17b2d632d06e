"""R(2+1)D-18 (Tran et al., CVPR 2018), module for module as torchvision's ``r2plus1d_18``.

The submodules are nested exactly as in torchvision's ``VideoResNet`` (stem, four
stages of two ``BasicBlock``s built from ``Conv2Plus1D``, global average pool, ``fc``)
so the state dict carries torchvision's tensor names and a torchvision file (e.g. the
Kinetics-400 ``r2plus1d_18-91a641e6.pth``) loads with strict key matching. Input:
N x 3 x L x H x W, RGB in [0, 1] normalised by torchvision's preset; any L and H x W
that survive the three stride-2 stages (the pool is global).
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Tuple

import torch
from torch import nn

from c3d_extract.models.architecture import Architecture
from c3d_extract.video.preprocess import KINETICS400_TORCHVISION

KINETICS400_CLASSES = 400
FEATURE_DIM = 512
#: Layers that can be extracted, in the order the network computes them.
FEATURE_LAYERS: Tuple[str, ...] = ("avgpool", "logits", "prob")
#: (channels, stride) of the four stages.
STAGES: Tuple[Tuple[int, int], ...] = ((64, 1), (128, 2), (256, 2), (512, 2))
BLOCKS_PER_STAGE = 2


def mid_planes(in_planes: int, out_planes: int) -> int:
    """Channels between the spatial and the temporal convolution, chosen so that the
    (2+1)D pair has as many parameters as a 3x3x3 convolution (t = d = 3)."""
    return (in_planes * out_planes * 3 * 3 * 3) // (in_planes * 3 * 3 + 3 * out_planes)


class Conv2Plus1D(nn.Sequential):
    """1 x 3 x 3 spatial convolution, BatchNorm, ReLU, 3 x 1 x 1 temporal convolution."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv3d(in_planes, midplanes, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                      padding=(0, 1, 1), bias=False),
            nn.BatchNorm3d(midplanes),
            nn.ReLU(inplace=True),
            nn.Conv3d(midplanes, out_planes, kernel_size=(3, 1, 1), stride=(stride, 1, 1),
                      padding=(1, 0, 0), bias=False),
        )


class BasicBlock(nn.Module):
    """Two (2+1)D convolutions with BatchNorm and a residual connection."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        midplanes = mid_planes(in_planes, planes)
        self.conv1 = nn.Sequential(Conv2Plus1D(in_planes, planes, midplanes, stride),
                                   nn.BatchNorm3d(planes), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(Conv2Plus1D(planes, planes, midplanes),
                                   nn.BatchNorm3d(planes))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.conv1(x))
        return self.relu(out + residual)


class R2Plus1dStem(nn.Sequential):
    """3 -> 45 channels (1 x 7 x 7, spatial stride 2), then 45 -> 64 (3 x 1 x 1)."""

    def __init__(self) -> None:
        super().__init__(
            nn.Conv3d(3, 45, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3),
                      bias=False),
            nn.BatchNorm3d(45),
            nn.ReLU(inplace=True),
            nn.Conv3d(45, 64, kernel_size=(3, 1, 1), stride=(1, 1, 1), padding=(1, 0, 0),
                      bias=False),
            nn.BatchNorm3d(64),
            nn.ReLU(inplace=True),
        )


class R2Plus1D18(nn.Module):
    """R(2+1)D-18; ``forward`` gives logits, ``extract`` the avgpool / logits / prob layers."""

    head_name = "fc"

    def __init__(self, num_classes: int = KINETICS400_CLASSES) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError("R(2+1)D-18 needs at least one class")
        self.num_classes = num_classes
        self.stem = R2Plus1dStem()
        in_planes = 64
        for number, (planes, stride) in enumerate(STAGES, 1):
            blocks = []
            for block in range(BLOCKS_PER_STAGE):
                block_stride = stride if block == 0 else 1
                downsample = None
                if block_stride != 1 or in_planes != planes:
                    downsample = nn.Sequential(
                        nn.Conv3d(in_planes, planes, kernel_size=1, stride=block_stride,
                                  bias=False),
                        nn.BatchNorm3d(planes))
                blocks.append(BasicBlock(in_planes, planes, block_stride, downsample))
                in_planes = planes
            self.add_module(f"layer{number}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.fc = nn.Linear(FEATURE_DIM, num_classes)
        self._initialise()

    def _initialise(self) -> None:
        # torchvision's initialisation, so training from scratch starts alike.
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.constant_(module.bias, 0)

    @property
    def available_layers(self) -> Tuple[str, ...]:
        return FEATURE_LAYERS

    def feature_dim(self, layer: str) -> int:
        if layer not in FEATURE_LAYERS:
            raise ValueError(f"R(2+1)D-18 has no layer {layer!r}")
        return FEATURE_DIM if layer == "avgpool" else self.num_classes

    def forward_features(self, clips: torch.Tensor) -> torch.Tensor:
        """Stem, four stages and the global average pool: N x 512."""
        x = self.stem(clips)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        if self.training and torch.are_deterministic_algorithms_enabled():
            # AdaptiveAvgPool3d has no deterministic CUDA backward; a plain mean over
            # (T, H, W) computes the same pool and has one. Evaluation keeps the pool
            # module, so extracted features stay as torchvision computes them.
            return x.mean(dim=(2, 3, 4))
        return self.avgpool(x).flatten(1)

    def extract(self, clips: torch.Tensor, layers: Iterable[str]) -> Dict[str, torch.Tensor]:
        """Return the requested layers' activations, computing only as deep as needed."""
        wanted = set(layers)
        unknown = wanted - set(FEATURE_LAYERS)
        if unknown:
            raise ValueError(f"layers not available in R(2+1)D-18: {sorted(unknown)}")
        features = self.forward_features(clips)
        out: Dict[str, torch.Tensor] = {}
        if "avgpool" in wanted:
            out["avgpool"] = features
        if wanted & {"logits", "prob"}:
            logits = self.fc(features)
            if "logits" in wanted:
                out["logits"] = logits
            if "prob" in wanted:
                out["prob"] = torch.softmax(logits.float(), dim=1)
        return out

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """Class logits, N x num_classes."""
        return self.fc(self.forward_features(clips))


def build_r2plus1d_18(*, num_classes: int = KINETICS400_CLASSES,
                      seed: Optional[int] = None) -> R2Plus1D18:
    """An R(2+1)D-18 in eval mode; with ``seed`` its random initialisation is reproducible."""
    if seed is None:
        model = R2Plus1D18(num_classes)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = R2Plus1D18(num_classes)
    return model.eval()


#: The registry's entry for R(2+1)D-18: torchvision's Kinetics-400 preset, any clip length
#: and crop size (the pool is global), the pooled features written when no layer is asked for.
ARCHITECTURE = Architecture(
    name="r2plus1d_18", build=build_r2plus1d_18, preset=KINETICS400_TORCHVISION,
    clip_len=16, crop_size=112, layers=FEATURE_LAYERS, default_layer="avgpool",
    fixed_input=False, head_name=R2Plus1D18.head_name)
