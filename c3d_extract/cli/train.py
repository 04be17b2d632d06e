"""``c3d-train``: train or fine-tune C3D or R(2+1)D-18 on a video dataset."""

from __future__ import annotations

import os
from typing import Optional

import click

from c3d_extract.cli.common import library_errors, show_warnings_plainly
from c3d_extract.train.options import DATASETS, OPTIMIZERS, PRECISIONS, SCHEDULES

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
@click.option("--momentum", default=0.9, show_default=True, type=click.FloatRange(min=0, max=1, max_open=True))
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
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
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
    level. Exit status: 0 done, 2 usage error (bad options, leaking split, rerun with
    other parameters), 1 other error.
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

    result = train(options, report)
    test = result.results.get("test") if result.results else None
    if test:
        click.echo(f"{result.run_dir}: test top-1 {test['top1']:.4f} top-5 {test['top5']:.4f} "
                   f"({test['videos']} videos)")


def _init_path(init: Optional[str]) -> Optional[str]:
    # A path is made absolute so that the recorded run does not depend on the working
    # folder; a registry name (e.g. sports1m-caffe) is kept as it is.
    return os.path.abspath(init) if init and os.path.exists(init) else init


def main() -> None:
    cli(prog_name="c3d-train")


if __name__ == "__main__":
    main()
