"""``c3d-train``: train or fine-tune C3D or R(2+1)D-18 on a video dataset."""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any, Dict, Optional

import click

from c3d_extract.cli.common import EXIT_INTERRUPTED, library_errors, show_warnings_plainly
from c3d_extract.train.options import DATASETS, OPTIMIZERS, PRECISIONS, SCHEDULES
from c3d_extract.train.stopping import StopRequest

#: Without a terminal on stderr, one progress line per this many batches (and the first and
#: last of each epoch).
LINE_EVERY = 20
#: A second signal this soon after the first is the same request seen twice (a terminal's
#: Ctrl-C reaches torchrun, which passes it on to processes that already had it).
REPEAT_WINDOW = 1.0

EXAMPLES = """
\b
Examples:
  c3d-train UCF-101 -o runs/r21d --dataset ucf101 --arch r2plus1d_18 --epochs 30
  c3d-train UCF-101 -o runs/c3d-ft --dataset ucf101 --splits ucfTrainTestlist \\
      --arch c3d --init c3d_sports1m.safetensors --lr 0.001 --epochs 45
  torchrun --standalone --nproc-per-node 2 $(which c3d-train) UCF-101 -o runs/ddp \\
      --dataset ucf101 --arch r2plus1d_18
"""


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"],
                                                  "max_content_width": 100})
@click.argument("data_root", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", "run_dir", required=True, type=click.Path(),
              help="Run folder: checkpoints, metrics.csv, curves.png, confusion.png, "
              "results.json, model.safetensors. Rerunning the same command resumes.")
@click.option("--dataset", required=True, type=click.Choice(DATASETS))
@click.option("--splits", type=click.Path(exists=True, file_okay=False),
              help="Folder of the split files (default: the dataset's usual folder beside "
              "DATA_ROOT, e.g. ucfTrainTestlist/).")
@click.option("--split", default=1, show_default=True, type=click.IntRange(1, 3))
@click.option("--val-fraction", default=0.1, show_default=True, type=float,
              help="Share of the training groups held out for validation (0: none).")
@click.option("--allow-overlap", is_flag=True,
              help="Accept training and test lists that share a group or a video.")
@click.option("--arch", required=True, help="Architecture: c3d or r2plus1d_18.")
@click.option("--init", type=str, help="Initial weights: for C3D any Sports-1M file the tool "
              "reads (a new head is drawn), a torchvision R(2+1)D-18 file, or a "
              "model.safetensors from c3d-train.")
@click.option("--freeze-backbone", is_flag=True, help="Train the classifier head only.")
@click.option("--epochs", default=30, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1),
              help="Clips per batch and process.")
@click.option("--accumulate", default=1, show_default=True, type=click.IntRange(min=1),
              help="Batches whose gradients are summed per optimizer step.")
@click.option("--optimizer", default="sgd", show_default=True, type=click.Choice(OPTIMIZERS))
@click.option("--lr", type=float, help="Base learning rate (default: 0.01 sgd, 0.0001 adam).")
@click.option("--weight-decay", type=float, help="Default: 0.0005 sgd, 0 adam.")
@click.option("--momentum", default=0.9, show_default=True,
              type=click.FloatRange(min=0, max=1, max_open=True))
@click.option("--schedule", default="cosine", show_default=True, type=click.Choice(SCHEDULES))
@click.option("--warmup-epochs", default=0.0, show_default=True, type=float)
@click.option("--clip-len", type=click.IntRange(min=1),
              help="Frames per clip (default: the architecture's, 16).")
@click.option("--crop-size", type=click.IntRange(min=1),
              help="Crop side in pixels (default: the architecture's, 112).")
@click.option("--no-hflip", is_flag=True, help="No random horizontal flips in training.")
@click.option("--dropout", type=float, help="C3D's dropout after fc6 and fc7 (default 0.5).")
@click.option("--checkpoint-every", default=0, show_default=True, type=click.IntRange(min=0),
              help="Also checkpoint every this many optimizer steps (0: at epoch ends only).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--deterministic", is_flag=True, help="Deterministic algorithms: a rerun, or a "
              "killed and resumed run, ends with bit-identical weights.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", default="auto", show_default=True, type=click.Choice(PRECISIONS),
              help="auto: bf16 on CUDA, fp32 on CPU.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=0),
              help="Decoding processes per training process.")
