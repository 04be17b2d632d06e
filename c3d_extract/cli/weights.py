"""``c3d-weights``: convert, inspect, compare and download weights of every architecture;
list and clear the OpenVINO cache."""

from __future__ import annotations

import sys
from typing import Optional

import click

from c3d_extract.cli.common import (EXIT_OK, DefaultCommandGroup, echo_table, kernel_order_option,
                                    library_errors, show_warnings_plainly)
from c3d_extract.errors import UsageError
from c3d_extract.weights import hub, loading
from c3d_extract.weights.convert import read_class_names
from c3d_extract.weights.kernel_orders import DESCRIPTIONS, KERNEL_ORDERS

#: ``c3d-weights compare`` exit codes besides 0 (identical), 1 (error) and 2 (usage).
EXIT_SAME_UP_TO_TRANSFORMS = 3
EXIT_DIFFERENT = 4


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Convert, inspect, compare and download weights: C3D Sports-1M in every
    published format, and R(2+1)D-18 (torchvision files, c3d-train model files).

    Every published format is read from its content: the Caffe C3D binary,
    Keras 2 / TensorFlow and Keras 1 / Theano HDF5, DavideA's c3d.pickle,
    mmaction2 pretrain files and checkpoints, and this project's safetensors /
    PyTorch state dicts. Each is put in Caffe's kernel order.

    \b
    Example:
      c3d-weights fetch sports1m-caffe
      c3d-weights convert sports1M_weights_tf.h5 -o c3d.safetensors --labels labels.txt
      c3d-weights info c3d.safetensors
      c3d-weights compare c3d.pickle conv3d_deepnetA_sport1m_iter_1900000
      c3d-weights cache          (the OpenVINO cache; `cache clear` empties it)
    """
    show_warnings_plainly()


@cli.command()
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False),
              help="The safetensors file to write.")
@click.option("--labels", type=click.Path(dir_okay=False),
              help="Class names, one per line in class order, embedded in the output.")
@kernel_order_option
@library_errors
def convert(source: str, output: str, labels: Optional[str],
            kernel_order: Optional[str]) -> None:
    """Convert SOURCE (any supported format) to a checked safetensors file.

    The output records the source format, the source's sha256, the kernel
    order the source was read as (and whether it was assumed), the input
    preprocessing preset, the number of classes and, with --labels, the class
    names. A file of another architecture (torchvision's R(2+1)D-18 .pth, a
    c3d-train model file) becomes a model file: its architecture, classes
    (Kinetics-400's for a 400-class torchvision file), clip length, crop size
    and preset are in the metadata, and --weights reads it as it is.

    \b
    Example:
      c3d-weights convert conv3d_deepnetA_sport1m_iter_1900000 -o c3d_sports1m.safetensors
      c3d-weights convert r2plus1d_18-91a641e6.pth -o r2plus1d_18.safetensors
    """
    from c3d_extract.weights.networks import convert_network_file, read_network_file

    network = read_network_file(source)
    if network is not None and network.arch != "c3d":
        if kernel_order is not None:
            raise UsageError(f"--kernel-order applies to C3D files only; {source} holds "
                             f"{network.arch}")
        names = None if labels is None else read_class_names(labels)
        written = convert_network_file(network, output, names)
        click.echo(f"{output}: {network.source_format} ({network.arch}) -> safetensors model "
                   f"file, {len(written.state_dict)} tensors, {written.num_classes} classes"
                   f"{', with class names' if names or network.class_names else ''}")
        return
    weights = loading.convert_file(source, output, labels=labels, kernel_order=kernel_order)
    click.echo(f"{output}: {weights.source_format} -> safetensors, "
               f"{len(weights.state_dict)} tensors, {weights.num_classes} classes"
               f"{', with class names' if weights.class_names else ''}")
    for note in weights.conversion_notes:
        click.echo(f"note: {note}", err=True)


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False))
@kernel_order_option
@library_errors
def info(path: str, kernel_order: Optional[str]) -> None:
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
    described = loading.describe(path, kernel_order=kernel_order)
    click.echo(f"file: {described.path}")
    click.echo(f"format: {described.source_format}")
    click.echo(f"sha256: {described.sha256}")
    how = "ASSUMED, not verified" if described.kernel_order_assumed else "read as"
    click.echo(f"kernel order: {described.kernel_order} ({how}: "
               f"{DESCRIPTIONS[described.kernel_order]}; converted to Caffe order)")
    click.echo(f"parameters: {described.parameter_count:,}")
    names = len(described.class_names)
    embedded = (" (names embedded)" if names and names == described.num_classes
                else f" ({names} names embedded, which do not match)" if names else "")
    click.echo(f"classes: {described.num_classes}{embedded}")
    click.echo(f"extractable layers: {', '.join(described.available_layers)}")
    for note in described.conversion_notes:
        click.echo(f"note: {note}")
    click.echo("")
    stats = {s.name: s for s in described.tensor_stats}
    echo_table([(name, " x ".join(map(str, shape)), stats[name].dtype,
                 stats[name].nonfinite, "yes" if stats[name].constant else "")
                for name, shape in described.layers],
               header=("tensor", "shape", "dtype", "NaN/Inf", "constant"))
    for stat in described.tensor_stats:
        if stat.nonfinite:
            click.echo(f"WARNING: {stat.name} holds {stat.nonfinite} NaN or infinite values; "
                       "these weights are refused for extraction", err=True)


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
@click.argument("file_a", type=click.Path(dir_okay=False))
@click.argument("file_b", type=click.Path(dir_okay=False))
@click.option("--kernel-order-a", type=click.Choice(KERNEL_ORDERS),
              help="Declare FILE_A's kernel order (as --kernel-order does).")
@click.option("--kernel-order-b", type=click.Choice(KERNEL_ORDERS),
              help="Declare FILE_B's kernel order.")
@library_errors
def compare(file_a: str, file_b: str, kernel_order_a: Optional[str],
            kernel_order_b: Optional[str]) -> None:
    """Compare two weights files of any formats and architectures, layer by layer.

    Both are read as `info` reads them (converted to Caffe order). For each
    layer the known transforms are tried on FILE_A's weight (identity;
    reversal of any of kD, kH, kW; kH and kW swapped; fc6 inputs in (C,T,H,W)
    vs (T,H,W,C) order; a transposed dense kernel) until one gives FILE_B's;
    the table shows it and the largest difference after it, then a one-line
    verdict. Files of other architectures (R(2+1)D-18 from torchvision or
    c3d-train) are compared tensor by tensor under their own names, with the
    same transforms for 5-D kernels and square dense ones; files of two
    architectures are different networks. Exit status: 0 every layer both
    files hold is identical, 3 the
    same network up to known transforms, 4 different networks, 1 a file
    cannot be read, 2 usage error.

    \b
    Example:
      c3d-weights compare c3d.pickle conv3d_deepnetA_sport1m_iter_1900000
      c3d-weights compare run1/model.safetensors run2/model.safetensors
    """
    from c3d_extract.weights.compare import DIFFERENT, IDENTICAL, compare_files

    result = compare_files(file_a, file_b, kernel_orders=(kernel_order_a, kernel_order_b))
    for label, weights, arch in (("A", result.a, result.arch_a), ("B", result.b, result.arch_b)):
        assumed = ", assumed" if weights.kernel_order_assumed else ""
        what = (f"kernel order {weights.kernel_order}{assumed}" if arch == "c3d"
                else f"architecture {arch}")
        click.echo(f"{label}: {weights.name} ({weights.source_format}, {what}, "
                   f"sha256 {weights.sha256[:16]})")
    click.echo("")
    per_tensor = "c3d" not in (result.arch_a, result.arch_b)
    rows = []
    for layer in result.layers:
        if layer.only_in:
            rows.append((layer.layer, f"only in {layer.only_in}", "", ""))
        else:
            rows.append((layer.layer, layer.transform or "no known transform",
                         f"{layer.max_difference:.3g}", f"{layer.scale:.3g}"))
    if rows:
        echo_table(rows, header=("tensor" if per_tensor else "layer", "B = transform(A)",
                                 "max |diff|", "max |B|"))
    click.echo("")
    click.echo(f"verdict: {result.verdict}")
    if result.status == IDENTICAL:
        sys.exit(EXIT_OK)
    sys.exit(EXIT_DIFFERENT if result.status == DIFFERENT else EXIT_SAME_UP_TO_TRANSFORMS)


@cli.command()
@click.argument("name", type=click.Choice(sorted(hub.REGISTRY)))
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
        path = hub.fetch(name, progress=progress, force=force)
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
    records = hub.read_records()
    rows = []
    for name, item in sorted(hub.REGISTRY.items()):
        downloaded = hub.local_path(item).is_file()
        rows.append((name, item.format, "yes" if downloaded else "no",
                     str(records.get(name, {}).get("sha256", ""))[:16], item.description))
    echo_table(rows, header=("name", "format", "cached", "sha256", "description"))


@cli.group(cls=DefaultCommandGroup, default_command="list", no_args_is_help=False)
def cache() -> None:
    """List the OpenVINO cache: the networks converted for OpenVINO, one per weights
    file and layers (any batch size), with their sizes and last use.

    The cache is in the project's cache folder (openvino/), or in
    $C3D_EXTRACT_OPENVINO_CACHE. It holds at most $C3D_EXTRACT_OPENVINO_CACHE_MB
    (default 4096 MB): past that, the entries used least recently are removed.
    A removed entry costs only a new conversion (about 30 s) on its next use.

    \b
    Example:
      c3d-weights cache
      c3d-weights cache clear
    """


@cache.command(name="list", hidden=True)
@library_errors
def list_cache() -> None:
    """List the OpenVINO cache (what `c3d-weights cache` runs).

    \b
    Example:
      c3d-weights cache
    """
    import time

    from c3d_extract.extraction.openvino_runner import (CACHE_ENV, CACHE_LIMIT_ENV, cache_entries,
                                                        openvino_cache_dir, openvino_cache_limit)

    root, limit = openvino_cache_dir(), openvino_cache_limit()
    entries = cache_entries(root)
    total = sum(entry.size for entry in entries)
    click.echo(f"OpenVINO cache: {root} (${CACHE_ENV} to move it)")
    click.echo(f"{len(entries)} {'entry' if len(entries) == 1 else 'entries'}, "
               f"{_megabytes(total)} MB of at most {limit >> 20} MB (${CACHE_LIMIT_ENV})")
    if not entries:
        return
    rows = []
    for entry in entries:
        key = entry.key
        weights_id = str(key.get("weights_id", "?"))
        sha256, _, order = weights_id.partition(":")
        shape = key.get("clip_shape")
        rows.append((entry.path.name[:12], _megabytes(entry.size),
                     time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.last_used)),
                     (sha256[:12] if len(sha256) == 64 else sha256)
                     + (f" ({order})" if order else ""),
                     ",".join(key.get("layers", ())) or "?",
                     "x".join(str(n) for n in shape[1:]) if shape else "(older version)"))
    echo_table(rows, header=("entry", "MB", "last used", "weights sha256", "layers",
                             "clip"))


@cache.command()
@library_errors
def clear() -> None:
    """Remove every entry of the OpenVINO cache.

    \b
    Example:
      c3d-weights cache clear
    """
    from c3d_extract.extraction.openvino_runner import clear_cache, openvino_cache_dir

    root = openvino_cache_dir()
    removed, size = clear_cache(root)
    click.echo(f"removed {removed} {'entry' if removed == 1 else 'entries'} "
               f"({_megabytes(size)} MB) from {root}")


def _megabytes(size: int) -> str:
    return f"{size / (1 << 20):.1f}"


def main() -> None:
    cli(prog_name="c3d-weights")


if __name__ == "__main__":
    main()
