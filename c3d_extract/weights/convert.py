"""Conversion to Caffe order, and the converted weights written as safetensors.

``convert_stored`` takes a file's arrays as its reader found them (``formats``)
and puts them in the layout of ``nn.Conv3d`` / ``nn.Linear`` with Caffe's kernel
order: conv axes transposed, reversed kernel axes reversed back, dense kernels
transposed, fc6's inputs put back in (C, T, H, W) order.

The metadata of a converted file says where the tensors came from
(``source_format``, ``source_sha256``, ``source_kernel_order`` and whether that
order was assumed), the input preset they expect (``preprocessing``, JSON),
``num_classes``, optional ``class_names`` (JSON list) and any
``conversion_notes`` (JSON list). Files are written to a temporary name and
renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch

from c3d_extract.errors import UsageError, WeightsError
from c3d_extract.video.preprocess import SPORTS1M, Preprocessing
from c3d_extract.weights import layouts
from c3d_extract.weights.formats import StoredWeights
from c3d_extract.weights.kernel_orders import CAFFE, DESCRIPTIONS, check_kernel_order
from c3d_extract.weights.safetensors_file import write_safetensors_file

#: What users are told wherever weights read with an assumed kernel order are used.
ASSUMED_ORDER_NOTE = (
    "kernel order ASSUMED, not verified: read as {description} ({order}). DavideA's "
    "c3d.pickle was converted from keras-model-zoo's Theano weights and reproduces that "
    "model, which reverses every kernel in time (SPEC 4.5); if the file holds Caffe's kernels "
    "reversed in kH and kW instead, pass --kernel-order khkw-reversed. `c3d-weights compare "
    "FILE conv3d_deepnetA_sport1m_iter_1900000` settles it")


@dataclass(frozen=True)
class LoadedWeights:
    """A checked state dict in the project's naming and what is known about it."""

    state_dict: Dict[str, torch.Tensor] = field(repr=False)
    name: str                 # as given: path, registry name or "random"
    sha256: str               # of the source file ("random-seed-0" for random weights)
    source_format: str
    preprocessing: Preprocessing = SPORTS1M
    class_names: Tuple[str, ...] = ()
    conversion_notes: Tuple[str, ...] = ()  # e.g. how the source's own pipeline differed
    kernel_order: str = CAFFE              # the order the source file held, as read
    kernel_order_assumed: bool = False     # that order was inferred, not declared or known

    @property
    def num_classes(self) -> int:
        weight = self.state_dict.get("fc8.weight")
        return 0 if weight is None else int(weight.shape[0])

    @property
    def is_random(self) -> bool:
        return self.source_format == "random"


def _order_note(order: str, assumed: bool, declared: bool) -> Optional[str]:
    description = DESCRIPTIONS[order]
    if assumed:
        return ASSUMED_ORDER_NOTE.format(description=description, order=order)
    if declared:
        return f"kernel order declared: {description} ({order}); converted to Caffe order"
    if order != CAFFE:
        return f"kernels stored as {description}; converted to Caffe order"
    return None


def caffe_order_arrays(stored: StoredWeights, kernel_order: str,
                       source: str) -> Dict[str, torch.Tensor]:
    """``stored``'s arrays in ``nn.Conv3d`` / ``nn.Linear`` layout and Caffe order; shapes are
    checked against C3D afterwards (``loading.check_state_dict``)."""
    layout = stored.layout
    state: Dict[str, torch.Tensor] = {}
    for key, array in stored.arrays.items():
        layer, _, kind = key.rpartition(".")
        try:
            if kind == "weight" and layer.startswith("conv"):
                if layout.conv_channels_last:
                    if array.ndim != 5:
                        raise ValueError(f"a convolution kernel must be 5-D, not {array.shape}")
                    array = layouts.keras_conv_kernel(array, channels_first=False)
                if kernel_order != CAFFE:
                    array = layouts.kernel_to_caffe_order(array, kernel_order)
            elif kind == "weight" and layer.startswith("fc"):
                if layout.dense_in_out:
                    array = layouts.keras_dense_kernel(array)
                if layer == "fc6" and layout.fc6_inputs_thwc:
                    array = layouts.fc6_columns_from_thwc(array)
        except ValueError as error:
            raise WeightsError(f"{source}: layer {layer}: {error}") from None
        state[key] = torch.from_numpy(array)
    return state


