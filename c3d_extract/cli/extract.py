"""``c3d-extract``: videos in, one HDF5 file of C3D descriptors out."""

from __future__ import annotations

import signal
import sys
import time
from typing import Optional, Sequence

import click

from c3d_extract.cli.common import (EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED,
                                    library_errors, show_warnings_plainly, split_list)
from c3d_extract.clips import SHORT_POLICIES
from c3d_extract.decoders import DECODERS
from c3d_extract.records import VideoRecord

EXAMPLES = """
\b
Examples:
  c3d-extract videos/ -o feats.h5
  c3d-extract videos/ -o feats.h5 --layer fc6,fc7,pool5,prob --per-clip
  c3d-extract --list videos.txt -o feats.h5 --weights c3d.pickle
"""


class BarProgress:
    """A tqdm bar on stderr: videos done / total, clips/s, video frames/s, ETA."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None
        self.clips = 0
        self.frames = 0
        self.started = time.monotonic()

    def start(self, total: int, already_done: int) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        if already_done:
            click.echo(f"{already_done} of {total} videos are already in the output; "
                       "extracting the rest", err=True)
        self.bar = tqdm(total=total - already_done, unit="video", file=sys.stderr,
                        dynamic_ncols=True, smoothing=0.1)

    def clips_done(self, n_clips: int) -> None:
        self.clips += n_clips
        self._postfix()

    def video_done(self, record: VideoRecord) -> None:
        self.frames += record.n_frames
        if self.bar is not None:
            self.bar.update(1)
            if record.status == "error":
                self.bar.write(f"error: {record.id}: {record.error}", file=sys.stderr)
        self._postfix()

    def _postfix(self) -> None:
        if self.bar is None:
            return
        seconds = max(time.monotonic() - self.started, 1e-9)
        self.bar.set_postfix_str(f"{self.clips / seconds:.1f} clips/s, "
                                 f"{self.frames / seconds:.0f} frames/s", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("inputs", nargs=-1, type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="HDF5 file to write; an existing one is resumed (see --overwrite).")
@click.option("--list", "list_file", type=click.Path(dir_okay=False),
              help="File with one video path per line (relative to the list's folder).")
@click.option("--weights", help="Weights file (any published format), registry name, or "
              "'random' for a smoke test. Default: weights/c3d_sports1m.safetensors or the "
              "cache.")
@click.option("--mean", type=click.Path(exists=True, dir_okay=False),
              help="Mean to subtract: .npy (3x16x128x171 BGR volume or 3 values) or a Caffe "
              ".binaryproto. Default: the preset of the weights.")
@click.option("--layer", "layers", default="fc6", show_default=True,
              help="Layer(s) to extract, comma-separated: pool5, fc6, fc7, fc8, prob.")
@click.option("--clip-len", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--stride", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--short", "short_policy", default="pad", show_default=True,
              type=click.Choice(SHORT_POLICIES),
              help="Videos shorter than a clip: repeat the last frame, loop, or skip.")
@click.option("--batch-size", default=0, type=click.IntRange(min=0),
              help="Clips per forward pass, across videos (default: 32 on CUDA, 8 on CPU).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", default="auto", show_default=True,
              type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
              help="auto: bf16 on CUDA, fp32 on CPU.")
@click.option("--decoder", default="decord", show_default=True,
              type=click.Choice(sorted(DECODERS)))
@click.option("--workers", default=0, type=click.IntRange(min=0),
              help="Decode processes (default: 1 on CPU, up to 12 with a GPU).")
@click.option("--timeout", default=600.0, show_default=True, type=click.FloatRange(min=0.001),
              help="Seconds a video's decoder may go without producing a frame before it "
              "is stopped and the video recorded as an error.")
@click.option("--per-clip", is_flag=True, help="Also store every clip's raw features.")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing output instead of resuming it.")
@click.option("--retry-errors", is_flag=True, help="Try failed videos again.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@library_errors
def cli(inputs: Sequence[str], output: str, list_file: Optional[str], weights: Optional[str],
        mean: Optional[str], layers: str, clip_len: int, stride: int, short_policy: str,
        batch_size: int, device: str, precision: str, decoder: str, workers: int,
        timeout: float, per_clip: bool, overwrite: bool, retry_errors: bool,
        quiet: bool) -> None:
    """Extract C3D video descriptors (Tran et al., ICCV 2015) into one HDF5 file.

    INPUTS are video files and directories (searched recursively). Each video
    gets 16-frame clips at stride 8, Caffe's preprocessing (BGR, 128x171,
    mean, centre crop 112), the chosen layers per clip, and their mean, L2
    normalised. Rerunning the same command resumes: videos already in the
    file are skipped. Exit status: 0 all videos have features, 3 some failed,
    2 usage error, 1 other error, 130 interrupted.
    """
    from c3d_extract.extractor import ExtractOptions, extract

    options = ExtractOptions(
        layers=tuple(split_list(layers, "--layer")), clip_len=clip_len, stride=stride,
        short_policy=short_policy, batch_size=batch_size, device=device, precision=precision,
        decoder=decoder, workers=workers, timeout=timeout, per_clip=per_clip)
    progress = BarProgress(quiet)
    previous_handler = signal.signal(signal.SIGTERM, _raise_interrupt)
    show_warnings_plainly()
    try:
        summary = extract(list(inputs), output, weights=weights, options=options,
                          list_file=list_file, mean=mean, overwrite=overwrite,
                          retry_errors=retry_errors, progress=progress)
    except KeyboardInterrupt:
        progress.close()
        click.echo(f"interrupted: the videos finished so far are saved in {output}; "
                   "rerun the same command to continue", err=True)
        sys.exit(EXIT_INTERRUPTED)
    finally:
        progress.close()
        signal.signal(signal.SIGTERM, previous_handler)
    click.echo(summary.line(), err=True)
    if summary.zero_descriptors:
        click.echo(f"note: {summary.zero_descriptors} videos had all-zero features; their "
                   "descriptors are stored as zeros", err=True)
    if summary.n_failed:
        for video_id, message in summary.failures[:10]:
            click.echo(f"  failed: {video_id}: {message}", err=True)
        if len(summary.failures) > 10:
            click.echo(f"  ... and {len(summary.failures) - 10} more", err=True)
        earlier = summary.n_failed - len(summary.failures)
        if earlier > 0:
            click.echo(f"  {earlier} videos failed in earlier runs", err=True)
        click.echo(f"  messages are in videos/error of {output}; --retry-errors tries the "
                   "failed videos again", err=True)
        sys.exit(EXIT_SOME_FAILED)
    sys.exit(EXIT_OK)


def main() -> None:
    cli(prog_name="c3d-extract")


if __name__ == "__main__":
    main()
