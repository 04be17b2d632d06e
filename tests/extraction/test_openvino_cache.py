"""The OpenVINO cache on a tiny network: one entry per network and layers whatever the batch
size, bounded by least-recent use, listed and cleared by ``c3d-weights cache``; the
conversion announced before it starts; the rate clock started after it."""

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from c3d_extract.extraction.options import ExtractOptions
from c3d_extract.extraction.run import Progress, extract
from c3d_extract.store.read import read_clip_features
from tests.support.tiny_network import tiny_prepared
from tests.support.videos import write_video

ov = pytest.importorskip("openvino")

from c3d_extract.extraction import openvino_runner  # noqa: E402 - needs openvino
from c3d_extract.extraction.openvino_runner import (CacheEntry, ConversionKey,  # noqa: E402
                                                    cache_entries, clear_cache, convert_network,
                                                    converted_model, entries_to_evict,
                                                    with_batch_size)

EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    root = tmp_path / "ov-cache"
    monkeypatch.setenv("C3D_EXTRACT_OPENVINO_CACHE", str(root))
    monkeypatch.delenv("C3D_EXTRACT_OPENVINO_CACHE_MB", raising=False)
    return root


class Recorder(Progress):
    def __init__(self):
        self.events = []

    def notice(self, text):
        self.events.append(("notice", text))

    def start(self, total, already_done):
        self.events.append(("start", total))


def entry_folders(root):
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


# ---------------------------------------------------------------- one entry, any batch size

