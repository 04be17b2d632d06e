"""Compare two weights files layer by layer: which known transform maps one onto the other.

Both files are read as ``c3d-weights`` reads them (any format, converted to Caffe
order). For each layer, the transforms a converter may have applied are tried on
A's weight until one gives B's: identity, reversal of any of kD, kH, kW (and kH/kW
swapped), fc6's inputs in (C, T, H, W) vs (T, H, W, C) order, a transposed
square dense kernel. Biases must be equal. A layer matches when the largest
difference is within half-precision rounding of B's largest value, so a copy
stored in float16 still matches.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from c3d_extract.weights import layouts
from c3d_extract.weights.convert import LoadedWeights
from c3d_extract.weights.kernel_orders import KERNEL_ORDERS, REVERSED_AXES
from c3d_extract.weights.loading import load_state_dict

#: A layer matches when max |T(A) - B| <= MATCH_TOLERANCE * max |B| (float16 rounding).
MATCH_TOLERANCE = 2.0 ** -10

IDENTICAL, TRANSFORMED, DIFFERENT = "identical", "transformed", "different"

Transform = Callable[[torch.Tensor], torch.Tensor]
_AXIS_NAMES = {2: "kD", 3: "kH", 4: "kW"}


@dataclass(frozen=True)
class LayerComparison:
    """One layer: the transform that maps A's weight onto B's (None: none of the known ones),
    the largest absolute difference after it (weight and bias; without any transform when none
    matches), and B's largest value."""

    layer: str
    transform: Optional[str]
    max_difference: float
    scale: float
    only_in: str = ""          # "A" or "B" when the other file lacks the layer
    reversed_axes: Tuple[int, ...] = ()


@dataclass(frozen=True)
class Comparison:
    a: LoadedWeights
    b: LoadedWeights
    layers: Tuple[LayerComparison, ...]
    status: str                # IDENTICAL, TRANSFORMED or DIFFERENT
    verdict: str


def _conv_transforms() -> List[Tuple[str, Tuple[int, ...], bool, Transform]]:
    out = []
    for swap in (False, True):
        for count in range(4):
            for axes in itertools.combinations((2, 3, 4), count):
                parts = [f"{', '.join(_AXIS_NAMES[a] for a in axes)} reversed"] if axes else []
                if swap:
                    parts.append("kH and kW swapped")

                def transform(x: torch.Tensor, axes=axes, swap=swap) -> torch.Tensor:
                    y = torch.flip(x, axes) if axes else x
                    return y.transpose(3, 4) if swap else y

                out.append(("; ".join(parts) or "identity", axes, swap, transform))
    return out


def _dense_transforms(layer: str, shape: Tuple[int, ...]) -> List[Tuple[str, Transform]]:
    out: List[Tuple[str, Transform]] = [("identity", lambda x: x)]
    if len(shape) == 2 and shape[0] == shape[1]:
        out.append(("transposed", lambda x: x.T))
    if layer == "fc6":
        out.append(("fc6 inputs (T,H,W,C) -> (C,T,H,W)",
                    lambda x: torch.from_numpy(layouts.fc6_columns_from_thwc(x.numpy()))))
        out.append(("fc6 inputs (C,T,H,W) -> (T,H,W,C)",
                    lambda x: torch.from_numpy(layouts.fc6_columns_to_thwc(x.numpy()))))
    return out


def _difference(x: torch.Tensor, y: torch.Tensor) -> float:
    if x.shape != y.shape:
        return float("inf")
    return float((x - y).abs().max()) if x.numel() else 0.0


