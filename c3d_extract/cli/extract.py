"""``c3d-extract``: videos in, one HDF5 file of C3D (or other registered model) descriptors out."""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Optional, Sequence

import click

from c3d_extract.cli.common import (EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, compute_options,
                                    kernel_order_option, library_errors, raise_interrupt,
                                    show_warnings_plainly, split_list)
from c3d_extract.device.sharding import shard_path
from c3d_extract.store.records import VideoRecord
from c3d_extract.video.clip_plan import SHORT_POLICIES
from c3d_extract.video.opening import DECODERS

#: ``--ray`` given without an address: start a local Ray cluster.
LOCAL_RAY = "(local)"

EXAMPLES = """
\b
Examples:
  c3d-extract videos/ -o feats.h5
  c3d-extract videos/ -o feats.h5 --layer fc6,fc7,pool5,prob --per-clip
  c3d-extract videos/ -o feats.h5 --per-clip --crops 10    (ten crops per clip)
  c3d-extract videos/ -o ucf_crime.h5 --fps 30 --stride 16 --layer fc6 --per-clip
  c3d-extract --list videos.txt -o feats.h5 --weights c3d.pickle
  c3d-extract videos/ -o r21d.h5 --weights run/model.safetensors --layer avgpool,logits
  c3d-extract videos/ -o feats.h5 --shard 1/4      (writes feats.shard-00001-of-00004.h5)
  torchrun --nproc-per-node 8 -m c3d_extract videos/ -o feats.h5
  c3d-extract merge feats.h5                       (the shards into feats.h5)
  c3d-extract export feats.h5 --format npy -o out/ (per-clip features for other pipelines;
                                                    also c3d-export)
  c3d-extract videos/ -o check.h5 --decode-only    (find broken videos, no network)
  c3d-extract videos/ -o feats.h5 --ray            (Ray, local cluster; --ray=ADDRESS)


A directory named merge or export is given as ./merge or ./export.
"""

#: The layers of each architecture (default first); tests check it against the registry.
LAYER_HELP = ("C3D: fc6 (default), pool5, fc7, fc8, prob. R(2+1)D-18: avgpool (default, "
              "512-d), logits, prob.")


class BarProgress:
    """A tqdm bar on stderr: videos done / total, clips/s, video frames/s, ETA.

    The rates count work as it happens: frames as they are decoded, clips as each batch
    leaves the network (or the batcher, with --decode-only), from ``start``: once the
    network is loaded (and converted), so that time does not lower them.
    """

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None
        self.clips = 0
        self.frames = 0
        self.started = time.monotonic()

    def notice(self, text: str) -> None:
        """A line before a long wait (a conversion, loading large weights)."""
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            click.echo(text, err=True)

    def start(self, total: int, already_done: int) -> None:
        self.started = time.monotonic()
        if self.quiet or total == already_done:  # nothing to do: no empty bar
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

    def frames_decoded(self, n_frames: int) -> None:
        self.frames += n_frames
        self._postfix()

    def video_done(self, record: VideoRecord) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if record.status == "error":
                self.bar.write(f"error: {record.id}: {record.error}", file=sys.stderr)
        for warning in record.warnings:  # shown even with --quiet: they are about the data
            line = f"warning: {record.id}: {warning}"
            if self.bar is not None:
                self.bar.write(line, file=sys.stderr)
            else:
                click.echo(line, err=True)
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


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("inputs", nargs=-1, type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="HDF5 file to write; an existing one is resumed (see --overwrite).")
@click.option("--list", "list_file", type=click.Path(dir_okay=False),
              help="File with one video path per line (relative to the list's folder).")
@click.option("--weights", help="Weights file (any published C3D format, a c3d-train "
              "model.safetensors, a torchvision R(2+1)D-18 .pth), registry name, or 'random' "
              "for a smoke test. Default: weights/c3d_sports1m.safetensors or the cache.")
@kernel_order_option
@click.option("--mean", type=click.Path(exists=True, dir_okay=False),
              help="Mean to subtract: .npy (3x16x128x171 BGR volume or 3 values) or a Caffe "
              ".binaryproto. Default: the preset of the weights.")
@click.option("--layer", "layers", help=f"Layer(s) to extract, comma-separated. {LAYER_HELP}")
@click.option("--clip-len", type=click.IntRange(min=1),
              help="Frames per clip (default: the model's, 16 for C3D).")
@click.option("--stride", type=click.IntRange(min=1),
              help="Frames between clip starts (default: half the clip length, 8 for C3D).")
@click.option("--short", "short_policy", default="pad", show_default=True,
              type=click.Choice(SHORT_POLICIES),
              help="Videos shorter than a clip: repeat the last frame, loop, or skip.")
@click.option("--batch-size", default=0, type=click.IntRange(min=0),
              help="Clips per forward pass, across videos (default: 32 on CUDA, 8 on CPU); "
              "with --crops, crops of clips (at least one clip's).")
@click.option("--crops", default="1", show_default=True, type=click.Choice(["1", "5", "10"]),
              help="Crops per clip: 1 the centre (the paper's); 5 also the four corners; 10 "
              "also the same five of the horizontally mirrored frame. Per-clip features "
              "become clips x crops x dims, in the order of the file's crop_order "
              "attribute (centre first); the descriptor averages clips and crops.")
