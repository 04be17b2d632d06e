"""``c3d-pca``: compactness of descriptors under PCA, PCA files, reduced features and t-SNE."""

from __future__ import annotations

import csv
import io
from typing import Optional

import click

from c3d_extract.atomic_files import write_atomically
from c3d_extract.cli.common import DefaultCommandGroup, echo_table, library_errors, parse_int_list
from c3d_extract.cli.evaluation import (LABEL_SOURCES_HELP, c_option, label_options, load_labels,
                                        parse_C, pct, warn)
from c3d_extract.evaluation.labelled_features import load_labelled
from c3d_extract.evaluation.pca import (PAPER_UCF101_COMPACTNESS, compactness, fit_file, load_pca,
                                        pca_warnings, save_pca, transform_file, write_activitynet)
from c3d_extract.evaluation.svm import SVMOptions
from c3d_extract.evaluation.tsne import embed
from c3d_extract.reports import plots

FEATURES = click.Path(dir_okay=False)
DEFAULT_COMMAND = "compact"


@click.group(cls=DefaultCommandGroup, default_command=DEFAULT_COMMAND,
             context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """PCA of C3D descriptors: how compact they are, PCA files and reduced features.

    Without a command name, ``compact`` runs (the paper's accuracy-against-
    dimensions table).

    \b
    Example:
        c3d-pca feats.h5 labels.csv --dims 10,50,100,500 --plot compactness.png
        c3d-pca fit feats.h5 --dims 500 -o pca.h5
        c3d-pca transform pca.h5 feats.h5 -o reduced.h5
        c3d-pca transform pca.h5 feats.h5 --activitynet -o activitynet.h5
        c3d-pca tsne feats.h5 labels.csv -o tsne.png
    """


@main.command(name=DEFAULT_COMMAND, epilog=LABEL_SOURCES_HELP)
@click.argument("features", type=FEATURES)
@click.argument("labels", required=False, type=click.Path(dir_okay=False))
@click.option("--dims", default="10,50,100,500", show_default=True,
              help="Comma-separated numbers of PCA dimensions.")
@click.option("--layer", default="fc6", show_default=True)
@c_option()
@click.option("--holdout", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.3, show_default=True,
              help="Without a split column: fraction of each class held out for testing.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the table as CSV.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Write accuracy against dimensions (log axis) as a PNG.")
@click.option("--paper-reference", is_flag=True,
              help="Draw the paper's UCF101 curve (10/50/100/500 -> 52.8/72.6/75.6/79.4 %) "
                   "on the plot.")
@label_options
@library_errors
def compact_command(features: str, labels: Optional[str], dims: str, layer: str, C: str,
                    holdout: float, seed: int, csv_path: Optional[str], plot: Optional[str],
                    paper_reference: bool, ucf101: Optional[str], hmdb51: Optional[str],
                    fold: int, allow_missing: bool) -> None:
    """Accuracy of a linear SVM after PCA to each of --dims (the default command).

    The PCA is fitted on the training videos only: split == train when the
    labels have a split column, else a seeded stratified hold-out split
    (--holdout of each class for testing). Prints dims, explained variance and
    accuracy.

    \b
    Example:
        c3d-pca feats.h5 labels.csv --dims 10,50,100,500 --plot compactness.png
    """
    dimensions = parse_int_list(dims, "--dims")
    label_table = load_labels(labels, ucf101, hmdb51, fold)
    options = SVMOptions(layer=layer, C=parse_C(C), seed=seed)
    result = compactness(features, label_table, dimensions, layer=layer, options=options,
                         holdout=holdout, allow_missing=allow_missing)
    warn(result.report.problems())
    click.echo(f"labels: {label_table.source}; {result.note}; PCA fitted on the "
               f"{result.n_train} training videos")
    table = [(row.dims, pct(row.explained_variance), pct(row.accuracy),
              pct(row.mean_class_accuracy)) for row in result.rows]
    echo_table(table, ("dims", "explained variance", "accuracy", "mean per-class"))
    if result.full_dims_accuracy is not None:
        click.echo(f"without PCA: accuracy {pct(result.full_dims_accuracy)}")
    if csv_path:
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(("dims", "explained_variance", "accuracy", "mean_class_accuracy"))
        for row in result.rows:
            writer.writerow((row.dims, f"{row.explained_variance:.6f}", f"{row.accuracy:.6f}",
                             f"{row.mean_class_accuracy:.6f}"))
        write_atomically(csv_path, text.getvalue().encode("utf-8"))
        click.echo(f"table -> {csv_path}")
    if plot:
        plots.compactness(plot, [row.dims for row in result.rows],
                          [row.accuracy for row in result.rows],
                          label=f"{layer}, this run",
                          reference=PAPER_UCF101_COMPACTNESS if paper_reference else None,
                          full_accuracy=result.full_dims_accuracy)
        click.echo(f"plot -> {plot}")


@main.command(name="fit")
@click.argument("features", type=FEATURES)
@click.option("--dims", type=click.IntRange(min=1), required=True,
              help="Number of principal axes to keep.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="PCA file to write (data/x_mean, data/U, data/S).")
@click.option("--layer", default="fc6", show_default=True)
@click.option("--labels", "labels", type=click.Path(dir_okay=False), default=None,
              help="Fit on this labels CSV's training videos only (split == train).")
@click.option("--allow-missing", is_flag=True,
              help="With --labels: go on without unmatched videos (still reported).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--chunk-rows", type=click.IntRange(min=1), default=4096, show_default=True)
@library_errors
def fit_command(features: str, dims: int, output: str, layer: str, labels: Optional[str],
                allow_missing: bool, overwrite: bool, chunk_rows: int) -> None:
    """Fit a PCA on the descriptors of every video with features (read in chunks).

    The file has ActivityNet's layout: data/x_mean, data/U (axes as columns),
    data/S (variance along each axis); a descriptor x becomes
    (x - x_mean) @ U[:, :dims].

    \b
    Example:
        c3d-pca fit feats.h5 --layer fc7 --dims 500 -o pca.h5
    """
    label_table = load_labels(labels, None, None, 1) if labels else None
    model = fit_file(features, dims, layer=layer, labels=label_table,
                     allow_missing=allow_missing, chunk_rows=chunk_rows)
    save_pca(model, output, overwrite=overwrite)
    click.echo(f"PCA of {model.n_samples} {layer} descriptors: {model.dims} dims keep "
               f"{pct(model.explained_variance_ratio(model.dims))} of the variance -> {output}")


@main.command(name="transform")
@click.argument("pca", type=click.Path(dir_okay=False))
@click.argument("features", type=FEATURES)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
@click.option("--dims", type=click.IntRange(min=1), default=None,
              help="Keep only the first DIMS axes (default: all in the PCA file).")
@click.option("--layer", default=None, help="Layer to reduce (default: the PCA's).")
@click.option("--activitynet", is_flag=True,
              help="Write per-clip features in ActivityNet's layout (v_<id>/c3d_features); "
                   "needs an extraction with --per-clip.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@library_errors
def transform_command(pca: str, features: str, output: str, dims: Optional[int],
                      layer: Optional[str], activitynet: bool, overwrite: bool) -> None:
    """Project descriptors with a PCA file into a new, smaller feature file.

    By default the output has the extractor's layout (read it with
    read_features), one reduced row per video. With --activitynet each video's
    per-clip features become group v_<id> with dataset c3d_features (clips x dims).

    \b
    Example:
        c3d-pca transform pca.h5 feats.h5 -o reduced.h5
        c3d-pca transform pca.h5 feats.h5 --activitynet -o activitynet.h5
    """
    model = load_pca(pca)
    layer = layer or model.layer
    warn(pca_warnings(model, features, layer))
    if activitynet:
        count = write_activitynet(model, features, output, dims=dims, layer=layer,
                                  overwrite=overwrite)
        click.echo(f"{count} videos, per-clip {layer} in {dims or model.dims} dims, "
                   f"ActivityNet layout -> {output}")
    else:
        count = transform_file(model, features, output, dims=dims, layer=layer,
                               overwrite=overwrite)
        click.echo(f"{count} videos, {layer} in {dims or model.dims} dims -> {output}")


@main.command(name="tsne", epilog=LABEL_SOURCES_HELP)
@click.argument("features", type=FEATURES)
@click.argument("labels", required=False, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="PNG to write.")
@click.option("--layer", default="fc6", show_default=True)
@click.option("--perplexity", type=float, default=None,
              help="t-SNE perplexity (default: 30, less for small sets).")
@click.option("--seed", type=int, default=0, show_default=True)
@label_options
@library_errors
def tsne_command(features: str, labels: Optional[str], output: str, layer: str,
                 perplexity: Optional[float], seed: int, ucf101: Optional[str],
                 hmdb51: Optional[str], fold: int, allow_missing: bool) -> None:
    """2-D t-SNE map of the labelled videos, coloured by class with a legend.

    Every labelled video is shown (train and test splits together).

    \b
    Example:
        c3d-pca tsne feats.h5 labels.csv -o tsne.png
    """
    label_table = load_labels(labels, ucf101, hmdb51, fold)
    data = load_labelled(features, label_table, layer=layer, allow_missing=allow_missing)
    warn(data.report.problems())
    points = embed(data.features, perplexity=perplexity, seed=seed)
    plots.scatter_by_class(output, points, data.codes, data.classes,
                           title=f"t-SNE of {layer} descriptors ({len(data.ids)} videos)")
    click.echo(f"t-SNE of {len(data.ids)} videos -> {output}")