def compare_layer(layer: str, a: Dict[str, torch.Tensor],
                  b: Dict[str, torch.Tensor]) -> LayerComparison:
    """The first known transform mapping A's ``layer`` onto B's, identity tried first."""
    weight_a, weight_b = a[f"{layer}.weight"], b[f"{layer}.weight"]
    bias_a, bias_b = a[f"{layer}.bias"], b[f"{layer}.bias"]
    scale = max((float(t.abs().max()) for t in (weight_b, bias_b) if t.numel()), default=0.0)
    bias = _difference(bias_a, bias_b)
    tolerance = MATCH_TOLERANCE * scale
    if weight_a.dim() == 5:
        candidates = [(name, axes, transform) for name, axes, swap, transform
                      in _conv_transforms()]
    else:
        candidates = [(name, (), transform)
                      for name, transform in _dense_transforms(layer, tuple(weight_a.shape))]
    identity = float("inf")
    for name, axes, transform in candidates:
        mapped = transform(weight_a)
        if tuple(mapped.shape) != tuple(weight_b.shape):
            continue
        if name != "identity" and _difference(mapped[:1], weight_b[:1]) > tolerance:
            continue  # the first output unit already differs: skip the full comparison
        difference = max(_difference(mapped, weight_b), bias)
        if name == "identity":
            identity = difference
        if difference <= tolerance:
            return LayerComparison(layer, name, difference, scale, reversed_axes=axes)
    return LayerComparison(layer, None, identity, scale)


def _layers(state: Dict[str, torch.Tensor]) -> List[str]:
    return [k.rpartition(".")[0] for k in state if k.endswith(".weight")]


def _order_hint(weights: LoadedWeights, axes: Tuple[int, ...], label: str) -> Optional[str]:
    """If A read in another kernel order would be identical to B, say which."""
    true_axes = tuple(sorted(set(REVERSED_AXES[weights.kernel_order]) ^ set(axes)))
    for order in KERNEL_ORDERS:
        if REVERSED_AXES[order] == true_axes:
            how = "assumed" if weights.kernel_order_assumed else "read"
            return (f"{label}'s kernels were {how} as {weights.kernel_order}; read with "
                    f"--kernel-order {order} they equal the other file's")
    return None


def compare_weights(a: LoadedWeights, b: LoadedWeights) -> Comparison:
    """Compare two loaded weights layer by layer and say in one line what they are."""
    layers_a, layers_b = _layers(a.state_dict), _layers(b.state_dict)
    results: List[LayerComparison] = []
    for layer in layers_a + [name for name in layers_b if name not in layers_a]:
        if layer not in layers_b or layer not in layers_a:
            results.append(LayerComparison(layer, None, float("nan"), float("nan"),
                                           only_in="A" if layer in layers_a else "B"))
        else:
            results.append(compare_layer(layer, a.state_dict, b.state_dict))
    common = [r for r in results if not r.only_in]
    only = [f"{r.layer} only in {r.only_in}" for r in results if r.only_in]
    unmatched = [r.layer for r in common if r.transform is None]
    transformed = [r for r in common if r.transform not in (None, "identity")]
    largest = max((r.max_difference for r in common if r.transform), default=0.0)
    tail = f" ({'; '.join(only)})" if only else ""
    if not common or unmatched:
        status = DIFFERENT
        verdict = (f"different networks: {len(unmatched)} of {len(common)} layers match no "
                   f"known transform ({', '.join(unmatched[:6])})" if common
                   else "different networks: no layer in common") + tail
    elif not transformed:
        status = IDENTICAL
        verdict = (f"same network: all {len(common)} layers both files hold are identical "
                   f"(largest difference {largest:.3g})") + tail
    else:
        status = TRANSFORMED
        groups: Dict[str, List[str]] = {}
        for r in transformed:
            groups.setdefault(str(r.transform), []).append(r.layer)
        described = "; ".join(f"{name}: {', '.join(names)}" for name, names in groups.items())
        verdict = f"same network up to known transforms (B = transform(A)): {described}{tail}"
        convs = [r for r in common if r.layer.startswith("conv")]
        axes = {r.reversed_axes for r in convs}
        only_reversals = all(r.transform == "identity" or r.reversed_axes for r in convs)
        if len(axes) == 1 and only_reversals and next(iter(axes)) and \
                all(r.transform == "identity" for r in common if not r.layer.startswith("conv")):
            hint = _order_hint(a, next(iter(axes)), "A")
            if hint:
                verdict += f". {hint}"
    return Comparison(a, b, tuple(results), status, verdict)


def compare_files(path_a: str, path_b: str, *,
                  kernel_orders: Sequence[Optional[str]] = (None, None)) -> Comparison:
    """Read two weights files of any formats (in Caffe order) and compare them."""
    a = load_state_dict(path_a, kernel_order=kernel_orders[0], use_cache=False)
    b = load_state_dict(path_b, kernel_order=kernel_orders[1], use_cache=False)
    return compare_weights(a, b)
