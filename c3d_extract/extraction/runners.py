"""What turns batches of clips into per-layer features: the ``Runner`` protocol.

Three runners implement it: ``torch_runner.ClipRunner`` computes at once,
``openvino_runner.OpenVinoRunner`` in the background, and ``DecodeOnlyRunner``
(``--decode-only``) computes nothing. This module imports no torch, so that the
decode-only path never loads it.
"""

from __future__ import annotations

from typing import Dict, List, Protocol, Tuple

import numpy as np

from c3d_extract.extraction.batching import Batch

#: A batch's features: per layer, clips x dims (clips x crops x dims with several crops).
Outputs = Dict[str, np.ndarray]


class Runner(Protocol):
    """Takes batches with ``submit``; ``collect`` hands back ``(batch, outputs)`` pairs in
    submission order (``wait``: block until at least one is done, if any is pending)."""

    def submit(self, batch: Batch) -> None: ...

    def collect(self, wait: bool = False) -> List[Tuple[Batch, Outputs]]: ...

    @property
    def pending(self) -> int: ...

    def discard(self) -> None: ...


class DecodeOnlyRunner:
    """The runner of a run without a network (``--decode-only``): each batch comes back at
    once with no outputs, so clips are counted and nothing is computed."""

    def __init__(self) -> None:
        self._done: List[Tuple[Batch, Dict]] = []

    def submit(self, batch: Batch) -> None:
        self._done.append((batch, {}))

    def collect(self, wait: bool = False) -> List[Tuple[Batch, Dict]]:
        done, self._done = self._done, []
        return done

    @property
    def pending(self) -> int:
        return len(self._done)

    def discard(self) -> None:
        self._done = []