def convert_stored(stored: StoredWeights, *, name: str, sha256: str,
                   kernel_order: Optional[str] = None) -> LoadedWeights:
    """``stored`` in Caffe order. ``kernel_order`` declares the order the file holds; by
    default the format's (``StoredLayout.kernel_order``) is taken."""
    declared = check_kernel_order(kernel_order) is not None
    order = kernel_order if declared else stored.layout.kernel_order
    if order is None:
        raise WeightsError(f"{name} ({stored.source_format}) does not say in which order its "
                           "kernels are: none of the published files is written this way. "
                           "Declare it with --kernel-order (caffe, kd-reversed or "
                           "khkw-reversed)")
    assumed = not declared and stored.layout.kernel_order_assumed
    notes = list(stored.notes)
    note = _order_note(order, assumed, declared)
    if note:
        notes.insert(0, note)
    return LoadedWeights(state_dict=caffe_order_arrays(stored, order, name), name=name,
                         sha256=sha256,
                         source_format=stored.source_format, conversion_notes=tuple(notes),
                         kernel_order=order, kernel_order_assumed=assumed)


METADATA_FORMAT = "c3d-extract-weights/1"


def weights_metadata(weights: LoadedWeights) -> Dict[str, str]:
    """The safetensors metadata (all strings) describing ``weights``."""
    metadata = {
        "format": METADATA_FORMAT,
        "source_format": weights.source_format,
        "source_sha256": weights.sha256,
        "preprocessing": weights.preprocessing.to_json(),
        "num_classes": str(weights.num_classes),
        "source_kernel_order": weights.kernel_order,
        "kernel_order_assumed": "true" if weights.kernel_order_assumed else "false",
    }
    if weights.class_names:
        metadata["class_names"] = json.dumps(list(weights.class_names), ensure_ascii=False)
    if weights.conversion_notes:
        metadata["conversion_notes"] = json.dumps(list(weights.conversion_notes),
                                                  ensure_ascii=False)
    return metadata


def write_safetensors(weights: LoadedWeights, out: os.PathLike) -> Path:
    """Write ``weights`` with its metadata to ``out`` atomically (temporary file, rename)."""
    return write_safetensors_file(weights.state_dict, out, weights_metadata(weights))


def read_class_names(path: str) -> Tuple[str, ...]:
    """Class names, one per line (0-based order); blank trailing lines are ignored."""
    from c3d_extract.errors import LabelsError

    try:
        with open(path, encoding="utf-8") as handle:
            lines = [line.rstrip("\r\n") for line in handle]
    except OSError as error:
        raise UsageError(f"cannot read the labels file {path}: {error}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    names = tuple(line.strip() for line in lines)
    if not names:
        raise LabelsError(f"the labels file {path} is empty")
    empty = [n + 1 for n, name in enumerate(names) if not name]
    if empty:
        raise LabelsError(f"the labels file {path} has empty lines ({empty[:5]})")
    return names


def with_class_names(weights: LoadedWeights, class_names: Sequence[str],
                     source: str) -> LoadedWeights:
    """``weights`` carrying ``class_names``; their count must match fc8."""
    from c3d_extract.errors import LabelsError

    if not weights.num_classes:
        raise LabelsError(f"{weights.name} has no fc8 (no classes), so class names from {source} "
                          "cannot be attached")
    if len(class_names) != weights.num_classes:
        raise LabelsError(f"{source} has {len(class_names)} class names, but {weights.name} "
                          f"has {weights.num_classes} classes")
    return replace(weights, class_names=tuple(class_names))
