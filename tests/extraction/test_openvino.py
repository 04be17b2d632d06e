"""The OpenVINO backend: fc6 on real decoded video against the network computed the plain
way in torch fp32, the store and resume through it, and the cache of converted networks."""

import math
import os
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from c3d_extract.errors import UsageError
from c3d_extract.extraction.backends import choose_backend, resolve_backend
from c3d_extract.extraction.network import prepare_network
from c3d_extract.extraction.options import ExtractOptions
from c3d_extract.extraction.run import extract
from c3d_extract.models.c3d import CONV_LAYERS, POOL5_SIZE
from c3d_extract.store.read import read_clip_features, read_features, read_video_table
from tests.support.reference import reference_clip_features
from tests.support.videos import write_video

ov = pytest.importorskip("openvino")
pytestmark = pytest.mark.slow

BATCH = 2  # the last batch of each run is partial: padding is exercised
EPS32 = float(np.finfo(np.float32).eps)


def fc6_tolerance(network, pool5: np.ndarray) -> np.ndarray:
    """Two fp32 computations of fc6 that sum in different orders differ by about
    sqrt(K) * eps * sum|a*b| per layer (K terms per output), and an error made early
    reaches fc6 through the same weights. Summed over the nine layers up to fc6 and
    scaled by fc6's own sum of |products|: a bound per element."""
    depth = sum(math.sqrt(27 * c_in) for _, c_in, _ in CONV_LAYERS) + math.sqrt(POOL5_SIZE)
    weight = network.fc6.weight.detach().double().abs().numpy()
    bias = network.fc6.bias.detach().double().abs().numpy()
    return depth * EPS32 * (pool5.astype(np.float64) @ weight.T + bias)


@pytest.fixture(scope="module")
def ov_cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("openvino-cache")
    saved = os.environ.get("C3D_EXTRACT_OPENVINO_CACHE")
    os.environ["C3D_EXTRACT_OPENVINO_CACHE"] = str(folder)
    yield folder
    if saved is None:
        del os.environ["C3D_EXTRACT_OPENVINO_CACHE"]
    else:
        os.environ["C3D_EXTRACT_OPENVINO_CACHE"] = saved


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    write_video(root / "a.mp4", 32)                   # 3 clips
    write_video(root / "b.avi", 24, codec="mpeg4")    # 2 clips
    return root


OPTIONS = ExtractOptions(layers=("fc6",), per_clip=True, batch_size=BATCH, device="cpu",
                         precision="fp32", backend="openvino")


@pytest.fixture(scope="module")
def first_run(ov_cache, corpus, random_weights, tmp_path_factory):
    """The one conversion of this module: C3D to fc6, batch 2, fp32."""
    prepared = prepare_network(random_weights, OPTIONS)
    out = tmp_path_factory.mktemp("out") / "ov.h5"
    summary = extract(str(corpus), str(out), weights=prepared, options=OPTIONS)
    return prepared, out, summary


def test_openvino_fc6_equals_torch_fp32_on_real_video(first_run, corpus, random_network):
    prepared, out, summary = first_run
    assert prepared.backend == "openvino" and prepared.runner.converted_now
    assert summary.n_failed == 0 and summary.n_clips == 5
    table = read_video_table(str(out))
    rows, starts, fc6 = read_clip_features(str(out), "fc6")
    for name in ("a.mp4", "b.avi"):
        mine = rows == list(table["id"]).index(name)
        ref_starts, expected = reference_clip_features(random_network, corpus / name)
        _, pool5 = reference_clip_features(random_network, corpus / name, "pool5")
        assert list(starts[mine]) == list(ref_starts)
        assert (expected > 0).sum() > 100, "fc6 is degenerate"
        tolerance = fc6_tolerance(random_network, pool5)
        assert np.all(np.abs(fc6[mine] - expected) <= tolerance)
    # The descriptors agree with torch's to the same order.
    ids, descriptors = read_features(str(out))
    assert np.allclose(np.linalg.norm(descriptors, axis=1), 1.0, atol=1e-5)


def test_a_second_network_reuses_the_cache_and_resumes(first_run, ov_cache, corpus,
                                                       random_weights, tmp_path):
    _, out, _ = first_run
    (entry,) = [p for p in ov_cache.iterdir() if not p.name.startswith(".")]
    # The model's files are not written again (key.json's mtime records the last use).
    mtimes = {p.name: p.stat().st_mtime_ns for p in entry.iterdir() if p.name != "key.json"}
    again = prepare_network(random_weights, OPTIONS)
    assert not again.runner.converted_now
    assert {p.name: p.stat().st_mtime_ns for p in entry.iterdir()
            if p.name != "key.json"} == mtimes
    assert [p.name for p in ov_cache.iterdir() if p.name != ".lock"] == [entry.name]
    # Resume: the same output with one more video computes only that one.
    import shutil

    folder = tmp_path / "videos"
    shutil.copytree(corpus, folder)
    write_video(folder / "c.mp4", 16)
    resumed = tmp_path / "resumed.h5"
    shutil.copy(out, resumed)
    summary = extract(str(folder), str(resumed), weights=again, options=OPTIONS)
    assert summary.n_processed == 1 and summary.n_skipped_existing == 2
    ids_before, before = read_features(str(out))
    ids_after, after = read_features(str(resumed))
    assert sorted(ids_after) == ["a.mp4", "b.avi", "c.mp4"]
    for video_id, row in zip(ids_before, before):
        assert np.array_equal(after[ids_after.index(video_id)], row)


