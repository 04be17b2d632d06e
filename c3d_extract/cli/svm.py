"""``c3d-svm``: linear SVMs on stored descriptors (train, eval, predict, cv), action similarity."""

from __future__ import annotations

import csv
import os
from typing import Optional

import click

from c3d_extract.atomic_files import replaced_atomically
from c3d_extract.cli.common import echo_table, library_errors
from c3d_extract.cli.evaluation import (LABEL_SOURCES_HELP, c_option, label_options, load_labels,
                                        note, parse_C, pct, warn)
from c3d_extract.errors import UsageError
from c3d_extract.evaluation.similarity import DISTANCES, evaluate_pairs, read_pairs_csv
from c3d_extract.evaluation.svm import (DEFAULT_GRID, SOLVERS, SVMOptions, cross_validate, evaluate,
                                        load_model, predict, save_model, train)
from c3d_extract.reports import plots

FEATURES = click.Path(dir_okay=False)
LAYER_HELP = "Which stored layer to use (default: fc6 if the file has it, else its first layer, " \
    "e.g. avgpool of R(2+1)D-18 files)."


def check_feature_file(features: str, other: Optional[str], usage: str) -> None:
    """FEATURES must be an HDF5 file; the usual mistake, arguments in the wrong order, is
    named as such before any other file is read."""
    import h5py

    if not os.path.isfile(features) or h5py.is_hdf5(features):
        return  # a missing file is reported by the reader, with its name
    message = f"{features} is not an HDF5 feature file (c3d-extract's output)"
    if other is not None and os.path.isfile(other) and h5py.is_hdf5(other):
        message += f", but {other} is: the arguments are in the wrong order"
    raise UsageError(f"{message}; the order is: {usage}")


def default_layer(features: str) -> str:
    """fc6 when the file holds it (the paper's choice), else the first layer it holds."""
    from c3d_extract.store.read import read_attributes

    layers = [name for name in str(read_attributes(features).get("layers", "")).split(",")
              if name]
    return "fc6" if "fc6" in layers or not layers else layers[0]