@click.option("--fps", "target_fps", type=click.FloatRange(min=0, max=1000, min_open=True),
              help="Resample every video to this frame rate first: at each 1/FPS step the "
              "frame nearest in presentation time (no re-encoding); clips are cut from that "
              "sequence. Default: every decoded frame.")
@compute_options
@click.option("--decoder", default="decord", show_default=True,
              type=click.Choice(sorted(DECODERS)))
@click.option("--workers", default=0, type=click.IntRange(min=0),
              help="Decode processes (default: 1 on CPU, up to 12 with a GPU).")
@click.option("--timeout", default=600.0, show_default=True, type=click.FloatRange(min=0.001),
              help="Seconds a video's decoder may go without producing a frame before it "
              "is stopped and the video recorded as an error.")
@click.option("--allow-damaged", is_flag=True,
              help="Keep the frames of videos that are damaged part way or truncated (well "
              "short of the frame count their container declares): status ok/padded with the "
              "damage kept in videos/error, instead of status error.")
@click.option("--per-clip", is_flag=True, help="Also store every clip's raw features.")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing output instead of resuming it.")
@click.option("--retry-errors", is_flag=True, help="Try failed videos again.")
@click.option("--shard", "shard_text", metavar="I/N",
              help="Extract only shard I of N (0 <= I < N) of the videos, chosen by a hash "
              "of their ids, into OUTPUT's shard file (feats.shard-0000I-of-0000N.h5); "
              "merge the shards with `c3d-extract merge OUTPUT`. Under torchrun: RANK/"
              "WORLD_SIZE, on GPU LOCAL_RANK.")
@click.option("--decode-only", is_flag=True,
              help="Decode every video and count its frames and clips without the network "
              "(no weights needed): OUTPUT gets the video table (status, error, frames, fps, "
              "size, codec, decoder, declared frames, notes, clips) and no features. Workers "
              "and batch size default to a GPU run's.")
@click.option("--ray", "ray_address", is_flag=False, flag_value=LOCAL_RAY, default=None,
              metavar="[ADDRESS]",
              help="Run as a Ray job: one actor per GPU (one on a CPU-only cluster) extracts "
              "whole shards, then they are merged into OUTPUT. Alone: a local Ray cluster; "
              "--ray=ADDRESS (e.g. auto, host:6379, ray://host:10001) joins a running one. "
              "Rerun the same command to resume. Needs pip install -e '.[ray]'.")