def test_batch_sizes_4_and_8_share_one_entry_and_compute_the_same(cache_root, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", 40)   # 4 clips
    write_video(videos / "b.mp4", 24)   # 2 clips
    conversions = []
    real_convert = openvino_runner.convert_network

    def counting(*args):
        conversions.append(args)
        return real_convert(*args)

    results = {}
    for batch in (4, 8):
        options = ExtractOptions(per_clip=True, batch_size=batch, backend="openvino",
                                 device="cpu", precision="fp32")
        progress = Recorder()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(openvino_runner, "convert_network", counting)
            summary = extract(str(videos), str(tmp_path / f"b{batch}.h5"),
                              weights=tiny_prepared(), options=options, progress=progress)
        assert summary.n_failed == 0 and summary.n_clips == 6
        results[batch] = read_clip_features(str(tmp_path / f"b{batch}.h5"), "fc6")
        notices = [text for kind, text in progress.events if kind == "notice"]
        if batch == 4:  # the first use: announced before the conversion, once
            assert len(notices) == 1 and "converting" in notices[0]
            assert progress.events.index(("notice", notices[0])) < \
                progress.events.index(("start", 2))
        else:
            assert notices == []
    assert len(conversions) == 1
    assert len(entry_folders(cache_root)) == 1
    # Both batch sizes give torch's numbers (a 1x1x1 convolution and a mean: a few ulps).
    rows, starts, fc6 = results[4]
    assert np.array_equal(rows, results[8][0]) and np.array_equal(starts, results[8][1])
    assert np.abs(fc6 - results[8][2]).max() <= 16 * EPS32 * (np.abs(fc6).max() + 1)


def test_the_entry_takes_any_batch_size(tmp_path):
    module = nn.Conv3d(3, 2, kernel_size=1).eval()
    clip_shape = (3, 2, 4, 4)
    key = ConversionKey("tiny", ("out",), clip_shape, 0, ov.get_version())
    converted_model(key, lambda: convert_network(module, clip_shape), tmp_path)
    for batch in (1, 3, 8):
        model, now = converted_model(key, lambda: pytest.fail("converted again"), tmp_path)
        assert not now
        with_batch_size(model, batch)
        x = np.random.default_rng(batch).normal(size=(batch, *clip_shape)).astype(np.float32)
        got = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(
            {0: x})[0]
        with torch.no_grad():
            expected = module(torch.from_numpy(x)).numpy()
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 8 * EPS32 * (np.abs(expected).max() + 1)


# ---------------------------------------------------------------- the size bound

def entry(name, size, last_used):
    return CacheEntry(path=Path(name), size=size, last_used=last_used, key={})


def test_eviction_removes_least_recently_used_first_and_never_the_new_entry():
    entries = [entry("a", 100, 1.0), entry("b", 100, 3.0), entry("c", 100, 2.0),
               entry("new", 100, 4.0)]
    assert entries_to_evict(entries, 400) == []
    assert [e.path.name for e in entries_to_evict(entries, 399)] == ["a"]
    assert [e.path.name for e in entries_to_evict(entries, 150)] == ["a", "c", "b"]
    # A limit below one entry keeps only the entry just written.
    keep = entries[3].path
    assert [e.path.name for e in entries_to_evict(entries, 0, keep)] == ["a", "c", "b"]
    old_new = [entry("new", 100, 0.5), entry("b", 100, 3.0)]
    assert [e.path.name for e in entries_to_evict(old_new, 100, keep)] == ["b"]


def _convert_tiny(root, weights_id):
    module = nn.Conv3d(3, 2, kernel_size=1).eval()
    key = ConversionKey(weights_id, ("out",), (3, 2, 4, 4), 0, ov.get_version())
    converted_model(key, lambda: convert_network(module, (3, 2, 4, 4)), root)
    return root / key.digest()


def test_the_cache_stays_under_its_limit_dropping_the_least_recently_used(tmp_path,
                                                                          monkeypatch):
    first = _convert_tiny(tmp_path, "first")
    size = sum(p.stat().st_size for p in first.iterdir())
    # Room for two entries: a third evicts the one used least recently.
    monkeypatch.setattr(openvino_runner, "openvino_cache_limit", lambda: 2 * size + size // 2)
    second = _convert_tiny(tmp_path, "second")
    old = time.time() - 3600
    os.utime(second / "key.json", (old, old))
    _convert_tiny(tmp_path, "first")   # a use of the first: now the most recent
    third = _convert_tiny(tmp_path, "third")
    assert entry_folders(tmp_path) == sorted([first.name, third.name])
    assert [e.path for e in cache_entries(tmp_path)][0] == third


@pytest.mark.parametrize("value", ["lots", "-5", "1.5"])
def test_a_bad_cache_limit_is_refused_before_converting(tmp_path, monkeypatch, value):
    from c3d_extract.errors import UsageError

    monkeypatch.setenv("C3D_EXTRACT_OPENVINO_CACHE_MB", value)
    key = ConversionKey("x", ("out",), (3, 2, 4, 4), 0, ov.get_version())
    with pytest.raises(UsageError, match="C3D_EXTRACT_OPENVINO_CACHE_MB"):
        converted_model(key, lambda: pytest.fail("converted"), tmp_path)


def test_leftovers_of_a_killed_writer_are_removed(tmp_path):
    (tmp_path / ".converting-dead").mkdir(parents=True)
    (tmp_path / ".converting-dead" / "model.bin").write_bytes(b"x" * 10)
    _convert_tiny(tmp_path, "one")
    assert not (tmp_path / ".converting-dead").exists()
    assert len(entry_folders(tmp_path)) == 1


# ---------------------------------------------------------------- c3d-weights cache

def test_c3d_weights_cache_lists_and_clears(cache_root):
    from c3d_extract.cli.weights import cli

    runner = CliRunner()
    empty = runner.invoke(cli, ["cache"])
    assert empty.exit_code == 0, empty.output
    assert str(cache_root) in empty.output and "0 entries" in empty.output
    folders = [_convert_tiny(cache_root, "aaaa1111:caffe"), _convert_tiny(cache_root, "bbbb")]
    sizes = [sum(p.stat().st_size for p in f.iterdir()) for f in folders]
    listed = runner.invoke(cli, ["cache"])
    assert listed.exit_code == 0, listed.output
    assert "2 entries" in listed.output and "4096 MB" in listed.output
    assert f"{sum(sizes) / 2**20:.1f} MB" in listed.output
    for folder in folders:
        assert folder.name[:12] in listed.output
    assert "aaaa1111 (caffe)" in listed.output and "last used" in listed.output
    assert "2x4x4" in listed.output  # the clip: frames x height x width
    cleared = runner.invoke(cli, ["cache", "clear"])
    assert cleared.exit_code == 0, cleared.output
    assert "removed 2 entries" in cleared.output
    assert entry_folders(cache_root) == []
    assert clear_cache(cache_root) == (0, 0)


# ---------------------------------------------------------------- concurrent runs

def test_a_conversion_finished_by_another_run_meanwhile_is_kept(tmp_path):
    """Two runs converting the same network: the second to finish finds the first's entry
    under the lock and keeps it rather than replacing it."""
    module = nn.Conv3d(3, 2, kernel_size=1).eval()
    key = ConversionKey("same", ("out",), (3, 2, 4, 4), 0, ov.get_version())
    folder = tmp_path / key.digest()
    stamps = {}

    def convert_while_another_run_stores_it():
        converted_model(key, lambda: convert_network(module, (3, 2, 4, 4)), tmp_path)
        stamps.update({p.name: p.stat().st_mtime_ns for p in folder.iterdir()})
        return convert_network(module, (3, 2, 4, 4))

    _, now = converted_model(key, convert_while_another_run_stores_it, tmp_path)
    assert now
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    assert entry_folders(tmp_path) == [folder.name]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [".lock"]


def test_clearing_waits_for_a_run_reading_an_entry(tmp_path):
    import threading

    _convert_tiny(tmp_path, "read")
    cleared = threading.Event()
    with openvino_runner._cache_lock(tmp_path, exclusive=False):
        worker = threading.Thread(target=lambda: (clear_cache(tmp_path), cleared.set()))
        worker.start()
        assert not cleared.wait(0.5)  # the reader holds the lock
        assert len(entry_folders(tmp_path)) == 1
    worker.join(10)
    assert cleared.is_set() and entry_folders(tmp_path) == []


# ---------------------------------------------------------------- what the CLI shows

def test_the_rates_start_when_the_network_is_ready(monkeypatch):
    """A conversion before ``start`` is not counted in clips/s or frames/s."""
    from c3d_extract.cli import extract as cli_extract

    now = [100.0]
    monkeypatch.setattr(cli_extract.time, "monotonic", lambda: now[0])
    progress = cli_extract.BarProgress(quiet=False)
    progress.notice("converting the network for OpenVINO")
    now[0] += 30.0  # the conversion
    progress.start(total=1, already_done=0)
    now[0] += 5.0
    progress.frames_decoded(100)
    progress.clips_done(10)
    assert progress.bar.postfix == "2.0 clips/s, 20 frames/s"
    progress.close()


def test_large_weights_are_announced_before_loading(tmp_path, monkeypatch):
    from c3d_extract.extraction import network
    from c3d_extract.weights import networks

    big = tmp_path / "big.safetensors"
    with open(big, "wb") as handle:
        handle.truncate(network.LARGE_WEIGHTS_BYTES + 1)  # sparse: no disk used
    small = tmp_path / "small.safetensors"
    small.write_bytes(b"x")
    tiny = tiny_prepared().weights
    monkeypatch.setattr(networks, "load_model", lambda *args, **kwargs: tiny)
    options = ExtractOptions(device="cpu", precision="fp32", backend="torch")
    heard = []
    network.load_prepared_network(str(big), options, notify=heard.append)
    assert heard == [f"loading the weights {big} (100 MB)"]
    heard.clear()
    network.load_prepared_network(str(small), options, notify=heard.append)
    assert heard == []
