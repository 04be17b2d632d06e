"""A training run in a run folder: set up, resume, train, evaluate, export.

RUN_DIR holds ``args.json`` (the options), ``splits.json`` (the exact lists used),
``checkpoint.pt`` (see ``checkpoint``), ``metrics.csv``, ``curves.png``, and when training
is over ``model.safetensors``, ``confusion.png`` and ``results.json`` (written last: its
presence means the run is complete). Only the main process writes; ``run.lock`` keeps a
second run out while the kernel drops it with its process, so a killed run never blocks.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from c3d_extract.atomic_files import make_folders, remove_quietly, remove_stale_temporaries
from c3d_extract.device.memory import device_memory_guard
from c3d_extract.device.precision import grad_scaler, resolve_training_precision
from c3d_extract.errors import C3DError, OutputLockedError, StoreError, UsageError, VideoReadError
from c3d_extract.models.architecture import Architecture
from c3d_extract.models.registry import get_architecture
from c3d_extract.store.locking import OutputLock
from c3d_extract.train import metrics
from c3d_extract.train.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from c3d_extract.train.distributed import (ResumableSampler, World, all_sum, barrier,
                                           broadcast_object, gather_objects, join_world,
                                           leave_world, shard_indices)
from c3d_extract.train.loop import (Trainee, VideoScores, evaluate_clips, evaluate_videos,
                                    train_one_epoch)
from c3d_extract.train.metrics import Tally
from c3d_extract.train.model_init import (build_model, class_names_for_run, head_prefix,
                                          kept_head_class_names)
from c3d_extract.train.optim import build_optimizer, build_scheduler
from c3d_extract.train.options import TrainOptions
from c3d_extract.train.stopping import Stopped, StopRequest, ignore_interrupts
from c3d_extract.video.preprocess import Preprocessing

ARGS, SPLITS, CHECKPOINT = "args.json", "splits.json", "checkpoint.pt"
METRICS, CURVES, CONFUSION = "metrics.csv", "curves.png", "confusion.png"
RESULTS, MODEL = "results.json", "model.safetensors"
#: The files a run writes; --overwrite removes exactly these.
RUN_FILES = (ARGS, SPLITS, CHECKPOINT, METRICS, CURVES, CONFUSION, RESULTS, MODEL)
#: Top-5 accuracy is reported only with more classes than this (with 5 or fewer every label
#: is among the top five).
TOP5_MIN_CLASSES = 6
#: Seconds between redrawings of curves.png during training.
CURVES_INTERVAL = 60.0

Report = Callable[[str], None]


@dataclass(frozen=True)
class TrainResult:
    run_dir: str
    results: Dict[str, Any]
    resumed_from: Optional[int]  # the optimizer step a rerun continued from
    already_complete: bool       # the run folder held a finished run; nothing was done
    stopped: Optional[Stopped] = None  # stopped on request at this step, checkpoint written


class TrainProgress:
    """Callbacks the command line implements to draw progress (main process only); the
    default does nothing."""

    def epoch_started(self, epoch: int, epochs: int, batches_done: int,
                      batches_total: int) -> None:
        """Training epoch ``epoch`` (1-based) starts, or resumes after ``batches_done``."""

    def batch_done(self, batches_done: int, tally: Tally, clips: int, seconds: float) -> None:
        """A training batch of ``clips`` went through the network in ``seconds``."""

    def evaluation_started(self, what: str, total: int) -> None:
        """An evaluation of ``total`` batches or videos starts (``what`` names it)."""

    def evaluated(self, count: int) -> None:
        """``count`` more batches or videos of the evaluation are done."""

    def phase_ended(self) -> None:
        """The epoch's training or the evaluation is over."""