def test_another_batch_size_or_precision_reuses_the_conversion(first_run, ov_cache, corpus,
                                                               random_weights, tmp_path):
    """C3D converted for batch 2 runs batch 4 in bf16 from the same entry, with fc6 as the
    batch-2 run computed it (to bf16's precision)."""
    _, out, _ = first_run
    options = replace(OPTIONS, batch_size=4, precision="bf16")
    again = prepare_network(random_weights, options)
    assert not again.runner.converted_now
    assert len([p for p in ov_cache.iterdir() if not p.name.startswith(".")]) == 1
    fp32 = replace(OPTIONS, batch_size=4)
    summary = extract(str(corpus), str(tmp_path / "b4.h5"),
                      weights=prepare_network(random_weights, fp32), options=fp32)
    assert summary.n_failed == 0 and summary.n_clips == 5
    _, starts2, fc6_2 = read_clip_features(str(out), "fc6")
    _, starts4, fc6_4 = read_clip_features(str(tmp_path / "b4.h5"), "fc6")
    assert np.array_equal(starts2, starts4)
    # The same fp32 graph on other batch sizes: equal up to the order of the sums.
    assert np.abs(fc6_2 - fc6_4).max() <= 1e-4 * np.abs(fc6_2).max()


# ---------------------------------------------------------------- the cache, on a tiny net

def _tiny_key(**changes):
    from c3d_extract.extraction.openvino_runner import ConversionKey

    fields = dict(weights_id="tiny", layers=("out",), clip_shape=(3, 2, 4, 4), num_classes=0,
                  openvino_version=ov.get_version())
    fields.update(changes)
    return ConversionKey(**fields)


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return torch.nn.Conv3d(3, 2, kernel_size=1).eval()


def _converter(module, shape, counter):
    from c3d_extract.extraction.openvino_runner import convert_network

    def convert():
        counter.append(1)
        return convert_network(module, shape)
    return convert


def _check_runs(model, module, clip_shape, batch=1):
    from c3d_extract.extraction.openvino_runner import with_batch_size

    with_batch_size(model, batch)
    x = np.random.default_rng(0).normal(size=(batch, *clip_shape)).astype(np.float32)
    got = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})({0: x})[0]
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    # Three products and a bias per output: a few ulps of the largest term.
    assert np.abs(got - expected).max() <= 8 * EPS32 * (np.abs(expected).max() + 1)


@pytest.mark.parametrize("damage", ["flip bytes of the weights", "truncate the graph",
                                    "garbage key", "remove the weights"])
def test_a_damaged_cache_entry_is_converted_again(tiny, tmp_path, damage):
    from c3d_extract.extraction.openvino_runner import converted_model

    key, shape, counter = _tiny_key(), (3, 2, 4, 4), []
    convert = _converter(tiny, shape, counter)
    _, now = converted_model(key, convert, tmp_path)
    assert now and len(counter) == 1
    model, now = converted_model(key, convert, tmp_path)
    assert not now and len(counter) == 1
    _check_runs(model, tiny, shape)
    entry = tmp_path / key.digest()
    if damage == "flip bytes of the weights":
        data = bytearray((entry / "model.bin").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (entry / "model.bin").write_bytes(bytes(data))
    elif damage == "truncate the graph":
        text = (entry / "model.xml").read_text()
        (entry / "model.xml").write_text(text[:len(text) // 2])
    elif damage == "garbage key":
        (entry / "key.json").write_bytes(b"\x00\xff not json")
    else:
        (entry / "model.bin").unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, now = converted_model(key, convert, tmp_path)
    assert now and len(counter) == 2
    assert any("converting it again" in str(w.message) for w in caught)
    _check_runs(model, tiny, shape)
    # Nothing left over (the lock file aside).
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".lock") == [entry.name]
    _, now = converted_model(key, convert, tmp_path)
    assert not now


def test_each_key_field_makes_its_own_entry(tiny, tmp_path):
    from c3d_extract.extraction.openvino_runner import converted_model

    shape, counter = (3, 2, 4, 4), []
    convert = _converter(tiny, shape, counter)
    keys = [_tiny_key(), _tiny_key(weights_id="other"), _tiny_key(clip_shape=(3, 4, 4, 4)),
            _tiny_key(layers=("a", "b")), _tiny_key(openvino_version="0.0")]
    for key in keys:
        converted_model(key, convert, tmp_path)
    assert len(counter) == len({k.digest() for k in keys}) == len(keys)


# ---------------------------------------------------------------- choosing the backend

def test_backend_choice():
    avx2 = frozenset({"avx2", "fma"})
    assert choose_backend("cpu", avx2, True) == "openvino"
    assert choose_backend("cpu", avx2 | {"avx512_bf16"}, True) == "openvino"
    assert choose_backend("cpu", avx2, False) == "torch"           # not installed
    assert choose_backend("cpu", frozenset({"sse4_2"}), True) == "torch"
    assert choose_backend("cuda", avx2, True) == "torch"


def test_backend_resolution(monkeypatch):
    monkeypatch.delenv("C3D_EXTRACT_BACKEND", raising=False)
    with pytest.raises(UsageError, match="runs on the CPU"):
        resolve_backend("openvino", torch.device("cuda"))
    assert resolve_backend("auto", torch.device("cuda")) == "torch"
    monkeypatch.setenv("C3D_EXTRACT_BACKEND", "torch")
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    monkeypatch.setenv("C3D_EXTRACT_BACKEND", "tensorrt")
    with pytest.raises(UsageError, match="C3D_EXTRACT_BACKEND"):
        resolve_backend("auto", torch.device("cpu"))
