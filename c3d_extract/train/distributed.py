"""Data-parallel training under ``torchrun``: the process group, samplers and collectives.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; with a world of more than
one process a process group is set up (NCCL on GPUs, gloo on CPUs). Without a launcher,
or with one process, the same calls work on a single process and talk to nobody.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence

import torch
from torch import distributed as dist
from torch.utils.data import DistributedSampler

from c3d_extract.device.launch import launched_shard, local_rank


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: Optional[int] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def join_world(device: torch.device, environ=os.environ) -> World:
    """Join the launcher's process group (if there is more than one process)."""
    shard = launched_shard(environ)
    if shard is None or shard.count == 1:
        return World(local_rank=local_rank(environ))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=local_rank(environ))


def leave_world(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(world: World, values: Sequence[float], device: torch.device) -> List[float]:
    """Element-wise sum of ``values`` over all processes (float64)."""
    if not world.distributed:
        return [float(v) for v in values]
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def gather_objects(world: World, value: Any) -> List[Any]:
    """Every process's ``value``, in rank order (on every process)."""
    if not world.distributed:
        return [value]
    gathered: List[Any] = [None] * world.size
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(world: World, value: Any) -> Any:
    """Rank 0's ``value`` on every process."""
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (seeded shuffle per epoch, one shard per process) that can
    start an epoch part-way, after the samples a resumed run has already trained on."""

    def __init__(self, dataset, world: World, *, seed: int, shuffle: bool = True) -> None:
        super().__init__(dataset, num_replicas=world.size, rank=world.rank, shuffle=shuffle,
                         seed=seed, drop_last=False)
        self.start = 0

    def set_position(self, epoch: int, start: int = 0) -> None:
        """Draw epoch ``epoch``'s order and skip this process's first ``start`` samples."""
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return max(super().__len__() - self.start, 0)

    @property
    def epoch_length(self) -> int:
        """Samples per process in a whole epoch."""
        return super().__len__()


def shard_indices(count: int, world: World) -> List[int]:
    """This process's share of ``count`` items for evaluation: every ``size``-th, no padding."""
    return list(range(world.rank, count, world.size))