def _grid(value: str) -> tuple:
    items = [item.strip() for item in value.split(",") if item.strip()]
    try:
        grid = tuple(float(item) for item in items)
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}",
                                 param_hint="--grid") from None
    if not grid or any(not c > 0 for c in grid):
        raise click.BadParameter("expected positive numbers", param_hint="--grid")
    return grid


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Linear SVMs on C3D video descriptors, as in the paper (fc6 + one-vs-rest linear SVM).

    \b
    Example:
        c3d-svm train feats.h5 labels.csv -o model.skops --C auto
        c3d-svm eval model.skops feats.h5 labels.csv --plot confusion.png
        c3d-svm predict model.skops feats.h5 -o predictions.csv
        c3d-svm cv feats.h5 labels.csv --folds 5
        c3d-svm pairs feats.h5 pairs.csv --plot roc.png
    """


@main.command(name="train", epilog=LABEL_SOURCES_HELP)
@click.argument("features", type=FEATURES)
@click.argument("labels", required=False, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Model file to write (skops format).")
@click.option("--layer", default=None, help=LAYER_HELP)
@c_option()
@click.option("--grid", default=",".join(str(c) for c in DEFAULT_GRID), show_default=True,
              help="Values of C tried by --C auto.")
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True,
              help="Folds of the stratified cross-validation behind --C auto.")
@click.option("--solver", type=click.Choice(SOLVERS), default="linear", show_default=True,
              help="linear: LinearSVC in memory; sgd: SGDClassifier(loss='hinge') trained "
                   "chunk by chunk with partial_fit, for files larger than memory.")
@click.option("--epochs", type=click.IntRange(min=1), default=5, show_default=True,
              help="Passes over the file with --solver sgd.")
@click.option("--chunk-rows", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Descriptors read per chunk.")
@click.option("--seed", type=int, default=0, show_default=True)
@label_options
@library_errors
def train_command(features: str, labels: Optional[str], output: str, layer: Optional[str],
                  C: str,
                  grid: str, folds: int, solver: str, epochs: int, chunk_rows: int, seed: int,
                  ucf101: Optional[str], hmdb51: Optional[str], fold: int,
                  allow_missing: bool) -> None:
    """Train a one-vs-rest linear SVM on one layer's descriptors.

    When the labels have a split column, only the rows with split == train are
    used (the others are for eval). LABELS and FEATURES are matched as described
    below.

    \b
    Example:
        c3d-svm train feats.h5 labels.csv -o model.skops --C auto
        c3d-svm train feats.h5 --ucf101 ucfTrainTestlist --fold 1 -o model.skops
    """
    check_feature_file(features, labels, "c3d-svm train FEATURES.h5 [LABELS.csv]")
    layer = layer or default_layer(features)
    options = SVMOptions(layer=layer, C=parse_C(C), grid=_grid(grid), folds=folds,
                         solver=solver, epochs=epochs, seed=seed, chunk_rows=chunk_rows)
    label_table = load_labels(labels, ucf101, hmdb51, fold)
    result = train(features, label_table, options, allow_missing=allow_missing)
    warn(result.report.problems())
    warn(result.warnings)
    click.echo(f"labels: {label_table.source}; {result.note}")
    if result.grid is not None:
        click.echo(f"C chosen by {result.grid.folds}-fold stratified cross-validation "
                   f"(seed {seed}):")
        if result.grid.note:
            note(result.grid.note)
        echo_table([(f"{c:g}", pct(m), pct(s), "<-" if c == result.grid.best else "")
                    for c, m, s in zip(result.grid.C, result.grid.mean, result.grid.std)],
                   ("C", "accuracy", "std", "chosen"))
    model = result.model
    solver_name = "LinearSVC" if model.solver == "linear" else "SGDClassifier(hinge)"
    save_model(model, output)
    click.echo(f"trained {solver_name} (one-vs-rest) on {model.layer}: {model.n_train} videos, "
               f"{len(model.classes)} classes, C={model.C:g} -> {output}")


@main.command(name="eval", epilog=LABEL_SOURCES_HELP)
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("features", type=FEATURES)
@click.argument("labels", required=False, type=click.Path(dir_okay=False))
@click.option("--layer", default=None, help="Layer to score (default: the model's).")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Write the confusion matrix as a PNG.")
@click.option("--chunk-rows", type=click.IntRange(min=1), default=4096, show_default=True)
@label_options
@library_errors
def eval_command(model: str, features: str, labels: Optional[str], layer: Optional[str],
                 plot: Optional[str], chunk_rows: int, ucf101: Optional[str],
                 hmdb51: Optional[str], fold: int, allow_missing: bool) -> None:
    """Accuracy, mean per-class accuracy and a per-class table of a trained model.

    When the labels have a split column, only the rows with split == test are
    scored; without one every labelled video is.

    \b
    Example:
        c3d-svm eval model.skops feats.h5 labels.csv --plot confusion.png
    """
    check_feature_file(features, labels, "c3d-svm eval MODEL FEATURES.h5 [LABELS.csv]")
    svm = load_model(model)
    label_table = load_labels(labels, ucf101, hmdb51, fold)
    result = evaluate(svm, features, label_table, layer=layer, allow_missing=allow_missing,
                      chunk_rows=chunk_rows)
    warn(result.warnings)
    warn(result.report.problems())
    click.echo(f"labels: {label_table.source}; {result.note}")
    correct = sum(score.correct for score in result.per_class)
    click.echo(f"accuracy {pct(result.accuracy)} ({correct}/{len(result.ids)}), "
               f"mean per-class accuracy {pct(result.mean_class_accuracy)}")
    echo_table([(s.name, s.n, s.correct, pct(s.accuracy)) for s in result.per_class],
               ("class", "videos", "correct", "accuracy"))
    if plot:
        plots.confusion_matrix(plot, result.confusion, result.classes,
                               title=f"{svm.layer} linear SVM")
        click.echo(f"confusion matrix -> {plot}")


@main.command(name="predict")
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("features", type=FEATURES)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="CSV to write: video,label,score.")
@click.option("--layer", default=None, help="Layer to score (default: the model's).")
@click.option("--chunk-rows", type=click.IntRange(min=1), default=4096, show_default=True)
@library_errors
def predict_command(model: str, features: str, output: str, layer: Optional[str],
                    chunk_rows: int) -> None:
    """Predict the class of every video that has features.

    The score is the winning class's SVM decision value. Failed and skipped
    videos get no prediction; they are counted on stderr.

    \b
    Example:
        c3d-svm predict model.skops feats.h5 -o predictions.csv
    """
    check_feature_file(features, model, "c3d-svm predict MODEL FEATURES.h5 -o OUTPUT.csv")
    svm = load_model(model)
    result = predict(svm, features, layer=layer, chunk_rows=chunk_rows)
    warn(result.warnings)
    if result.without_features:
        shown = ", ".join(repr(v) for v, _ in result.without_features[:3])
        warn([f"{len(result.without_features)} videos have no features and no prediction "
              f"(e.g. {shown})"])
    with replaced_atomically(output, growth_bound=0) as temporary:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(("video", "label", "score"))
            for video, label, score in zip(result.ids, result.labels, result.scores):
                writer.writerow((video, label, f"{float(score):.6g}"))
    click.echo(f"{len(result.ids)} predictions -> {output}")


@main.command(name="cv", epilog=LABEL_SOURCES_HELP)
@click.argument("features", type=FEATURES)
@click.argument("labels", required=False, type=click.Path(dir_okay=False))
@click.option("--layer", default=None, help=LAYER_HELP)
@c_option(allow_auto=False)
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@label_options
@library_errors
def cv_command(features: str, labels: Optional[str], layer: Optional[str], C: str,
               folds: int,
               seed: int, ucf101: Optional[str], hmdb51: Optional[str], fold: int,
               allow_missing: bool) -> None:
    """Stratified k-fold cross-validated accuracy of a linear SVM.

    Every labelled video is used; a split column is ignored (HMDB51's unused
    videos stay out).

    \b
    Example:
        c3d-svm cv feats.h5 labels.csv --folds 5
    """
    value = parse_C(C)
    if value is None:
        raise UsageError("cv takes a number for --C (train --C auto chooses one)")
    check_feature_file(features, labels, "c3d-svm cv FEATURES.h5 [LABELS.csv]")
    layer = layer or default_layer(features)
    options = SVMOptions(layer=layer, C=value, folds=folds, seed=seed)
    label_table = load_labels(labels, ucf101, hmdb51, fold)
    result = cross_validate(features, label_table, options, allow_missing=allow_missing)
    warn(result.report.problems())
    warn(result.warnings)
    click.echo(f"labels: {label_table.source}; {result.note}")
    echo_table([(n + 1, pct(a), pct(m)) for n, (a, m)
                in enumerate(zip(result.accuracies, result.mean_class_accuracies))],
               ("fold", "accuracy", "mean per-class"))
    click.echo(f"{result.folds}-fold cross-validated accuracy {pct(result.mean)} "
               f"+/- {pct(result.std)} ({layer}, C={result.C:g}, seed {seed})")


@main.command(name="pairs")
@click.argument("features", type=FEATURES)
@click.argument("pairs", type=click.Path(dir_okay=False))
@click.option("--layers", default=None,
              help="Comma-separated layers to use (default: every layer in the file).")
@c_option(allow_auto=False)
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Write the ROC curve as a PNG.")
@click.option("--allow-missing", is_flag=True,
              help="Leave out pairs whose videos have no features (they are still reported).")
@click.option("--seed", type=int, default=0, show_default=True)
@library_errors
def pairs_command(features: str, pairs: str, layers: Optional[str], C: str,
                  plot: Optional[str], allow_missing: bool, seed: int) -> None:
    """Action similarity (ASLAN protocol): is a pair of videos the same action?

    PAIRS is a CSV with header video_a,video_b,same,fold (same: 1 or 0). For
    each layer, 12 distances between the pair's descriptors are computed (l1,
    l2, squared l2, cosine, correlation, Chebyshev, Canberra, Bray-Curtis, and
    on |x|/sum|x|: chi-square, Hellinger, histogram intersection, symmetric KL),
    standardised on the training folds, and a linear SVM is trained leaving one
    fold out at a time. Prints accuracy and ROC AUC per fold and their mean.

    \b
    Example:
        c3d-svm pairs feats.h5 pairs.csv --plot roc.png
    """
    value = parse_C(C)
    if value is None:
        raise UsageError("pairs takes a number for --C")
    check_feature_file(features, pairs, "c3d-svm pairs FEATURES.h5 PAIRS.csv")
    chosen = [layer.strip() for layer in layers.split(",") if layer.strip()] if layers else None
    result = evaluate_pairs(features, read_pairs_csv(pairs), chosen, C=value,
                            allow_missing=allow_missing, seed=seed)
    warn(result.dropped)
    click.echo(f"{len(result.same)} of {result.n_pairs} pairs, layers "
               f"{', '.join(result.layers)}, {len(DISTANCES)} distances each "
               f"({len(DISTANCES) * len(result.layers)} features)")
    echo_table([(f.fold, f.n_test, pct(f.accuracy), f"{f.auc:.3f}") for f in result.folds],
               ("fold", "pairs", "accuracy", "AUC"))
    click.echo(f"leave-one-fold-out: accuracy {pct(result.mean_accuracy)} +/- "
               f"{pct(result.std_accuracy)}, ROC AUC {result.mean_auc:.3f}")
    if plot:
        plots.roc(plot, result.same, result.scores, result.fold_of,
                  title=f"Same / not-same ROC ({', '.join(result.layers)})")
        click.echo(f"ROC curve -> {plot}")