@click.option("--keep-shards", is_flag=True,
              help="With --ray: keep the shard files after a verified merge (default: "
              "removed, as OUTPUT holds their rows).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@library_errors
def cli(inputs: Sequence[str], output: str, list_file: Optional[str], weights: Optional[str],
        kernel_order: Optional[str], mean: Optional[str], layers: Optional[str],
        clip_len: Optional[int], stride: Optional[int], short_policy: str,
        batch_size: int, crops: str, target_fps: Optional[float], device: str,
        precision: str, allow_emulated_precision: bool,
        backend: str, decoder: str, workers: int, timeout: float, allow_damaged: bool,
        per_clip: bool,
        overwrite: bool, retry_errors: bool, shard_text: Optional[str], decode_only: bool,
        ray_address: Optional[str], keep_shards: bool, quiet: bool) -> None:
    """Extract C3D video descriptors (Tran et al., ICCV 2015) into one HDF5 file.

    INPUTS are video files, frame folders (numbered JPEG/PNG images, one
    video each) and directories (searched recursively for both). Each video
    gets 16-frame clips at stride 8, Caffe's preprocessing (BGR, 128x171,
    mean, centre crop 112), the chosen layers per clip, and their mean, L2
    normalised. With a model file (c3d-train's model.safetensors, C3D or
    R(2+1)D-18), its clip length, preprocessing and default layer are used
    instead. Rerunning the same command resumes: videos already in the file
    are skipped. Exit status: 0 all videos have features, 3 some failed
    (0 under torchrun, which would stop the other shards; `merge` reports
    them), 2 usage error, 1 other error, 130 interrupted.

    With --shard, or under torchrun, each process writes its own shard file;
    `c3d-extract merge OUTPUT` then checks and merges them into OUTPUT.
    """
    from c3d_extract.device.launch import launched_shard
    from c3d_extract.device.sharding import parse_shard
    from c3d_extract.extraction.options import ExtractOptions
    from c3d_extract.extraction.run import check_videos, extract_videos
    from c3d_extract.video.sources import find_videos

    options = ExtractOptions(
        layers=() if layers is None else tuple(split_list(layers, "--layer")),
        clip_len=clip_len or 0, stride=stride or 0,
        short_policy=short_policy, batch_size=batch_size, device=device, precision=precision,
        allow_emulated_precision=allow_emulated_precision, backend=backend, decoder=decoder,
        workers=workers, timeout=timeout, per_clip=per_clip, kernel_order=kernel_order,
        crops=int(crops), target_fps=target_fps or 0.0, allow_damaged=allow_damaged)
    launched = launched_shard(os.environ)
    shard = parse_shard(shard_text) if shard_text is not None else launched
    if ray_address is not None:
        _check_ray_options(ray_address, shard, decode_only, overwrite)
        _run_ray(inputs, output, list_file, weights, mean, options, retry_errors,
                 None if ray_address == LOCAL_RAY else ray_address, keep_shards)
    elif keep_shards:
        raise click.UsageError("--keep-shards goes with --ray")
    if decode_only and (weights is not None or mean is not None):
        raise click.UsageError("--decode-only runs no network: leave out --weights and --mean")
    progress = BarProgress(quiet)
    previous_handler = signal.signal(signal.SIGTERM, raise_interrupt)
    show_warnings_plainly()
    try:
        found = find_videos(list(inputs), list_file)
        if found.skipped:
            click.echo(found.skipped_line(), err=True)
        videos = found.sources
        if decode_only:
            summary = check_videos(videos, output, options=options, overwrite=overwrite,
                                   retry_errors=retry_errors, progress=progress, shard=shard)
        else:
            summary = extract_videos(videos, output, weights=weights, options=options,
                                     mean=mean, overwrite=overwrite, retry_errors=retry_errors,
                                     progress=progress, shard=shard)
    except KeyboardInterrupt:
        progress.close()
        saved_in = output if shard is None else shard_path(output, shard)
        click.echo(f"interrupted: the videos finished so far are saved in {saved_in}; "
                   "rerun the same command to continue", err=True)
        sys.exit(EXIT_INTERRUPTED)
    finally:
        progress.close()
        signal.signal(signal.SIGTERM, previous_handler)
    click.echo(("" if shard is None else f"shard {shard}: ") + summary.line(), err=True)
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
        click.echo(f"  messages are in videos/error of {summary.output}; --retry-errors tries "
                   "the failed videos again", err=True)
        # A failing process makes torchrun stop every other one; failures stay in the file.
        sys.exit(EXIT_OK if launched is not None else EXIT_SOME_FAILED)
    sys.exit(EXIT_OK)


def _check_ray_options(address: str, shard, decode_only: bool, overwrite: bool) -> None:
    if shard is not None:
        raise click.UsageError("--ray makes its own shards: leave out --shard (and torchrun)")
    if decode_only or overwrite:
        flag = "--decode-only" if decode_only else "--overwrite"
        raise click.UsageError(f"--ray does not take {flag}")
    if address != LOCAL_RAY and not (address in ("auto", "local") or ":" in address):
        raise click.UsageError(
            f"{address!r} is not a Ray address (auto, local, HOST:PORT or ray://HOST:PORT); "
            "if it is an input, put --ray after the inputs or write --ray=ADDRESS")


def _run_ray(inputs: Sequence[str], output: str, list_file: Optional[str],
             weights: Optional[str], mean: Optional[str], options, retry_errors: bool,
             address: Optional[str], keep_shards: bool) -> None:
    """Run the Ray job, print its summary and exit with the usual status."""
    import logging

    from c3d_extract.extraction.ray_job import run_ray_job
    from c3d_extract.store.read import read_video_table

    try:
        import ray.data

        # Ray Data logs every stage of the job at INFO; the summary below says what matters.
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        ray.data.DataContext.get_current().enable_progress_bars = False
    except ImportError:
        pass  # run_ray_job says how to install it
    show_warnings_plainly()
    job = run_ray_job(list(inputs), output, weights=weights, options=options,
                      list_file=list_file, mean=mean, retry_errors=retry_errors,
                      address=address, keep_shards=keep_shards)
    click.echo(job.line(), err=True)
    for video_id, message in job.failures[:10]:
        click.echo(f"  failed: {video_id}: {message}", err=True)
    if len(job.failures) > 10:
        click.echo(f"  ... and {len(job.failures) - 10} more", err=True)
    if job.merge_error:
        raise click.ClickException(job.merge_error)
    statuses = read_video_table(job.output)["status"]
    failed = int((statuses == "error").sum())
    if failed > len(job.failures):
        click.echo(f"  {failed - len(job.failures)} videos failed in earlier runs", err=True)
    if failed:
        click.echo(f"  messages are in videos/error of {job.output}; --retry-errors tries "
                   "the failed videos of unmerged shards again", err=True)
    sys.exit(EXIT_SOME_FAILED if failed else EXIT_OK)


def main() -> None:
    """``c3d-extract ...`` extracts; ``c3d-extract merge ...`` merges shard files;
    ``c3d-extract export ...`` is ``c3d-export ...``."""
    if len(sys.argv) > 1 and sys.argv[1] == "merge":
        from c3d_extract.cli.merge import cli as merge_cli

        merge_cli(args=sys.argv[2:], prog_name="c3d-extract merge")
    elif len(sys.argv) > 1 and sys.argv[1] == "export":
        from c3d_extract.cli.export import cli as export_cli

        export_cli(args=sys.argv[2:], prog_name="c3d-extract export")
    else:
        cli(prog_name="c3d-extract")


if __name__ == "__main__":
    main()