def train(options: TrainOptions, report: Report = lambda line: None,
          progress: Optional[TrainProgress] = None,
          stop: Optional[StopRequest] = None) -> TrainResult:
    """Train, evaluate and export as ``options`` say; continue a run left in the run folder.

    ``report`` receives progress lines and ``progress`` the steps (main process only). When
    ``stop`` is requested (e.g. by a signal handler), the run finishes the optimizer step in
    progress (or the next one), writes a checkpoint and returns with ``stopped`` set.
    """
    from c3d_extract.device.precision import resolve_device
    from c3d_extract.store.rerun_checks import check_output_location

    # The run folder is created, its parent must exist: a mistyped -o fails at once, as
    # c3d-extract's and c3d-predict's outputs do.
    check_output_location(options.run_dir)
    device = resolve_device(options.device)
    precision = resolve_training_precision(options.precision, device)
    _configure_determinism(options)
    world = join_world(device)
    say: Report = report if world.is_main else (lambda line: None)
    lock: Optional[OutputLock] = None
    try:
        arch = get_architecture(options.arch)
        clip_len, crop_size = _input_size(options, arch)
        from c3d_extract.train.clip_sampling import preset_for_crop

        # Other crop sizes scale the resize with the crop; the model file records this preset.
        preset = preset_for_crop(arch.preset, crop_size)
        splits = _load_splits(options)
        for note in splits.notes:
            say(note)
        lock, checkpoint, complete = _on_main(
            world, options.run_dir, lambda: _claim_run_dir(options, world, splits))
        if complete is not None:
            say(f"the run in {options.run_dir} is complete; rerun with --overwrite to train "
                "it again")
            return TrainResult(options.run_dir, complete, None, True)
        session = _Session(options, world, device, precision, arch, preset, clip_len,
                           crop_size, splits, say,
                           (progress or TrainProgress()) if world.is_main else TrainProgress(),
                           stop or StopRequest())
        try:
            with device_memory_guard(options.batch_size, device, precision,
                                     accumulate=options.accumulate):
                return session.run(checkpoint)
        except VideoReadError as error:
            # A loader worker's error arrives with the worker's traceback in its text.
            raise VideoReadError(_last_line(str(error))) from None
    finally:
        if lock is not None:
            lock.release()
        leave_world(world)


def _configure_determinism(options: TrainOptions) -> None:
    if options.threads:
        torch.set_num_threads(options.threads)
    if options.deterministic:
        # cuBLAS needs this set before its first use to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.backends.mkldnn.deterministic = True
        from c3d_extract.train.reproducibility import pin_mkl_results

        pin_mkl_results()
    torch.set_num_threads(torch.get_num_threads())  # fixed for the whole run


def _input_size(options: TrainOptions, arch: Architecture) -> Tuple[int, int]:
    clip_len = options.clip_len or arch.clip_len
    crop_size = options.crop_size or arch.crop_size
    if arch.fixed_input and (clip_len, crop_size) != (arch.clip_len, arch.crop_size):
        raise UsageError(f"{arch.name} takes {arch.clip_len}-frame clips of {arch.crop_size} x "
                         f"{arch.crop_size} only (its fully connected layers fix the input "
                         "size); leave --clip-len and --crop-size unset")
    return clip_len, crop_size


def _load_splits(options: TrainOptions):
    from c3d_extract.train.datasets import load_dataset

    splits = load_dataset(options.dataset, options.data_root, splits_dir=options.splits,
                          split=options.split, val_fraction=options.val_fraction,
                          seed=options.seed, allow_overlap=options.allow_overlap)
    if not splits.train:
        raise UsageError(f"the training list of {options.data_root} holds no videos")
    if not splits.test:
        raise UsageError(f"the test list of {options.data_root} holds no videos")
    return splits


def _on_main(world: World, run_dir: str, claim: Callable[[], Tuple[Any, Any, Any]]):
    """Run ``claim`` on the main process; its error, if any, is raised on every process.

    Returns (lock, checkpoint, complete results) with the lock on the main process only.
    """
    lock = outcome = None
    failure: Optional[Tuple[bool, str]] = None
    if world.is_main:
        try:
            lock, checkpoint_found, complete = claim()
            outcome = (checkpoint_found, complete)
        except C3DError as error:
            failure = (isinstance(error, UsageError), str(error))
            if not world.distributed:
                raise
    failure = broadcast_object(world, failure)
    if failure is not None:
        if lock is not None:
            lock.release()
        raise (UsageError if failure[0] else C3DError)(failure[1])
    checkpoint_found, complete = broadcast_object(world, outcome)
    try:
        checkpoint = load_checkpoint(os.path.join(run_dir, CHECKPOINT)) if checkpoint_found \
            else None
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return lock, checkpoint, complete


