"""Write checked weights as safetensors with their provenance, and describe weights files.

The metadata of a converted file says where the tensors came from
(``source_format``, ``source_sha256``), the input preset they expect
(``preprocessing``, JSON), ``num_classes``, optional ``class_names`` (JSON list)
and any ``conversion_notes`` (JSON list). Files are written to a temporary name
and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Optional, Sequence, Tuple

from c3d_extract.errors import UsageError, WeightsError
from c3d_extract.models.c3d import C3D
from c3d_extract.weights.loading import LoadedWeights, load_state_dict

if TYPE_CHECKING:
    from c3d_extract.weights.formats import KerasLayout

METADATA_FORMAT = "c3d-extract-weights/1"


def weights_metadata(weights: LoadedWeights) -> Dict[str, str]:
    """The safetensors metadata (all strings) describing ``weights``."""
    metadata = {
        "format": METADATA_FORMAT,
        "source_format": weights.source_format,
        "source_sha256": weights.sha256,
        "preprocessing": weights.preprocessing.to_json(),
        "num_classes": str(weights.num_classes),
    }
    if weights.class_names:
        metadata["class_names"] = json.dumps(list(weights.class_names), ensure_ascii=False)
    if weights.conversion_notes:
        metadata["conversion_notes"] = json.dumps(list(weights.conversion_notes),
                                                  ensure_ascii=False)
    return metadata


def write_safetensors(weights: LoadedWeights, out: os.PathLike) -> Path:
    """Write ``weights`` with its metadata to ``out`` atomically (temporary file, rename)."""
    from safetensors.torch import save_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}-", suffix=".tmp")
    os.close(handle)
    try:
        tensors = {k: v.contiguous() for k, v in weights.state_dict.items()}
        save_file(tensors, temp, metadata=weights_metadata(weights))
        os.replace(temp, out)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return out


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


def _keras_layout(name: Optional[str]) -> Optional[KerasLayout]:
    from c3d_extract.weights.formats import KERAS_LAYOUTS

    if name is None:
        return None
    if name not in KERAS_LAYOUTS:
        raise UsageError(f"unknown Keras layout {name!r}; choose from {', '.join(KERAS_LAYOUTS)}")
    return KERAS_LAYOUTS[name]


def convert_file(source: str, out: str, *, labels: Optional[str] = None,
                 keras_layout: Optional[str] = None) -> LoadedWeights:
    """Convert any supported weights file to a checked safetensors file at ``out``."""
    layout = _keras_layout(keras_layout)
    if not os.path.isfile(source):
        from c3d_extract.errors import InputNotFoundError
        raise InputNotFoundError(f"no weights file at {source}")
    if os.path.abspath(out) == os.path.abspath(source):
        raise UsageError("the output would overwrite the source file")
    weights = load_state_dict(source, keras_layout=layout, use_cache=False)
    if labels is not None:
        weights = with_class_names(weights, read_class_names(labels), labels)
    write_safetensors(weights, out)
    return weights


@dataclass(frozen=True)
class WeightsInfo:
    """What ``c3d-weights info`` shows about a weights file."""

    path: str
    source_format: str
    sha256: str
    layers: Tuple[Tuple[str, Tuple[int, ...]], ...]  # tensor name, shape
    parameter_count: int
    num_classes: int
    available_layers: Tuple[str, ...]
    class_names: Tuple[str, ...]
    conversion_notes: Tuple[str, ...]


def describe(path: str, *, keras_layout: Optional[str] = None) -> WeightsInfo:
    """Read and check a weights file of any supported format (nothing is written)."""
    import torch

    layout = _keras_layout(keras_layout)
    if not os.path.isfile(path):
        raise WeightsError(f"no weights file at {path}")
    weights = load_state_dict(path, keras_layout=layout, use_cache=False)
    with torch.device("meta"):  # the architecture only, without allocating parameters
        model = C3D(weights.num_classes)
    return WeightsInfo(path=path, source_format=weights.source_format, sha256=weights.sha256,
                       layers=tuple((k, tuple(v.shape)) for k, v in weights.state_dict.items()),
                       parameter_count=sum(v.numel() for v in weights.state_dict.values()),
                       num_classes=weights.num_classes,
                       available_layers=model.available_layers,
                       class_names=weights.class_names,
                       conversion_notes=weights.conversion_notes)
