"""Running out of GPU memory: one typed error that names a smaller batch, not a traceback.

``torch.cuda.OutOfMemoryError`` is caught where the network runs (extraction, prediction,
training) and turned into ``DeviceMemoryError``; the CLI prints its message on one line.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

from c3d_extract.errors import DeviceMemoryError


def smaller_batch(batch_size: int) -> int:
    """The batch to try after ``batch_size`` did not fit: half of it, 0 when it was 1."""
    return batch_size // 2 if batch_size > 1 else 0


def out_of_memory_message(batch_size: int, device: str, precision: str,
                          accumulate: Optional[int] = None) -> str:
    """What to tell the user; ``accumulate`` is given for training (gradient accumulation
    keeps the effective batch when the batch is halved)."""
    head = f"out of GPU memory on {device} with a batch of {batch_size} clips ({precision})"
    suggested = smaller_batch(batch_size)
    if not suggested:
        return (f"{head}: even one clip does not fit; free the GPU (other processes may hold "
                "its memory) or run with --device cpu")
    hint = f"--batch-size {suggested}"
    if accumulate is not None:
        hint += f" --accumulate {2 * accumulate} (the same effective batch)"
    return f"{head}: try a smaller batch, e.g. {hint}"


@contextlib.contextmanager
def device_memory_guard(batch_size: int, device: object, precision: str,
                        accumulate: Optional[int] = None) -> Iterator[None]:
    """Turn ``torch.cuda.OutOfMemoryError`` raised inside into ``DeviceMemoryError``."""
    import torch

    try:
        yield
    except torch.cuda.OutOfMemoryError:
        message = out_of_memory_message(batch_size, str(device), precision, accumulate)
        error = DeviceMemoryError(message, batch_size, smaller_batch(batch_size))
    else:
        return
    # Outside the except block, so that the frames holding the batch's tensors are gone.
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    raise error