@click.option("--threads", default=0, type=click.IntRange(min=0),
              help="torch threads (default: torch's choice).")
@click.option("--overwrite", is_flag=True, help="Discard a run already in the run folder.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or lines (the resume "
              "and stop lines remain).")
@library_errors
def cli(data_root: str, run_dir: str, dataset: str, splits: Optional[str], split: int,
        val_fraction: float, allow_overlap: bool, arch: str, init: Optional[str],
        freeze_backbone: bool, epochs: int, batch_size: int, accumulate: int, optimizer: str,
        lr: Optional[float], weight_decay: Optional[float], momentum: float, schedule: str,
        warmup_epochs: float, clip_len: Optional[int], crop_size: Optional[int],
        no_hflip: bool, dropout: Optional[float], checkpoint_every: int, seed: int,
        deterministic: bool, device: str, precision: str, workers: int, threads: int,
        overwrite: bool, quiet: bool) -> None:
    """Train ARCH on the videos of DATA_ROOT (a folder of class folders) and test it.

    Evaluates on the validation set after every epoch and, at the end, on the test list
    at video level (softmax averaged over the extraction protocol's windows) and clip
    level. Ctrl-C (or SIGTERM) finishes the step in progress, writes a checkpoint and
    exits 130; rerunning the same command continues from that step (a second Ctrl-C
    stops at once, keeping the last checkpoint). Exit status: 0 done, 2 usage error (bad
    options, leaking split, rerun with other parameters), 1 other error, 130 interrupted.
    """
    from c3d_extract.train.options import TrainOptions
    from c3d_extract.train.run import train

    show_warnings_plainly()
    options = TrainOptions(
        data_root=os.path.abspath(data_root), run_dir=os.path.abspath(run_dir),
        dataset=dataset, arch=arch, splits=os.path.abspath(splits) if splits else None,
        split=split, val_fraction=val_fraction, allow_overlap=allow_overlap,
        init=_init_path(init), freeze_backbone=freeze_backbone, epochs=epochs,
        batch_size=batch_size, accumulate=accumulate, optimizer=optimizer, lr=lr,
        weight_decay=weight_decay, momentum=momentum, schedule=schedule,
        warmup_epochs=warmup_epochs, clip_len=clip_len, crop_size=crop_size,
        hflip=not no_hflip, dropout=dropout, checkpoint_every=checkpoint_every, seed=seed,
        deterministic=deterministic, device=device, precision=precision, workers=workers,
        threads=threads, quiet=quiet, overwrite=overwrite)

    def report(line: str) -> None:
        if not quiet or line.startswith("resuming from step"):
            click.echo(line, err=True)

    main_process = os.environ.get("RANK", "0") == "0"
    progress = StepProgress(quiet or not main_process, sys.stderr.isatty())
    stop = StopRequest()
    previous = _stop_on_signals(stop)
    try:
        result = train(options, report, progress, stop)
    except KeyboardInterrupt:
        progress.close()
        checkpoint = os.path.join(options.run_dir, "checkpoint.pt")
        kept = (f"{checkpoint} keeps the last checkpoint; rerun the same command to continue "
                "from it" if os.path.exists(checkpoint) else
                "no checkpoint was written yet; rerun the same command to start again")
        _echo_once(main_process, f"interrupted at once: {kept}")
        sys.exit(EXIT_INTERRUPTED)
    finally:
        progress.close()
        for number, handler in previous.items():
            signal.signal(number, handler)
    if result.stopped is not None:
        stopped = result.stopped
        _echo_once(main_process,
                   f"interrupted: stopped after step {stopped.step} (epoch {stopped.epoch}, "
                   f"batch {stopped.batches_done}); "
                   f"{os.path.join(result.run_dir, 'checkpoint.pt')} keeps the run; rerun "
                   "the same command to continue from that step")
        sys.exit(EXIT_INTERRUPTED)
    test = result.results.get("test") if result.results else None
    if test and main_process:
        top5 = "" if test["top5"] is None else f" top-5 {test['top5']:.4f}"
        click.echo(f"{result.run_dir}: test top-1 {test['top1']:.4f}{top5} "
                   f"({test['videos']} videos)")


