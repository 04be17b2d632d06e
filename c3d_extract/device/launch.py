"""What a launcher such as ``torchrun`` tells each process: its shard and its GPU.

``torchrun`` sets ``RANK`` and ``WORLD_SIZE`` (over all machines) and
``LOCAL_RANK`` (on this machine) for every process it starts. Each process
then extracts shard ``RANK/WORLD_SIZE`` on GPU ``LOCAL_RANK``, on its own: the
processes never talk to each other, so no process group is set up.
"""

from __future__ import annotations

from typing import Mapping, Optional

from c3d_extract.device.sharding import Shard
from c3d_extract.errors import UsageError


def _integer(environ: Mapping[str, str], name: str) -> Optional[int]:
    value = environ.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise UsageError(f"the environment variable {name}={value!r} is not an integer") from None
    if number < 0:
        raise UsageError(f"the environment variable {name}={value!r} is negative")
    return number


def launched_shard(environ: Mapping[str, str]) -> Optional[Shard]:
    """``Shard(RANK, WORLD_SIZE)`` when a launcher set both, else None."""
    rank, world_size = _integer(environ, "RANK"), _integer(environ, "WORLD_SIZE")
    if rank is None or world_size is None:
        return None
    if world_size < 1 or rank >= world_size:
        raise UsageError(f"RANK={rank} and WORLD_SIZE={world_size} from the launcher do not "
                         "name a process (RANK must be below WORLD_SIZE)")
    return Shard(rank, world_size)


def local_rank(environ: Mapping[str, str]) -> Optional[int]:
    """``LOCAL_RANK`` when a launcher set it, else None."""
    return _integer(environ, "LOCAL_RANK")


def auto_device(cuda_devices: int, local_rank: Optional[int]) -> str:
    """The device ``--device auto`` means, given the number of visible CUDA devices.

    Under a launcher, process ``LOCAL_RANK`` takes GPU ``LOCAL_RANK`` (modulo the
    visible GPUs, so that a scheduler that shows each process only its own GPU,
    or more processes than GPUs, still works); otherwise the first GPU, or the CPU.
    """
    if cuda_devices < 1:
        return "cpu"
    return "cuda" if local_rank is None else f"cuda:{local_rank % cuda_devices}"
