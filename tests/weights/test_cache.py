"""The cache of converted weights is a saving, never a requirement: a file in any other format
loads the same when its safetensors copy cannot be written."""

import errno

import numpy as np
import pytest
import torch

from c3d_extract import atomic_files
from c3d_extract.errors import StoreError
from c3d_extract.weights.loading import load_state_dict
from tests.support.weights_support import source_model


@pytest.fixture
def pth(tmp_path, monkeypatch):
    monkeypatch.setenv("C3D_EXTRACT_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "c3d.pth"
    torch.save(source_model().state_dict(), path)
    return path


def _cached(cache):
    return sorted(p.name for p in cache.rglob("*.safetensors"))


def test_an_unwritable_cache_still_loads_the_weights(pth, tmp_path, monkeypatch):
    def read_only(path, nbytes):
        raise OSError(errno.EROFS, "Read-only file system", path)

    monkeypatch.setattr(atomic_files, "reserve_space", read_only)
    with pytest.raises(StoreError, match="Read-only file system"):  # what the writer says
        atomic_files.write_atomically(str(tmp_path / "probe"), b"x")
    loaded = load_state_dict(str(pth))
    expected = source_model().state_dict()
    assert set(loaded.state_dict) == set(expected)
    assert _cached(tmp_path / "cache") == []
    monkeypatch.undo()
    monkeypatch.setenv("C3D_EXTRACT_CACHE", str(tmp_path / "cache"))
    again = load_state_dict(str(pth))  # with room, the copy is written
    assert len(_cached(tmp_path / "cache")) == 1
    for name, tensor in loaded.state_dict.items():
        assert np.array_equal(tensor.numpy(), again.state_dict[name].numpy()), name
