"""``c3d-weights``: convert, inspect and download the published Sports-1M C3D weights."""

from __future__ import annotations

import sys
from typing import Optional

import click

from c3d_extract.cli.common import echo_table, library_errors
from c3d_extract.weights import convert as convert_lib
from c3d_extract.weights import registry
from c3d_extract.weights.formats import KERAS_LAYOUTS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Convert, inspect and download C3D Sports-1M weights.

    Every published format is read from its content: the Caffe C3D binary,
    Keras HDF5 (TensorFlow or Theano layout), DavideA's c3d.pickle, mmaction2
    checkpoints, and this project's safetensors / PyTorch state dicts.

    \b
    Example:
      c3d-weights fetch sports1m-caffe
      c3d-weights convert sports1M_weights_tf.h5 -o c3d.safetensors --labels labels.txt
      c3d-weights info c3d.safetensors
    """


@cli.command()
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False),
              help="The safetensors file to write.")
@click.option("--labels", type=click.Path(dir_okay=False),
              help="Class names, one per line in class order, embedded in the output.")
@click.option("--keras-layout", type=click.Choice(list(KERAS_LAYOUTS)),
              help="Layout of a Keras file whose backend cannot be told from the file "
                   "(theano: kernels flipped). Ignored for other formats.")
@library_errors
def convert(source: str, output: str, labels: Optional[str],
            keras_layout: Optional[str]) -> None:
    """Convert SOURCE (any supported format) to a checked safetensors file.

    The output records the source format, the source's sha256, the input
    preprocessing preset, the number of classes and, with --labels, the class
    names.

    \b
    Example:
      c3d-weights convert conv3d_deepnetA_sport1m_iter_1900000 -o c3d_sports1m.safetensors
    """
    weights = convert_lib.convert_file(source, output, labels=labels, keras_layout=keras_layout)
    click.echo(f"{output}: {weights.source_format} -> safetensors, "
               f"{len(weights.state_dict)} tensors, {weights.num_classes} classes"
               f"{', with class names' if weights.class_names else ''}")
    for note in weights.conversion_notes:
        click.echo(f"note: {note}", err=True)


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--keras-layout", type=click.Choice(list(KERAS_LAYOUTS)),
              help="Layout of a Keras file whose backend cannot be told from the file.")
@library_errors
def info(path: str, keras_layout: Optional[str]) -> None:
    """Show a weights file's format, layers with shapes, parameter count and sha256.

    A model file (c3d-train's model.safetensors) or a torchvision R(2+1)D-18 file
    also shows its architecture, classes, clip length, crop size and preprocessing.

    \b
    Example:
      c3d-weights info c3d.pickle
      c3d-weights info run/model.safetensors
    """
    from c3d_extract.weights.networks import describe_model

    model = describe_model(path)
    if model is not None:
        _echo_model_info(model)
        return
    described = convert_lib.describe(path, keras_layout=keras_layout)
    click.echo(f"file: {described.path}")
    click.echo(f"format: {described.source_format}")
    click.echo(f"sha256: {described.sha256}")
    click.echo(f"parameters: {described.parameter_count:,}")
    click.echo(f"classes: {described.num_classes}"
               f"{' (names embedded)' if described.class_names else ''}")
    click.echo(f"extractable layers: {', '.join(described.available_layers)}")
    for note in described.conversion_notes:
        click.echo(f"note: {note}")
    click.echo("")
    echo_table([(name, " x ".join(map(str, shape))) for name, shape in described.layers],
               header=("tensor", "shape"))


def _echo_model_info(model) -> None:
    click.echo(f"file: {model.path}")
    click.echo(f"format: {model.source_format}")
    click.echo(f"architecture: {model.arch}")
    click.echo(f"sha256: {model.sha256}")
    click.echo(f"parameters: {model.parameter_count:,}")
    names = ", ".join(model.class_names[:10]) + (" ..." if len(model.class_names) > 10 else "")
    click.echo(f"classes: {model.num_classes}{f' ({names})' if names else ''}")
    click.echo(f"clip length: {model.clip_len}")
    click.echo(f"crop size: {model.crop_size}")
    click.echo(f"preprocessing: {model.preset.to_json()}")
    click.echo(f"extractable layers: {', '.join(model.layers)} (default {model.default_layer})")
    for key, value in sorted(model.extra_metadata.items()):
        click.echo(f"{key}: {value if len(value) <= 200 else value[:200] + ' ...'}")
    click.echo("")
    echo_table([(name, " x ".join(map(str, shape))) for name, shape in model.tensors],
               header=("tensor", "shape"))


@cli.command()
@click.argument("name", type=click.Choice(sorted(registry.REGISTRY)))
@click.option("--force", is_flag=True, help="Download again even if the file is cached.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@library_errors
def fetch(name: str, force: bool, quiet: bool) -> None:
    """Download the published weights NAME into the cache directory.

    The file's sha256 is recorded on the first download and checked every
    time it is used. Set C3D_EXTRACT_REGISTRY_URL to download from a mirror.

    \b
    Example:
      c3d-weights fetch sports1m-caffe
      c3d-extract videos/ -o features.h5 --weights sports1m-caffe
    """
    from tqdm import tqdm

    bar: Optional[tqdm] = None

    def progress(received: int, total: Optional[int]) -> None:
        nonlocal bar
        if quiet:
            return
        if bar is None:
            bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                       desc=name, file=sys.stderr)
        bar.update(received - bar.n)

    try:
        path = registry.fetch(name, progress=progress, force=force)
    finally:
        if bar is not None:
            bar.close()
    click.echo(str(path))


@cli.command(name="list")
@library_errors
def list_entries() -> None:
    """List the published weights that `fetch` knows, and which are downloaded.

    \b
    Example:
      c3d-weights list
    """
    records = registry.read_records()
    rows = []
    for name, item in sorted(registry.REGISTRY.items()):
        downloaded = registry.local_path(item).is_file()
        rows.append((name, item.format, "yes" if downloaded else "no",
                     str(records.get(name, {}).get("sha256", ""))[:16], item.description))
    echo_table(rows, header=("name", "format", "cached", "sha256", "description"))


def main() -> None:
    cli(prog_name="c3d-weights")


if __name__ == "__main__":
    main()
