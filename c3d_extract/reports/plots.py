"""The evaluation pictures (PNG): confusion matrix, compactness curve, ROC curve, t-SNE map,
training curves.

Figures are drawn with matplotlib's object API and the Agg renderer, so no
display or global pyplot state is involved.
"""

from __future__ import annotations

import io
import os
from typing import Optional, Sequence, Tuple

import numpy as np

from c3d_extract.atomic_files import write_atomically
from c3d_extract.errors import StoreError


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str) -> None:
    """Render ``figure`` as PNG in memory, then replace ``path`` atomically: a crash while
    saving leaves the previous picture whole."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise StoreError(f"the output directory {directory} does not exist")
    png = io.BytesIO()
    figure.savefig(png, format="png", bbox_inches="tight")
    write_atomically(path, png.getvalue())


def confusion_matrix(path: str, confusion: np.ndarray, classes: Sequence[str], *,
                     title: str = "Confusion matrix") -> None:
    """Row-normalised confusion matrix (rows: true class); counts written when classes are few."""
    k = len(classes)
    size = float(np.clip(0.28 * k + 3, 5, 30))
    figure = _figure(size + 1.5, size)
    axes = figure.add_subplot()
    totals = confusion.sum(axis=1, keepdims=True)
    rates = np.divide(confusion, totals, out=np.zeros(confusion.shape, float), where=totals > 0)
    image = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of the true class")
    font = float(np.clip(0.4 * size * 72 / k, 4, 10))  # about 40% of the cell pitch
    axes.set_xticks(range(k), labels=list(classes), rotation=90, fontsize=font)
    axes.set_yticks(range(k), labels=list(classes), fontsize=font)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if k <= 25:
        for i in range(k):
            for j in range(k):
                if confusion[i, j]:
                    axes.text(j, i, str(int(confusion[i, j])), ha="center", va="center",
                              fontsize=font, color="white" if rates[i, j] > 0.5 else "black")
    accuracy = np.trace(confusion) / max(confusion.sum(), 1)
    axes.set_title(f"{title} (accuracy {accuracy:.1%})")
    _save(figure, path)


def compactness(path: str, dims: Sequence[int], accuracies: Sequence[float], *,
                label: str = "C3D (this run)",
                reference: Optional[Sequence[Tuple[int, float]]] = None,
                reference_label: str = "paper, UCF101", full_accuracy: Optional[float] = None
                ) -> None:
    """Accuracy against PCA dimensions on a log axis, optionally with the paper's curve."""
    figure = _figure(6, 4.2)
    axes = figure.add_subplot()
    axes.plot(dims, np.asarray(accuracies) * 100, "o-", label=label)
    if reference:
        ref_dims, ref_acc = zip(*reference)
        axes.plot(ref_dims, np.asarray(ref_acc) * 100, "s--", color="grey", label=reference_label)
    if full_accuracy is not None:
        axes.axhline(full_accuracy * 100, color="tab:orange", linestyle=":",
                     label="no PCA")
    from matplotlib.ticker import NullFormatter
    axes.set_xscale("log")
    ticks = sorted(set(dims) | {d for d, _ in (reference or ())})
    axes.set_xticks(ticks, labels=[str(d) for d in ticks])
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel("dimensions after PCA")
    axes.set_ylabel("accuracy (%)")
    axes.set_title("Compactness: linear SVM accuracy after PCA")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    _save(figure, path)


def roc(path: str, same: np.ndarray, scores: np.ndarray, folds: np.ndarray, *,
        title: str = "Same / not-same ROC") -> None:
    """One thin curve per fold and the curve of all out-of-fold scores together."""
    from sklearn.metrics import auc, roc_curve
    figure = _figure(5.5, 5)
    axes = figure.add_subplot()
    for fold in np.unique(folds):
        mine = folds == fold
        if len(np.unique(same[mine])) == 2:
            fpr, tpr, _ = roc_curve(same[mine], scores[mine])
            axes.plot(fpr, tpr, color="grey", alpha=0.35, linewidth=0.8)
    fpr, tpr, _ = roc_curve(same, scores)
    axes.plot(fpr, tpr, color="tab:blue", linewidth=2,
              label=f"all folds pooled (AUC {auc(fpr, tpr):.3f})")
    axes.plot([0, 1], [0, 1], "k:", linewidth=0.8, label="chance")
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title(title)
    axes.legend(loc="lower right")
    _save(figure, path)


def scatter_by_class(path: str, points: np.ndarray, codes: np.ndarray, classes: Sequence[str],
                     *, title: str = "t-SNE of video descriptors") -> None:
    """2-D points coloured by class, with a legend (outside the axes when classes are many)."""
    from matplotlib import colormaps
    k = len(classes)
    colours = colormaps["tab10" if k <= 10 else "tab20"]
    markers = "os^Dv<>pPX*h"
    figure = _figure(7 if k <= 20 else 10, 6)
    axes = figure.add_subplot()
    for code, name in enumerate(classes):
        mine = codes == code
        if mine.any():
            axes.scatter(points[mine, 0], points[mine, 1], s=18, label=name,
                         color=colours(code % colours.N),
                         marker=markers[(code // colours.N) % len(markers)])
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title(title)
    if k <= 12:
        axes.legend(loc="best", fontsize=8, markerscale=1.2)
    else:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=6,
                    ncol=max(1, int(np.ceil(k / 40))), markerscale=1.0)
    _save(figure, path)


def training_curves(path: str, rows: Sequence[dict]) -> None:
    """Loss and top-1 accuracy per epoch, one line per split (rows as in metrics.csv)."""
    figure = _figure(11, 4.2)
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    markers = {"train": "o-", "val": "s-", "test": "D"}
    for split in ("train", "val", "test"):
        mine = [row for row in rows if row["split"] == split]
        if not mine:
            continue
        epochs = [row["epoch"] for row in mine]
        loss_axes.plot(epochs, [row["loss"] for row in mine], markers[split], label=split)
        accuracy_axes.plot(epochs, [100 * row["top1"] for row in mine], markers[split],
                           label=split + (" (video level)" if split == "test" else ""))
    for axes, label in ((loss_axes, "cross-entropy loss"), (accuracy_axes, "top-1 accuracy (%)")):
        axes.set_xlabel("epoch")
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
        axes.legend()
    accuracy_axes.set_ylim(0, 100)
    loss_axes.set_title("Loss per epoch")
    accuracy_axes.set_title("Accuracy per epoch")
    _save(figure, path)