def _echo_once(main_process: bool, line: str) -> None:
    if main_process:
        click.echo(line, err=True)


def _stop_on_signals(stop: StopRequest) -> Dict[int, Any]:
    """SIGINT and SIGTERM ask ``stop`` to stop after the step in progress; a second one
    (not an echo of the first) stops at once. Returns the handlers replaced."""

    def handler(number: int, frame: Any) -> None:
        if stop.requested:
            if time.monotonic() - (stop.since or 0.0) > REPEAT_WINDOW:
                raise KeyboardInterrupt
            return
        stop.request(signal.Signals(number).name)
        if os.environ.get("RANK", "0") == "0":
            # os.write: the handler may run in the middle of a buffered write to stderr.
            os.write(2, b"\nstopping after the step in progress to write a checkpoint "
                        b"(Ctrl-C again stops at once)\n")

    return {number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)}


class StepProgress:
    """Training progress on stderr: a tqdm bar per epoch and evaluation (batches, running
    loss, clips/s of network time) on a terminal, else a line when each starts, after its
    first batch, every ``LINE_EVERY`` batches and at its end. No line begins with ``epoch``:
    those are the epoch results."""

    def __init__(self, quiet: bool, tty: bool, every: int = LINE_EVERY) -> None:
        self.quiet, self.tty, self.every = quiet, tty, every
        self.bar: Any = None
        self.label, self.total, self.done = "", 0, 0
        self.clips, self.seconds, self.first = 0, 0.0, True

    def _open(self, label: str, total: int, done: int, unit: str) -> None:
        self.close()
        self.label, self.total, self.done, self.clips, self.seconds = label, total, done, 0, 0.0
        self.first = True
        if self.quiet:
            return
        if not self.tty:  # at once: the first batch may take a while
            click.echo(f"{label}: {done}/{total} {self._unit()}", err=True)
            return
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=done, desc=label, unit=unit, file=sys.stderr,
                        dynamic_ncols=True, leave=False, smoothing=0.1)

    def epoch_started(self, epoch: int, epochs: int, batches_done: int,
                      batches_total: int) -> None:
        self._open(f"train {epoch}/{epochs}", batches_total, batches_done, "batch")

    def batch_done(self, batches_done: int, tally, clips: int, seconds: float) -> None:
        self.clips += clips
        self.seconds += seconds
        loss = tally.loss_sum / max(tally.count, 1.0)
        rate = self.clips / max(self.seconds, 1e-9)
        self._advance(batches_done - self.done, f"loss {loss:.4f}, {rate:.1f} clips/s")

    def evaluation_started(self, what: str, total: int) -> None:
        self._open(what, total, 0, "batch" if what == "validation" else "video")

    def evaluated(self, count: int) -> None:
        self._advance(count, "")

    def _advance(self, count: int, postfix: str) -> None:
        before, self.done = self.done, self.done + count
        first, self.first = self.first, False
        if self.quiet:
            return
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.update(count)
        elif first or self.done // self.every > before // self.every or \
                self.done >= self.total:
            click.echo(f"{self.label}: {self.done}/{self.total} {self._unit()}"
                       + (f", {postfix}" if postfix else ""), err=True)

    def _unit(self) -> str:
        return "videos" if self.label == "test" else "batches"

    def phase_ended(self) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _init_path(init: Optional[str]) -> Optional[str]:
    # A path is made absolute so that the recorded run does not depend on the working
    # folder; a registry name (e.g. sports1m-caffe) is kept as it is.
    return os.path.abspath(init) if init and os.path.exists(init) else init


def main() -> None:
    if "--deterministic" in sys.argv[1:]:
        # Read by MKL and oneDNN when they start: before torch is imported.
        from c3d_extract.train.reproducibility import set_reproducible_environment

        set_reproducible_environment()
    cli(prog_name="c3d-train")


if __name__ == "__main__":
    main()