def _claim_run_dir(options: TrainOptions, world: World, splits) -> Tuple[OutputLock, bool, Any]:
    """Lock the run folder and check that it is new or holds this same run.

    Returns the lock, whether a checkpoint is there to resume, and the results of a
    complete run (else None).
    """
    run_dir = options.run_dir
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise UsageError(f"{run_dir} exists and is not a folder")
    try:
        make_folders(run_dir)  # its parent exists (train checked it)
    except OSError as error:
        raise UsageError(f"cannot create the run folder {run_dir}: {error.strerror}") from None
    lock = OutputLock(os.path.join(run_dir, "run"))
    try:
        lock.acquire()
    except OutputLockedError:
        raise OutputLockedError(f"another c3d-train run is using {run_dir}; wait for it to "
                                "finish or choose another run folder") from None
    try:
        for name in RUN_FILES:
            remove_stale_temporaries(os.path.join(run_dir, name))
        key = options.resume_key(world.size)
        splits_json = json.loads(splits.to_json())
        if options.overwrite:
            for name in RUN_FILES:
                remove_quietly(os.path.join(run_dir, name))
        checkpoint_found = os.path.exists(os.path.join(run_dir, CHECKPOINT))
        # A run that never reached a checkpoint has nothing to resume: its parameters
        # (perhaps a mistake it stopped on) are simply replaced.
        recorded = _read_json(os.path.join(run_dir, ARGS)) if checkpoint_found else None
        if recorded is not None:
            differences = _differences(recorded.get("resume_key", {}), key)
            recorded_splits = _read_json(os.path.join(run_dir, SPLITS))
            if recorded_splits is not None and recorded_splits != splits_json:
                differences.append("the train/val/test lists")
            if differences:
                raise UsageError(
                    f"{run_dir} holds a run with other parameters ({'; '.join(differences)}); "
                    "rerun with the same parameters to resume it, or add --overwrite to "
                    "start again")
        else:
            metrics.write_json(os.path.join(run_dir, ARGS),
                               {"options": options.to_dict(), "resume_key": key})
            metrics.write_json(os.path.join(run_dir, SPLITS), splits_json)
        complete = _read_json(os.path.join(run_dir, RESULTS)) if checkpoint_found else None
        return lock, checkpoint_found, complete
    except BaseException:
        lock.release()
        raise


def _differences(recorded: Dict[str, Any], wanted: Dict[str, Any]) -> List[str]:
    names = sorted(set(recorded) | set(wanted))
    return [f"{name}: {recorded.get(name)!r} then, {wanted.get(name)!r} now"
            for name in names if recorded.get(name) != wanted.get(name)]


