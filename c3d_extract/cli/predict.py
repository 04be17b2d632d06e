"""``c3d-predict``: each video's top classes, averaged over its clips, and per window
(a CSV timeline, an overlay video)."""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import Dict, List, Optional, Sequence

import click

from c3d_extract.cli.common import (EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, compute_options,
                                    kernel_order_option, library_errors, raise_interrupt,
                                    show_warnings_plainly)
from c3d_extract.cli.extract import BarProgress
from c3d_extract.errors import VideoReadError
from c3d_extract.predict.classify import Prediction
from c3d_extract.predict.overlay import DEFAULT_FPS, overlay_destinations
from c3d_extract.predict.timeline import write_timeline_csv
from c3d_extract.store.records import VideoRecord
from c3d_extract.store.rerun_checks import check_output_location
from c3d_extract.video.opening import DECODERS

EXAMPLES = """
\b
Examples:
  c3d-predict match.mp4 --weights sports1m-caffe --labels labels.txt
  c3d-predict videos/ --top-k 3 --json --weights c3d_sports1m.safetensors > predictions.json
  c3d-predict match.mp4 --timeline match.csv --smooth 3 --overlay match-labelled.mp4
  c3d-predict videos/ frames/clip_001/ --timeline all.csv --overlay-dir labelled/
"""


