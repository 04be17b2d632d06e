"""What a run reports: per-epoch rows (metrics.csv), test results (results.json), curves
and the confusion matrix (PNG). Every file is written atomically, by the main process only.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from c3d_extract.atomic_files import write_atomically
from c3d_extract.reports import plots

#: Columns of metrics.csv; a value a split does not have is left empty.
COLUMNS = ("epoch", "split", "loss", "top1", "top5", "clip_top1", "samples", "lr", "seconds")


@dataclass
class Tally:
    """Running sums over the samples (clips or videos) seen so far."""

    loss_sum: float = 0.0
    top1: float = 0.0
    top5: float = 0.0
    count: float = 0.0

    def as_list(self) -> List[float]:
        return [self.loss_sum, self.top1, self.top5, self.count]

    @classmethod
    def from_list(cls, values: Sequence[float]) -> "Tally":
        return cls(*[float(v) for v in values])

    def add(self, other: "Tally") -> "Tally":
        return Tally(*[a + b for a, b in zip(self.as_list(), other.as_list())])

    def summary(self) -> Dict[str, float]:
        n = max(self.count, 1.0)
        return {"loss": self.loss_sum / n, "top1": self.top1 / n, "top5": self.top5 / n,
                "samples": int(self.count)}


def topk_hits(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per row, whether the label is among the ``k`` highest scores (k capped at the
    number of classes). Ties are broken by class order, as ``argsort`` is stable."""
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return (order == labels[:, None]).any(axis=1)


def confusion(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts, rows the true class and columns the predicted one."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def per_class_accuracy(matrix: np.ndarray, classes: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    totals = matrix.sum(axis=1)
    return {name: {"top1": float(matrix[i, i] / totals[i]) if totals[i] else None,
                   "videos": int(totals[i])}
            for i, name in enumerate(classes)}


def write_text(path: str, text: str) -> None:
    write_atomically(path, text.encode())


def write_json(path: str, value: Any) -> None:
    write_text(path, json.dumps(value, indent=2, allow_nan=False) + "\n")


def write_metrics_csv(path: str, rows: Sequence[Dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _cell(row.get(key)) for key in COLUMNS})
    write_text(path, buffer.getvalue())


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_curves(path: str, rows: Sequence[Dict[str, Any]]) -> None:
    plots.training_curves(path, rows)  # replaced atomically, as every picture


def write_confusion(path: str, matrix: np.ndarray, classes: Sequence[str],
                    title: Optional[str] = None) -> None:
    plots.confusion_matrix(path, matrix, classes,
                           title=title or "Test confusion matrix, video level")
