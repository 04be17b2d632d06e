"""Extraction with a runner that returns results late, as an asynchronous engine does: every
video is complete (all its clips pooled) before its record comes out."""

from collections import deque
from dataclasses import replace

import numpy as np
import pytest

from c3d_extract.extraction.network import prepare_network
from c3d_extract.extraction.options import ExtractOptions
from c3d_extract.extraction.stream import iter_records
from tests.support.videos import write_video

pytestmark = pytest.mark.slow


class Deferred:
    """Wraps a runner; holds every result back until the extraction has nothing else to do
    and waits, then hands them back one at a time, in submission order."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.held = deque()
        self.submitted = 0

    def submit(self, batch) -> None:
        self.submitted += 1
        self.held.append((batch, self.inner(batch)))

    def collect(self, wait: bool = False):
        return [self.held.popleft()] if wait and self.held else []

    @property
    def pending(self) -> int:
        return len(self.held)

    def discard(self) -> None:
        self.held.clear()


def test_records_wait_for_their_clips_in_flight(tmp_path, random_weights):
    write_video(tmp_path / "a.mp4", 24)        # 2 clips
    write_video(tmp_path / "b.mp4", 10)        # padded: 1 clip
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    videos = [(name, str(tmp_path / name)) for name in ("a.mp4", "broken.mp4", "b.mp4")]
    options = ExtractOptions(per_clip=True, batch_size=1, device="cpu", backend="torch")
    prepared = prepare_network(random_weights, options)
    direct = {r.id: r for r in iter_records(videos, prepared, options)}
    deferred = Deferred(prepared.runner)
    late = {r.id: r for r in iter_records(videos, replace(prepared, runner=deferred), options)}
    assert deferred.submitted == 3 and deferred.pending == 0
    assert set(late) == set(direct) == {"a.mp4", "b.mp4", "broken.mp4"}
    assert late["broken.mp4"].status == "error"
    for name, clips in (("a.mp4", 2), ("b.mp4", 1)):
        assert late[name].n_clips == direct[name].n_clips == clips
        assert late[name].status == direct[name].status
        # The same clips through the same network, batch by batch: equal to float32 rounding.
        assert np.allclose(late[name].features["fc6"], direct[name].features["fc6"],
                           rtol=0, atol=1e-6)