def _read_json(path: str) -> Optional[Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise StoreError(f"{path} cannot be read ({error}); add --overwrite to "
                         "start the run again") from None


class _VideoWindows(Dataset):
    """Test videos as all their clip windows (the extraction protocol's)."""

    def __init__(self, samples: Sequence, preset: Preprocessing, clip_len: int,
                 crop_size: int) -> None:
        self.samples, self.preset = samples, preset
        self.clip_len, self.crop_size = clip_len, crop_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        from c3d_extract.train.clip_sampling import eval_windows

        sample = self.samples[index]
        try:
            windows = eval_windows(sample, self.preset, self.clip_len, self.crop_size,
                                   max(self.clip_len // 2, 1))
        except VideoReadError as error:
            return None, sample.label, index, str(error)
        return windows, sample.label, index, None


class _Session:
    """One process's part of a run, from model building to export."""

    def __init__(self, options: TrainOptions, world: World, device: torch.device,
                 precision: str, arch: Architecture, preset: Preprocessing, clip_len: int,
                 crop_size: int, splits, say: Report, progress: TrainProgress,
                 stop: StopRequest) -> None:
        self.options, self.world, self.device, self.precision = options, world, device, precision
        self.arch, self.preset, self.splits, self.say = arch, preset, splits, say
        self.progress, self.stop = progress, stop
        self.clip_len, self.crop_size = clip_len, crop_size
        self.path = lambda name: os.path.join(options.run_dir, name)
        self._curves_drawn = time.monotonic()

    def _loader(self, dataset, **kwargs) -> DataLoader:
        # A generator of its own: creating a loader's iterator draws a seed from it, which
        # must not advance the global generator that dropout draws from.
        generator = torch.Generator().manual_seed(self.options.seed)
        workers = self.options.workers
        return DataLoader(dataset, num_workers=workers, generator=generator,
                          pin_memory=self.device.type == "cuda",
                          worker_init_fn=ignore_interrupts if workers else None,
                          persistent_workers=False, **kwargs)

    def _stop_agreed(self) -> bool:
        """Whether to stop now: asked here, or (under torchrun) by any process."""
        if not self.world.distributed:
            return self.stop.requested
        return all_sum(self.world, [float(self.stop.requested)], self.device)[0] > 0

    def run(self, checkpoint: Optional[Dict[str, Any]]) -> TrainResult:
        try:
            return self._run(checkpoint)
        except Stopped as stopped:
            barrier(self.world)
            resumed = None if checkpoint is None else checkpoint["global_step"]
            return TrainResult(self.options.run_dir, {}, resumed, False, stopped)

    def _run(self, checkpoint: Optional[Dict[str, Any]]) -> TrainResult:
        from c3d_extract.train.clip_sampling import ClipDataset

        options, world = self.options, self.world
        seed_everything(options.seed)
        model, notes = build_model(self.arch, len(self.splits.classes),
                                   init=None if checkpoint else options.init,
                                   freeze_backbone=options.freeze_backbone,
                                   dropout=options.dropout)
        head_names = kept_head_class_names(options.init, self.arch, len(self.splits.classes))
        self.class_names, names_notes = class_names_for_run(self.splits.classes, head_names)
        for note in notes + names_notes:
            self.say(note)
        seed_everything(options.seed + world.rank)  # each process its own dropout masks
        model = self._place(model)
        self.network = model.module if world.distributed else model
        optimizer = build_optimizer(model.parameters(), options)
        train_set = ClipDataset(self.splits.train, preset=self.preset, clip_len=self.clip_len,
                                crop_size=self.crop_size, training=True, seed=options.seed,
                                hflip=options.hflip)
        sampler = ResumableSampler(train_set, world, seed=options.seed)
        batches_total = math.ceil(sampler.epoch_length / options.batch_size)
        steps_per_epoch = math.ceil(batches_total / options.accumulate)
        scheduler = build_scheduler(optimizer, options, steps_per_epoch)
        trainee = Trainee(model, optimizer, scheduler, grad_scaler(self.precision, self.device),
                          self.preset, self.device, self.precision, options.accumulate,
                          head_prefix(self.network, self.arch) if options.freeze_backbone
                          else None)
        self.trainee = trainee
        state = {"epoch": 0, "batches_done": 0, "global_step": 0, "history": []}
        tally = Tally()
        resumed_from = None
        if checkpoint is not None:
            tally = self._restore(checkpoint, state)
            resumed_from = state["global_step"]
            self.say(f"resuming from step {resumed_from} (epoch {state['epoch'] + 1}, "
                     f"batch {state['batches_done']} of {batches_total})")
        else:
            self.say(f"training {self.arch.name} on {len(self.splits.train)} videos "
                     f"({len(self.splits.classes)} classes), {batches_total} batches per epoch, "
                     f"{self.precision} on {self.device}")
        val_loader = self._val_loader(ClipDataset) if self.splits.val else None
        history: List[Dict[str, Any]] = state["history"]
        for epoch in range(state["epoch"], options.epochs):
            started = time.monotonic()
            sampler.set_position(epoch, state["batches_done"] * options.batch_size)
            train_set.set_epoch(epoch)
            loader = self._loader(train_set, batch_size=options.batch_size, sampler=sampler)

            def on_step(batches_done: int, running: Tally, epoch: int = epoch) -> None:
                state["global_step"] += 1
                step = state["global_step"]
                every = options.checkpoint_every
                stopping = self._stop_agreed()
                # A stop at an epoch's last step is saved as a position at the epoch's end:
                # the rerun trains nothing more in it and goes on with its evaluation.
                if stopping or (every and step % every == 0 and batches_done < batches_total):
                    self._save(epoch, batches_done, running, history, step)
                if stopping:
                    raise Stopped(step, epoch + 1, batches_done)

            self.progress.epoch_started(epoch + 1, options.epochs, state["batches_done"],
                                        batches_total)
            try:
                tally = train_one_epoch(trainee, loader, batches_done=state["batches_done"],
                                        batches_total=batches_total, tally=tally,
                                        on_step=on_step, on_batch=self.progress.batch_done)
            finally:
                self.progress.phase_ended()
            lr = optimizer.param_groups[0]["lr"]
            rows = [self._row(epoch + 1, "train", tally, lr=lr, started=started)]
            if val_loader is not None:
                rows.append(self._row(epoch + 1, "val", self._evaluate_val(val_loader),
                                      started=time.monotonic()))
            history.extend(rows)
            state.update(epoch=epoch + 1, batches_done=0)
            tally = Tally()
            self._save(epoch + 1, 0, tally, history, state["global_step"])
            self._write_progress(history)
            for row in rows:
                self.say(_row_line(row, options.epochs))
        if self._stop_agreed():  # asked during the last evaluation: its checkpoint is written
            raise Stopped(state["global_step"], options.epochs, batches_total)
        return TrainResult(options.run_dir, self._finish(history, state["global_step"],
                                                         batches_total),
                           resumed_from, False)

    def _evaluate_val(self, val_loader: DataLoader) -> Tally:
        def counted():
            for batch in val_loader:
                yield batch
                self.progress.evaluated(1)

        self.progress.evaluation_started("validation", len(val_loader))
        try:
            return evaluate_clips(self.trainee, counted())
        finally:
            self.progress.phase_ended()

    def _place(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last_3d)
        if not self.world.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        if self.device.type == "cuda":
            # PyTorch's SyncBatchNorm refuses CPU tensors: on CPU each process keeps its own.
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            return DistributedDataParallel(model, device_ids=[self.device.index])
        return DistributedDataParallel(model)

    def _val_loader(self, clip_dataset) -> DataLoader:
        val_set = clip_dataset(self.splits.val, preset=self.preset, clip_len=self.clip_len,
                               crop_size=self.crop_size, training=False, seed=self.options.seed)
        mine = Subset(val_set, shard_indices(len(val_set), self.world))
        return self._loader(mine, batch_size=self.options.batch_size, shuffle=False)

    def _row(self, epoch: int, split: str, tally: Tally, *, started: float,
             lr: Optional[float] = None) -> Dict[str, Any]:
        total = Tally.from_list(all_sum(self.world, tally.as_list(), self.device))
        summary = total.summary()
        row = {"epoch": epoch, "split": split, **summary, "lr": lr,
               "seconds": round(time.monotonic() - started, 1)}
        if len(self.splits.classes) < TOP5_MIN_CLASSES:
            row["top5"] = None
        if split != "test":
            row["clip_top1"] = summary["top1"]
        return row

    def _save(self, epoch: int, batches_done: int, tally: Tally,
              history: List[Dict[str, Any]], global_step: int) -> None:
        rng = gather_objects(self.world, capture_rng())
        tallies = gather_objects(self.world, tally.as_list())
        if self.world.is_main:
            save_checkpoint(self.path(CHECKPOINT), {
                "model": self.network.state_dict(),
                "optimizer": self.trainee.optimizer.state_dict(),
                "scheduler": self.trainee.scheduler.state_dict(),
                "scaler": self.trainee.scaler.state_dict(),
                "rng": rng, "tally": tallies, "epoch": epoch, "batches_done": batches_done,
                "global_step": global_step, "history": json.dumps(history),
            })

    def _restore(self, checkpoint: Dict[str, Any], state: Dict[str, Any]) -> Tally:
        if len(checkpoint["rng"]) != self.world.size:
            raise UsageError(
                f"the checkpoint was written by {len(checkpoint['rng'])} processes, this run "
                f"has {self.world.size}")
        self.network.load_state_dict(checkpoint["model"])
        self.trainee.optimizer.load_state_dict(checkpoint["optimizer"])
        self.trainee.scheduler.load_state_dict(checkpoint["scheduler"])
        self.trainee.scaler.load_state_dict(checkpoint["scaler"])
        restore_rng(checkpoint["rng"][self.world.rank])
        state.update(epoch=checkpoint["epoch"], batches_done=checkpoint["batches_done"],
                     global_step=checkpoint["global_step"],
                     history=json.loads(checkpoint["history"]))
        return Tally.from_list(checkpoint["tally"][self.world.rank])

    def _write_progress(self, history: List[Dict[str, Any]]) -> None:
        if not self.world.is_main:
            return
        metrics.write_metrics_csv(self.path(METRICS), history)
        # Drawing takes seconds: redrawn at most once a minute, and at the end of the run.
        if time.monotonic() - self._curves_drawn >= CURVES_INTERVAL:
            metrics.write_curves(self.path(CURVES), history)
            self._curves_drawn = time.monotonic()

    def _finish(self, history: List[Dict[str, Any]], step: int,
                batches_total: int) -> Dict[str, Any]:
        """Export the model, evaluate it on the test list, write the results.

        A stop asked for meanwhile ends the evaluation (one process only: under torchrun
        the processes would have to agree on every video); the rerun evaluates again."""
        if self.world.is_main:
            self._export()
        started = time.monotonic()
        test_set = _VideoWindows(self.splits.test, self.preset, self.clip_len, self.crop_size)
        mine = Subset(test_set, shard_indices(len(test_set), self.world))
        failed: List[Tuple[int, str]] = []

        def decoded():  # one video's windows in memory at a time
            for windows, label, index, error in self._loader(mine, batch_size=None):
                if self.stop.requested and not self.world.distributed:
                    raise Stopped(step, self.options.epochs, batches_total)
                if error is None:
                    yield windows, label, index
                else:
                    failed.append((index, error))
                self.progress.evaluated(1)

        self.progress.evaluation_started("test", len(mine))
        try:
            scores = evaluate_videos(self.trainee, decoded(), self.options.batch_size)
        finally:
            self.progress.phase_ended()
        everything = gather_objects(self.world, (scores, failed))
        results: Dict[str, Any] = {}
        if self.world.is_main:
            scores = sorted((s for part, _ in everything for s in part), key=lambda s: s.index)
            failed = sorted(f for _, part in everything for f in part)
            test = self._test_results(scores, failed)
            rows = [row for row in history if row["split"] != "test"]
            rows.append({"epoch": self.options.epochs, "split": "test", "loss": test["loss"],
                         "top1": test["top1"], "top5": test["top5"],
                         "clip_top1": test["clip_top1"], "samples": test["videos"],
                         "seconds": round(time.monotonic() - started, 1)})
            results = {"test": test, "epochs": self.options.epochs,
                       "classes": list(self.splits.classes),
                       "last_epoch": {row["split"]: row for row in rows
                                      if row["epoch"] == self.options.epochs
                                      and row["split"] != "test"},
                       "model": MODEL}
            metrics.write_metrics_csv(self.path(METRICS), rows)
            metrics.write_curves(self.path(CURVES), rows)
            metrics.write_confusion(self.path(CONFUSION), test.pop("_confusion"),
                                    self.splits.classes)
            metrics.write_json(self.path(RESULTS), results)
            top5 = "" if test["top5"] is None else f", top-5 {test['top5']:.4f}"
            self.say(f"test: top-1 {test['top1']:.4f}{top5} over "
                     f"{test['videos']} videos (clip top-1 {test['clip_top1']:.4f})")
        barrier(self.world)
        return results

    def _test_results(self, scores: List[VideoScores], failed) -> Dict[str, Any]:
        classes = self.splits.classes
        if not scores:
            raise VideoReadError("no test video could be decoded: " +
                                 "; ".join(error for _, error in failed[:3]))
        probabilities = np.stack([s.probabilities for s in scores])
        labels = np.array([s.label for s in scores])
        predicted = probabilities.argmax(axis=1)
        matrix = metrics.confusion(labels, predicted, len(classes))
        windows = sum(s.windows for s in scores)
        picked = probabilities[np.arange(len(labels)), labels]
        with_top5 = len(classes) >= TOP5_MIN_CLASSES
        return {
            "top1": float(metrics.topk_hits(probabilities, labels, 1).mean()),
            "top5": float(metrics.topk_hits(probabilities, labels, 5).mean()) if with_top5
            else None,
            "videos": len(scores),
            "loss": float(-np.log(np.maximum(picked, 1e-12)).mean()),
            "clip_top1": sum(s.window_top1 for s in scores) / windows,
            "clip_top5": sum(s.window_top5 for s in scores) / windows if with_top5 else None,
            "clips": windows,
            "failed_videos": [self.splits.test[i].path + ": " + error for i, error in failed],
            "per_class": metrics.per_class_accuracy(matrix, classes),
            "confusion": matrix.tolist(),
            "_confusion": matrix,
        }

    def _export(self) -> None:
        from c3d_extract.weights.model_file import save_model_file

        options = {k: v for k, v in self.options.to_dict().items()
                   if k not in ("quiet", "overwrite")}
        save_model_file(self.path(MODEL), self.network, arch=self.arch.name,
                        class_names=list(self.class_names), clip_len=self.clip_len,
                        crop_size=self.crop_size, preset=self.preset,
                        extra_metadata={"training": json.dumps(options, sort_keys=True)})


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _last_line(message: str) -> str:
    """``Error: what went wrong`` from a message that may end a traceback, without it."""
    if "Traceback" not in message:
        return message
    last = [line.strip() for line in message.splitlines() if line.strip()][-1]
    return last.split(": ", 1)[1] if last.startswith("c3d_extract.") and ": " in last else last


def _row_line(row: Dict[str, Any], epochs: int) -> str:
    return (f"epoch {row['epoch']}/{epochs} {row['split']:5s} loss {row['loss']:.4f}  "
            f"top-1 {row['top1']:.4f}  ({row['samples']} clips, {row['seconds']} s)")
