"""``c3d-predict``: the top Sports-1M classes of each video, averaged over its clips."""

from __future__ import annotations

import json
import sys
from typing import List, Optional, Sequence

import click

from c3d_extract.cli.common import (EXIT_OK, EXIT_SOME_FAILED, library_errors,
                                    show_warnings_plainly)
from c3d_extract.decoders import DECODERS
from c3d_extract.predict import Prediction

EXAMPLES = """
\b
Examples:
  c3d-predict match.mp4 --weights sports1m-caffe --labels labels.txt
  c3d-predict videos/ --top-k 3 --json --weights c3d_sports1m.safetensors > predictions.json
"""


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("videos", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--weights", help="Weights file (any published format with fc8), registry name, "
              "or 'random'. Default: weights/c3d_sports1m.safetensors or the cache.")
@click.option("--labels", type=click.Path(dir_okay=False),
              help="Class names, one per line in class order (default: the names embedded in "
              "the weights, else class numbers).")
@click.option("-k", "--top-k", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of text.")
@click.option("--mean", type=click.Path(exists=True, dir_okay=False),
              help="Mean to subtract: .npy or Caffe .binaryproto (default: the weights' preset).")
@click.option("--batch-size", default=0, type=click.IntRange(min=0),
              help="Clips per forward pass (default: 32 on CUDA, 8 on CPU).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", default="auto", show_default=True,
              type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
              help="As for c3d-extract: auto is bf16 on CUDA and on CPUs with native bf16.")
@click.option("--allow-emulated-precision", is_flag=True,
              help="Run bf16/fp16 even on a CPU that emulates it (many times slower).")
@click.option("--backend", default="auto", show_default=True,
              type=click.Choice(["auto", "torch", "openvino"]),
              help="Engine of the network (auto: OpenVINO on an x86-64 CPU).")
@click.option("--decoder", default="decord", show_default=True,
              type=click.Choice(sorted(DECODERS)))
@library_errors
def cli(videos: Sequence[str], weights: Optional[str], labels: Optional[str], top_k: int,
        as_json: bool, mean: Optional[str], batch_size: int, device: str, precision: str,
        allow_emulated_precision: bool, backend: str, decoder: str) -> None:
    """Print each video's top-k Sports-1M classes with probabilities.

    VIDEOS are files or directories (searched recursively). Each video's
    probabilities are the mean of the softmax (`prob`) over its 16-frame clips
    at stride 8, with Caffe's preprocessing. Exit status: 0 every video was
    predicted, 3 some could not be decoded, 2 usage error, 1 other error.
    """
    from c3d_extract.extractor import ExtractOptions
    from c3d_extract.predict import class_names_for, predict_in_order
    from c3d_extract.sources import discover
    from c3d_extract.weights.convert import read_class_names
    from c3d_extract.weights.loading import resolve_weights

    show_warnings_plainly()
    sources = discover(list(videos))
    loaded = resolve_weights(weights)
    names = class_names_for(loaded, read_class_names(labels) if labels else None)
    options = ExtractOptions(layers=("prob",), per_clip=True, batch_size=batch_size,
                             device=device, precision=precision,
                             allow_emulated_precision=allow_emulated_precision,
                             backend=backend, decoder=decoder)
    predictions = predict_in_order([(s.id, s.path) for s in sources], loaded, top_k=top_k,
                                   class_names=names, options=options, mean=mean)
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in predictions], indent=2, ensure_ascii=False))
    else:
        click.echo("\n\n".join("\n".join(text_lines(p)) for p in predictions))
    failed = [p for p in predictions if not p.top]
    sys.exit(EXIT_SOME_FAILED if failed else EXIT_OK)


def text_lines(prediction: Prediction) -> List[str]:
    """A video's prediction as text: a header line, then one ranked line per class."""
    if not prediction.top:
        return [f"{prediction.video_id}: {prediction.status}: {prediction.error}"]
    plural = "" if prediction.n_clips == 1 else "s"
    lines = [f"{prediction.video_id} ({prediction.n_clips} clip{plural})"]
    width = max(len(score.name) for score in prediction.top)
    lines += [f"  {rank}. {score.name.ljust(width)}  {score.probability:.4f}"
              for rank, score in enumerate(prediction.top, 1)]
    return lines


def main() -> None:
    cli(prog_name="c3d-predict")


if __name__ == "__main__":
    main()
