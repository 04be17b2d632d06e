"""The Sports-1M C3D network, as the original Caffe C3D computed it.

Layer names follow the Caffe prototxt (conv1a ... conv5b, fc6, fc7, fc8); the
project's own state dict uses ``<layer>.weight`` / ``<layer>.bias``.
Features are post-ReLU (Caffe runs ReLU in place). Dropout after fc6 and fc7
acts only in training mode and has no parameters, so it changes no tensor name.
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from c3d_extract.models.architecture import Architecture
from c3d_extract.video.preprocess import SPORTS1M

#: (name, in channels, out channels) of the eight 3x3x3 convolutions.
CONV_LAYERS: Tuple[Tuple[str, int, int], ...] = (
    ("conv1a", 3, 64),
    ("conv2a", 64, 128),
    ("conv3a", 128, 256),
    ("conv3b", 256, 256),
    ("conv4a", 256, 512),
    ("conv4b", 512, 512),
    ("conv5a", 512, 512),
    ("conv5b", 512, 512),
)
#: Pooling after these convolutions: (kernel = stride, ceil rounding).
POOL_AFTER: Dict[str, Tuple[Tuple[int, int, int], bool]] = {
    "conv1a": ((1, 2, 2), False),
    "conv2a": ((2, 2, 2), False),
    "conv3b": ((2, 2, 2), False),
    "conv4b": ((2, 2, 2), False),
    # Caffe rounds the pooled size up and clips the last window: 7 -> 4 with
    # windows [0,1] [2,3] [4,5] [6]. Symmetric padding would shift every window.
    "conv5b": ((2, 2, 2), True),
}
POOL5_SIZE = 512 * 1 * 4 * 4
FC_SIZE = 4096
SPORTS1M_CLASSES = 487

#: Layers that can be extracted, in the order the network computes them.
FEATURE_LAYERS: Tuple[str, ...] = ("pool5", "fc6", "fc7", "fc8", "prob")
FEATURE_DIMS: Dict[str, Optional[int]] = {
    "pool5": POOL5_SIZE, "fc6": FC_SIZE, "fc7": FC_SIZE, "fc8": None, "prob": None,
}


class C3D(nn.Module):
    """C3D for inputs of shape N x 3 x 16 x 112 x 112 (BGR, mean subtracted, 0..255 scale).

    ``num_classes=0`` builds the network without fc8 (e.g. mmaction2's backbone);
    then ``fc8`` and ``prob`` cannot be extracted.
    """

    head_name = "fc8"

    def __init__(self, num_classes: int = SPORTS1M_CLASSES, dropout: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {dropout}")
        self.dropout = dropout
        for name, c_in, c_out in CONV_LAYERS:
            self.add_module(name, nn.Conv3d(c_in, c_out, kernel_size=3, padding=1))
        self.fc6 = nn.Linear(POOL5_SIZE, FC_SIZE)
        self.fc7 = nn.Linear(FC_SIZE, FC_SIZE)
        self.num_classes = num_classes
        self.fc8 = nn.Linear(FC_SIZE, num_classes) if num_classes else None

    @property
    def available_layers(self) -> Tuple[str, ...]:
        return FEATURE_LAYERS if self.fc8 is not None else FEATURE_LAYERS[:3]

    def feature_dim(self, layer: str) -> int:
        dim = FEATURE_DIMS[layer]
        return self.num_classes if dim is None else dim

    def forward_features(self, clips: torch.Tensor) -> torch.Tensor:
        """Convolutions and pools: N x 3 x 16 x 112 x 112 -> N x 512 x 1 x 4 x 4."""
        x = clips
        for name, _, _ in CONV_LAYERS:
            # In place: the convolution's output is a fresh tensor that nothing else reads.
            x = F.relu(getattr(self, name)(x), inplace=True)
            if name in POOL_AFTER:
                kernel, ceil = POOL_AFTER[name]
                x = max_pool_pairs(x, kernel, ceil)
        return x

    def extract(self, clips: torch.Tensor, layers: Iterable[str]) -> Dict[str, torch.Tensor]:
        """Return the requested layers' activations, computing only as deep as needed."""
        wanted = set(layers)
        unknown = wanted - set(self.available_layers)
        if unknown:
            raise ValueError(f"layers not available in this network: {sorted(unknown)}")
        out: Dict[str, torch.Tensor] = {}
        # C x T x H x W flatten order, as Caffe's InnerProduct reads its bottom blob.
        x = self.forward_features(clips).flatten(1)
        if "pool5" in wanted:
            out["pool5"] = x
        if wanted <= {"pool5"}:
            return out
        x = F.relu(self.fc6(x))
        if "fc6" in wanted:
            out["fc6"] = x
        if wanted <= {"pool5", "fc6"}:
            return out
        x = F.relu(self.fc7(F.dropout(x, self.dropout, self.training)))
        if "fc7" in wanted:
            out["fc7"] = x
        if wanted <= {"pool5", "fc6", "fc7"}:
            return out
        x = F.dropout(x, self.dropout, self.training)
        assert self.fc8 is not None  # guaranteed by available_layers
        x = self.fc8(x)
        if "fc8" in wanted:
            out["fc8"] = x
        if "prob" in wanted:
            out["prob"] = torch.softmax(x.float(), dim=1)
        return out

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """Class logits (``fc8``, before Caffe's softmax ``prob``): N x num_classes."""
        if self.fc8 is None:
            raise ValueError("this C3D has no fc8 (no classifier), so it has no logits")
        return self.extract(clips, ["fc8"])["fc8"]


def max_pool_pairs(x: torch.Tensor, kernel: Tuple[int, int, int], ceil: bool) -> torch.Tensor:
    """``F.max_pool3d(x, kernel, kernel, ceil_mode=ceil)`` for kernels of 1s and 2s, as
    element-wise maxima of neighbouring slices.

    The result is identical (a maximum is exact); on a CPU it is several times faster
    than ``max_pool3d``, which computes indices and, for bf16 in channels-last
    layout, copies its input first (C3D spends ~25 % of a bf16 pass there). With
    ``ceil`` an odd last slice is its own window, as Caffe clips the last window.
    """
    sizes = x.shape[2:]
    if any(k not in (1, 2) for k in kernel) or (
            not ceil and any(k == 2 and n < 2 for k, n in zip(kernel, sizes))):
        return F.max_pool3d(x, kernel, kernel, ceil_mode=ceil)
    for dim, k in zip((2, 3, 4), kernel):
        if k == 1:
            continue
        n = x.shape[dim]
        if n % 2:
            x = torch.cat([x, x.narrow(dim, n - 1, 1)], dim) if ceil else x.narrow(dim, 0, n - 1)
        even = [slice(None)] * x.dim()
        odd = list(even)
        even[dim], odd[dim] = slice(0, None, 2), slice(1, None, 2)
        x = torch.maximum(x[tuple(even)], x[tuple(odd)])
    return x


def build_c3d(*, num_classes: int = SPORTS1M_CLASSES, seed: Optional[int] = None,
              dropout: float = 0.5) -> C3D:
    """A C3D in eval mode; with ``seed`` its random initialisation is reproducible."""
    if seed is None:
        model = C3D(num_classes, dropout)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = C3D(num_classes, dropout)
    return model.eval()


def state_dict_shapes(num_classes: int = SPORTS1M_CLASSES) -> Dict[str, Tuple[int, ...]]:
    """The expected shape of every tensor of the project's state dict."""
    shapes: Dict[str, Tuple[int, ...]] = {}
    for name, c_in, c_out in CONV_LAYERS:
        shapes[f"{name}.weight"] = (c_out, c_in, 3, 3, 3)
        shapes[f"{name}.bias"] = (c_out,)
    fcs: Sequence[Tuple[str, int, int]] = [("fc6", POOL5_SIZE, FC_SIZE), ("fc7", FC_SIZE, FC_SIZE)]
    if num_classes:
        fcs = [*fcs, ("fc8", FC_SIZE, num_classes)]
    for name, n_in, n_out in fcs:
        shapes[f"{name}.weight"] = (n_out, n_in)
        shapes[f"{name}.bias"] = (n_out,)
    return shapes


#: The registry's entry for C3D: Caffe's preset, fixed 16 x 112 x 112 input (fc6 is sized
#: for it), fc6 written when no layer is asked for.
ARCHITECTURE = Architecture(
    name="c3d", build=build_c3d, preset=SPORTS1M, clip_len=16, crop_size=112,
    layers=FEATURE_LAYERS, default_layer="fc6", fixed_input=True, head_name=C3D.head_name)
