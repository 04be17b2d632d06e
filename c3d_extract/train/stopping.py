"""Stopping a training run cleanly: a request that a signal handler sets, read between
optimizer steps.

The command line installs the handler (``cli/train.py``); the run checks ``requested``
after every optimizer step, writes a checkpoint there and stops, so a rerun continues from
exactly that step. Under ``torchrun`` the processes agree on the step (one all-reduce of
the flag per step), as each may see the signal at a different moment.
"""

from __future__ import annotations

import signal
import time
from typing import Optional


class StopRequest:
    """Set once when the run should stop after the step in progress."""

    def __init__(self) -> None:
        self.reason: Optional[str] = None
        self.since: Optional[float] = None

    @property
    def requested(self) -> bool:
        return self.reason is not None

    def request(self, reason: str = "interrupted") -> None:
        if self.reason is None:
            self.reason, self.since = reason, time.monotonic()


class Stopped(Exception):
    """Raised inside a run after the checkpoint of ``step`` has been written; ``train``
    turns it into its result. Not an error: nothing is lost."""

    def __init__(self, step: int, epoch: int, batches_done: int) -> None:
        super().__init__(f"stopped at step {step}")
        self.step, self.epoch, self.batches_done = step, epoch, batches_done


def ignore_interrupts(worker_id: int = 0) -> None:
    """For loader and decode workers: a terminal's Ctrl-C reaches the whole process group,
    and the main process decides when to stop (a worker would die with a traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
