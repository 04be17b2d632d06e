"""Compare two weights files layer by layer: which known transform maps one onto the other.

Both files are read as ``c3d-weights`` reads them (any format, converted to Caffe
order). For each layer, the transforms a converter may have applied are tried on
A's weight until one gives B's: identity, reversal of any of kD, kH, kW (and kH/kW
swapped), fc6's inputs in (C, T, H, W) vs (T, H, W, C) order, a transposed
square dense kernel. Biases must be equal. A layer matches when the largest
difference is within half-precision rounding of B's largest value, so a copy
stored in float16 still matches.

Files of other architectures (a ``c3d-train`` model file, a torchvision R(2+1)D-18 file) are
compared tensor by tensor under their own names, with the same transforms for 5-D kernels
and square 2-D ones; a file of one architecture never matches one of another.
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
    layers: Tuple[LayerComparison, ...]  # per tensor for architectures other than C3D
    status: str                # IDENTICAL, TRANSFORMED or DIFFERENT
    verdict: str
    arch_a: str = "c3d"
    arch_b: str = "c3d"


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


def compare_tensor(name: str, a: torch.Tensor, b: torch.Tensor) -> LayerComparison:
    """The first known transform mapping tensor A onto tensor B (identity first): kernel axis
    reversals and the kH/kW swap for 5-D tensors, transposition for square 2-D ones."""
    a, b = a.detach(), b.detach()
    if a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b):
        scale = float(b.abs().max()) if b.numel() and b.dtype != torch.bool else 0.0
        return LayerComparison(name, "identity", 0.0, scale)
    a, b = a.to(torch.float32), b.to(torch.float32)
    scale = float(b.abs().max()) if b.numel() else 0.0
    tolerance = MATCH_TOLERANCE * scale
    candidates: List[Tuple[str, Tuple[int, ...], Transform]]
    if a.dim() == 5:
        candidates = [(label, axes, transform) for label, axes, _, transform
                      in _conv_transforms()]
    elif a.dim() == 2:
        candidates = [(label, (), transform)
                      for label, transform in _dense_transforms(name, tuple(a.shape))
                      if not label.startswith("fc6")]
    else:
        candidates = [("identity", (), lambda x: x)]
    identity = float("inf")
    for label, axes, transform in candidates:
        mapped = transform(a)
        if tuple(mapped.shape) != tuple(b.shape):
            continue
        if label != "identity" and mapped.dim() and \
                _difference(mapped[:1], b[:1]) > tolerance:
            continue  # the first output unit already differs: skip the full comparison
        difference = _difference(mapped, b)
        if label == "identity":
            identity = difference
        if difference <= tolerance:
            return LayerComparison(name, label, difference, scale, reversed_axes=axes)
    return LayerComparison(name, None, identity, scale)


def compare_state_dicts(a: Dict[str, torch.Tensor],
                        b: Dict[str, torch.Tensor]) -> Tuple[Tuple[LayerComparison, ...], str,
                                                             str]:
    """Tensor by tensor (A's order, then B's extra tensors): results, status and verdict."""
    results = [compare_tensor(name, a[name], b[name]) if name in b
               else LayerComparison(name, None, float("nan"), float("nan"), only_in="A")
               for name in a]
    results += [LayerComparison(name, None, float("nan"), float("nan"), only_in="B")
                for name in b if name not in a]
    common = [r for r in results if not r.only_in]
    only = [r.layer for r in results if r.only_in]
    unmatched = [r.layer for r in common if r.transform is None]
    transformed = [r for r in common if r.transform not in (None, "identity")]
    largest = max((r.max_difference for r in common if r.transform), default=0.0)
    tail = f" ({len(only)} tensors only in one file: {', '.join(only[:4])})" if only else ""
    if not common or unmatched:
        verdict = (f"different networks: {len(unmatched)} of {len(common)} tensors match no "
                   f"known transform ({', '.join(unmatched[:6])})" if common
                   else "different networks: no tensor in common") + tail
        return tuple(results), DIFFERENT, verdict
    if only:
        return tuple(results), DIFFERENT, f"different networks{tail}"
    if not transformed:
        return tuple(results), IDENTICAL, (
            f"same network: all {len(common)} tensors are identical (largest difference "
            f"{largest:.3g})")
    groups: Dict[str, List[str]] = {}
    for r in transformed:
        groups.setdefault(str(r.transform), []).append(r.layer)
    described = "; ".join(f"{label}: {', '.join(names[:4])}"
                          f"{f' and {len(names) - 4} more' if len(names) > 4 else ''}"
                          for label, names in groups.items())
    return tuple(results), TRANSFORMED, (
        f"same network up to known transforms (B = transform(A)): {described}")


def _as_weights(read) -> LoadedWeights:
    return LoadedWeights(state_dict=read.state_dict, name=read.path, sha256=read.sha256,
                         source_format=read.source_format, preprocessing=read.preset,
                         class_names=read.class_names)


def compare_files(path_a: str, path_b: str, *,
                  kernel_orders: Sequence[Optional[str]] = (None, None)) -> Comparison:
    """Read two weights files of any formats and architectures and compare them: C3D files
    layer by layer in Caffe order, others tensor by tensor."""
    from c3d_extract.errors import UsageError
    from c3d_extract.weights.networks import read_network_file

    networks = [read_network_file(path) for path in (path_a, path_b)]
    if not any(n is not None and n.arch != "c3d" for n in networks):
        a = load_state_dict(path_a, kernel_order=kernel_orders[0], use_cache=False)
        b = load_state_dict(path_b, kernel_order=kernel_orders[1], use_cache=False)
        return compare_weights(a, b)
    for label, network, order in zip("AB", networks, kernel_orders):
        if order is not None and network is not None and network.arch != "c3d":
            raise UsageError(f"--kernel-order-{label.lower()} applies to C3D files only; "
                             f"{network.path} holds {network.arch}")
    sides = []
    for path, network, order in zip((path_a, path_b), networks, kernel_orders):
        if network is not None:
            sides.append((network.arch, _as_weights(network)))
        else:
            sides.append(("c3d", load_state_dict(path, kernel_order=order, use_cache=False)))
    (arch_a, a), (arch_b, b) = sides
    if arch_a != arch_b:
        return Comparison(a, b, (), DIFFERENT,
                          f"different networks: A is {arch_a}, B is {arch_b}", arch_a, arch_b)
    layers, status, verdict = compare_state_dicts(a.state_dict, b.state_dict)
    return Comparison(a, b, layers, status, verdict, arch_a, arch_b)
