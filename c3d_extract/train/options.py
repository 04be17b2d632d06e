"""The options of one training run, validated once and recorded in the run folder.

A rerun on the same run folder must ask for the same run: ``resume_key`` is the part of
the options that decides the weights (data, model, optimisation, seed, world size), and
a rerun whose key differs is refused unless the user overwrites the run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

from c3d_extract.device.hardware import PRECISIONS
from c3d_extract.errors import UsageError

DATASETS = ("ucf101", "hmdb51", "kinetics", "folder")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "step", "constant")
#: Learning rate and weight decay when none is given: SGD as the C3D and R(2+1)D papers
#: train, Adam as the R2Plus1D-C3D seed does (lr 1e-4, no decay).
DEFAULT_LR = {"sgd": 0.01, "adam": 1e-4}
DEFAULT_WEIGHT_DECAY = {"sgd": 5e-4, "adam": 0.0}
#: Options that do not change the weights a run ends with, so a rerun may change them.
_NOT_IN_KEY = ("quiet", "overwrite", "workers", "threads")


@dataclass(frozen=True)
class TrainOptions:
    """Everything ``c3d-train`` was asked to do. ``None`` means: the default for the choice."""

    data_root: str
    run_dir: str
    dataset: str
    arch: str
    splits: Optional[str] = None
    split: int = 1
    val_fraction: float = 0.1
    allow_overlap: bool = False
    init: Optional[str] = None
    freeze_backbone: bool = False
    epochs: int = 30
    batch_size: int = 8
    accumulate: int = 1
    optimizer: str = "sgd"
    lr: Optional[float] = None
    weight_decay: Optional[float] = None
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    clip_len: Optional[int] = None
    crop_size: Optional[int] = None
    hflip: bool = True
    dropout: Optional[float] = None
    checkpoint_every: int = 0
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    precision: str = "auto"
    workers: int = 2
    threads: int = 0
    quiet: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        choices = {"dataset": DATASETS, "optimizer": OPTIMIZERS, "schedule": SCHEDULES,
                   "precision": PRECISIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise UsageError(f"--{name} must be one of {', '.join(allowed)}, "
                                 f"not {getattr(self, name)!r}")
        positive = ("epochs", "batch_size", "accumulate", "split")
        for name in positive:
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
        for name in ("clip_len", "crop_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if self.checkpoint_every < 0 or self.workers < 0 or self.threads < 0:
            raise UsageError("--checkpoint-every, --workers and --threads cannot be negative")
        if self.lr is not None and not self.lr > 0:
            raise UsageError("--lr must be positive")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise UsageError("--weight-decay cannot be negative")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise UsageError("--warmup-epochs must lie between 0 and --epochs")
        if not 0 <= self.val_fraction < 1:
            raise UsageError("--val-fraction must lie in [0, 1)")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise UsageError("--dropout must lie in [0, 1)")
        if self.freeze_backbone and self.init is None:
            raise UsageError("--freeze-backbone needs --init: a random backbone is not worth "
                             "freezing")

    @property
    def learning_rate(self) -> float:
        return DEFAULT_LR[self.optimizer] if self.lr is None else self.lr

    @property
    def decay(self) -> float:
        return DEFAULT_WEIGHT_DECAY[self.optimizer] if self.weight_decay is None \
            else self.weight_decay

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def resume_key(self, world_size: int) -> Dict[str, Any]:
        """What must be equal between a run and its rerun for the rerun to continue it."""
        key = {name: value for name, value in asdict(self).items() if name not in _NOT_IN_KEY}
        key["world_size"] = world_size
        return key