class PredictBar(BarProgress):
    """A tqdm bar on stderr: videos done / total, and the windows of the videos in progress
    with their rate (counted from when the network is ready, so loading and converting it
    do not lower it). Redrawn at least every half second, so a single long video moves too.
    """

    def __init__(self, quiet: bool) -> None:
        super().__init__(quiet)
        self.windows = self.videos = 0
        self.drawn = self.started

    def notice(self, text: str) -> None:
        click.echo(text, err=True)  # before the bar, and with --quiet too

    def clips_done(self, n_clips: int) -> None:
        self.windows += n_clips
        self._postfix()

    def frames_decoded(self, n_frames: int) -> None:
        pass

    def video_done(self, record: VideoRecord) -> None:
        self.videos += 1
        if self.bar is not None:
            self.bar.update(1)
        self._postfix()

    def _postfix(self) -> None:
        if self.bar is None:
            return
        rate = self.windows / max(time.monotonic() - self.started, 1e-9)
        self.bar.set_postfix_str(f"{self.windows} windows, {rate:.1f} windows/s",
                                 refresh=False)
        if time.monotonic() - self.drawn >= 0.5:
            self.bar.refresh()
            self.drawn = time.monotonic()


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("videos", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--weights", help="Weights file (any published C3D format with fc8, a c3d-train "
              "model.safetensors, a torchvision R(2+1)D-18 .pth), registry name, or 'random'. "
              "Default: weights/c3d_sports1m.safetensors or the cache.")
@kernel_order_option
@click.option("--labels", type=click.Path(dir_okay=False),
              help="Class names, one per line in class order (default: the names embedded in "
              "the weights, else class numbers).")
@click.option("-k", "--top-k", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of text.")
@click.option("--stride", type=click.IntRange(min=1),
              help="Frames between windows (default: half the model's clip length, 8 for C3D).")
@click.option("--timeline", type=click.Path(dir_okay=False),
              help="Write a CSV file with one row per window of every video: video, "
              "start_frame, end_frame, start_s, end_s, then label_i, probability_i (top-k).")
@click.option("--smooth", default=1, show_default=True, type=click.IntRange(min=1),
              help="Moving average over this many windows before the per-window top-k "
              "(timeline and overlay).")
@click.option("--overlay", type=click.Path(dir_okay=False),
              help="Write the (single) input video re-encoded as H.264 (.mp4, .m4v, .mov, .mkv) "
              "with the predictions drawn on every frame.")
@click.option("--overlay-dir", type=click.Path(file_okay=False),
              help="Write one overlay video per input into this folder: <video id>.mp4.")
@click.option("--fps", type=click.FloatRange(min=0.001),
              help=f"Frame rate of frame folders and of videos that state none "
              f"(default {DEFAULT_FPS:g}), for times and overlays.")
@click.option("--mean", type=click.Path(exists=True, dir_okay=False),
              help="Mean to subtract: .npy or Caffe .binaryproto (default: the weights' preset).")
@click.option("--batch-size", default=0, type=click.IntRange(min=0),
              help="Clips per forward pass (default: 32 on CUDA, 8 on CPU).")
@compute_options
@click.option("--decoder", default="decord", show_default=True,
              type=click.Choice(sorted(DECODERS)))
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--allow-damaged", is_flag=True,
              help="Predict from the frames that decode in videos damaged part way or "
              "truncated, instead of refusing them.")
@library_errors
def cli(videos: Sequence[str], weights: Optional[str], kernel_order: Optional[str],
        labels: Optional[str], top_k: int, as_json: bool, stride: Optional[int],
        timeline: Optional[str], smooth: int, overlay: Optional[str],
        overlay_dir: Optional[str], fps: Optional[float], mean: Optional[str],
        batch_size: int, device: str, precision: str, allow_emulated_precision: bool,
        backend: str, decoder: str, quiet: bool, allow_damaged: bool) -> None:
    """Print each video's top-k classes with probabilities; optionally per window.

    VIDEOS are files, frame folders (numbered JPEG/PNG images, one video each)
    or directories (searched recursively for both). Each video's probabilities
    are the mean of the softmax (`prob`) over its clips (the model's clip
    length, 16 frames for C3D, at --stride), with the preprocessing of the
    weights. --timeline and --overlay show the top-k of each window. Exit
    status: 0 every video was predicted, 3 some could not be decoded (or their
    overlay not written), 2 usage error, 1 other error, 130 interrupted (nothing is
    written: the predictions are printed once every video is done).
    """
    from c3d_extract.extraction.options import ExtractOptions
    from c3d_extract.predict.classify import class_names_for, predict_in_order
    from c3d_extract.video.sources import find_videos
    from c3d_extract.weights.convert import read_class_names
    from c3d_extract.weights.networks import load_model

    show_warnings_plainly()
    found = find_videos(list(videos))
    if found.skipped:
        click.echo(found.skipped_line(), err=True)
    sources = found.sources
    overlays = overlay_destinations(sources, overlay, overlay_dir)
    if timeline is not None:
        check_output_location(timeline)
    progress = PredictBar(quiet)
    previous_handler = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        loaded = load_model(weights, kernel_order=kernel_order)
        names = class_names_for(loaded, read_class_names(labels) if labels else None)
        options = ExtractOptions(batch_size=batch_size, device=device, precision=precision,
                                 allow_emulated_precision=allow_emulated_precision,
                                 backend=backend, decoder=decoder, kernel_order=kernel_order,
                                 allow_damaged=allow_damaged)
        predictions = predict_in_order(
            [(s.id, s.path) for s in sources], loaded, top_k=top_k, class_names=names,
            options=options, mean=mean, stride=stride, smooth=smooth,
            timeline=bool(timeline or overlays), progress=progress)
    except KeyboardInterrupt:
        progress.close()
        click.echo(f"interrupted after {progress.videos} of {len(sources)} videos: nothing is "
                   "written (the predictions are printed when every video is done); rerun "
                   "the command to predict again", err=True)
        sys.exit(EXIT_INTERRUPTED)
    finally:
        progress.close()
        signal.signal(signal.SIGTERM, previous_handler)
    for prediction in predictions:
        for warning in prediction.warnings:
            click.echo(f"warning: {prediction.video_id}: {warning}", err=True)
        if prediction.error and prediction.top:  # damage let through by --allow-damaged
            click.echo(f"warning: {prediction.video_id}: {prediction.error}", err=True)
    if timeline is not None:
        write_timeline_csv(timeline, [p.timeline for p in predictions if p.timeline],
                           min(top_k, loaded.num_classes), fps=fps or DEFAULT_FPS)
    failed_overlays = write_overlays(predictions, {s.id: s.path for s in sources}, overlays, fps)
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in predictions], indent=2, ensure_ascii=False))
    else:
        click.echo("\n\n".join("\n".join(text_lines(p)) for p in predictions))
    failed = [p for p in predictions if not p.top]
    sys.exit(EXIT_SOME_FAILED if failed or failed_overlays else EXIT_OK)


def write_overlays(predictions: Sequence[Prediction], paths_of: Dict[str, str],
                   overlays: Dict[str, str], fps: Optional[float]) -> List[str]:
    """Write each predicted video's overlay; returns the ids whose overlay failed (each
    reported on stderr). A file that cannot be written stops the run."""
    from c3d_extract.predict.overlay import write_overlay

    failed = []
    for prediction in predictions:
        output = overlays.get(prediction.video_id)
        if output is None or prediction.timeline is None:
            continue
        try:
            write_overlay(paths_of[prediction.video_id], prediction.timeline, output, fps=fps)
        except VideoReadError as error:
            click.echo(f"overlay failed: {prediction.video_id}: {error}", err=True)
            failed.append(prediction.video_id)
    return failed


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
