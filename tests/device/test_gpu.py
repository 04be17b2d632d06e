"""The CUDA paths: bf16 against fp32, pinned-memory transfers, SyncBatchNorm in a one-process
NCCL group, running out of GPU memory (a message with a smaller batch, not a traceback),
R(2+1)D's deterministic training pool and the NVDEC decoder.

Tests marked ``gpu`` need a CUDA device and are skipped without one (``pytest -m gpu``
runs them; ``benchmarks/gpu.sh`` does on a GPU machine). The others check, on any machine,
what those paths rely on: the error and its message, the pool's equality, NVDEC's refusal
and its fallback to the CPU decoder, reported in the video table.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from c3d_extract.device.memory import out_of_memory_message, smaller_batch
from c3d_extract.errors import DeviceMemoryError, UsageError
from tests.support.videos import decode_rgb, write_video

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


def _batch(n_clips: int, seed: int = 0):
    from benchmarks.measure import synthetic_batch

    return synthetic_batch(n_clips, seed=seed)


# ---------------------------------------------------------------- out of memory, on any machine

def test_smaller_batch_halves_down_to_none():
    assert [smaller_batch(n) for n in (256, 33, 2, 1)] == [128, 16, 1, 0]


def test_out_of_memory_message_names_a_smaller_batch():
    text = out_of_memory_message(256, "cuda:0", "bf16")
    assert "out of GPU memory on cuda:0" in text and "--batch-size 128" in text
    assert "--accumulate" not in text
    training = out_of_memory_message(16, "cuda:0", "bf16", accumulate=2)
    assert "--batch-size 8 --accumulate 4" in training
    assert "even one clip does not fit" in out_of_memory_message(1, "cuda:0", "fp32")


class _OutOfMemory(torch.nn.Module):
    def extract(self, clips, layers):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")


def test_runner_turns_out_of_memory_into_a_typed_error():
    from c3d_extract.extraction.torch_runner import ClipRunner
    from c3d_extract.video.preprocess import SPORTS1M

    runner = ClipRunner(_OutOfMemory(), SPORTS1M, 16, ("fc6",), torch.device("cpu"), "fp32")
    with pytest.raises(DeviceMemoryError) as caught:
        runner(_batch(4))
    assert caught.value.batch_size == 4 and caught.value.suggested == 2
    assert "--batch-size 2" in str(caught.value)


@pytest.mark.slow
def test_command_reports_out_of_memory_in_one_line(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from c3d_extract.cli.extract import cli
    from c3d_extract.extraction.torch_runner import ClipRunner

    def out_of_memory(self, batch):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    monkeypatch.setattr(ClipRunner, "clips_tensor", out_of_memory)
    video = write_video(tmp_path / "a.mp4", 16)
    result = CliRunner().invoke(cli, [str(video), "-o", str(tmp_path / "f.h5"), "--weights",
                                      "random", "--device", "cpu", "--batch-size", "8",
                                      "--workers", "1", "-q"])
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, torch.cuda.OutOfMemoryError)
    assert "out of GPU memory" in result.output and "--batch-size 4" in result.output
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- R(2+1)D's deterministic pool

def test_r2plus1d_training_pool_under_deterministic_algorithms_is_a_plain_mean():
    from c3d_extract.models.r2plus1d import build_r2plus1d_18

    model = build_r2plus1d_18(num_classes=5, seed=0)
    training = build_r2plus1d_18(num_classes=5, seed=0).train()  # its BatchNorm stats move
    clips = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    was = torch.are_deterministic_algorithms_enabled()
    with torch.no_grad():
        evaluated = model.forward_features(clips)
        pooled = training.forward_features(clips)
        torch.use_deterministic_algorithms(True)
        try:
            mean = training.forward_features(clips)
            evaluated_deterministic = model.forward_features(clips)
        finally:
            torch.use_deterministic_algorithms(was)
    torch.testing.assert_close(mean, pooled, rtol=1e-5, atol=1e-6)
    # Evaluation keeps the pool module: its output is unchanged, bit for bit.
    assert torch.equal(evaluated, evaluated_deterministic)


# ---------------------------------------------------------------- NVDEC, on any machine

def test_nvdec_takes_the_codecs_nvdec_decodes():
    from c3d_extract.video.nvdec import nvdec_refusal

    assert nvdec_refusal("h264") is None and nvdec_refusal("hevc") is None
    assert "MPEG-4 Part 2" in nvdec_refusal("mpeg4")
    assert nvdec_refusal("")


@pytest.mark.skipif(CUDA, reason="checks the refusal on a machine without CUDA")
def test_nvdec_is_refused_with_the_reason_without_cuda_or_torchcodec():
    from c3d_extract.video.opening import check_decoder

    with pytest.raises(UsageError) as caught:
        check_decoder("nvdec")
    assert "torchcodec" in str(caught.value) or "CUDA" in str(caught.value)


def test_nvdec_decodes_mpeg4_on_the_cpu_and_says_so(tmp_path):
    from c3d_extract.video.nvdec import NvdecDecoder
    from c3d_extract.video.preprocess import SPORTS1M
    from c3d_extract.video.workers import decode_video

    video = write_video(tmp_path / "a.avi", 10, codec="mpeg4")
    with NvdecDecoder(str(video)) as decoder:
        frames = np.stack(list(decoder.frames()))
        assert decoder.codec() == "mpeg4 (cpu)"
        assert "MPEG-4 Part 2" in decoder.warnings[0]
        assert "decoded on the CPU" in decoder.warnings[0]
    np.testing.assert_array_equal(frames, decode_rgb(video))
    messages = []
    decode_video("nvdec", str(video), SPORTS1M, messages.append)
    assert messages[0][:4] == ("start", pytest.approx(25.0), "mpeg4 (cpu)", "nvdec")
    assert any(m[0] == "warning" and "MPEG-4 Part 2" in m[1] for m in messages)
    assert messages[-1][0] == "end" and messages[-1][1] == 10


# ---------------------------------------------------------------- on CUDA

@pytest.mark.gpu
@needs_cuda
def test_bf16_features_agree_with_fp32_on_cuda(random_weights):
    from c3d_extract.extraction.network import prepare_network
    from c3d_extract.extraction.options import ExtractOptions

    batch = _batch(8, seed=3)
    outputs = {}
    for precision in ("fp32", "bf16"):
        prepared = prepare_network(random_weights, ExtractOptions(
            device="cuda", precision=precision, batch_size=8))
        outputs[precision] = prepared.runner(batch)["fc6"].astype(np.float64)
    a, b = outputs["fp32"], outputs["bf16"]
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() >= 0.999, cosine


@pytest.mark.gpu
@needs_cuda
def test_pinned_transfer_gathers_the_same_clips_as_the_cpu():
    from c3d_extract.extraction.torch_runner import gather_clips
    from c3d_extract.video.preprocess import SPORTS1M

    batch = _batch(5)
    assert torch.from_numpy(batch.frames).pin_memory().is_pinned()
    on_cpu = gather_clips(batch, SPORTS1M, torch.device("cpu"))
    on_gpu = gather_clips(batch, SPORTS1M, torch.device("cuda"), fixed_batch=8,
                          channels_last=True)
    torch.cuda.synchronize()
    assert on_gpu.shape[0] == 8 and on_gpu.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(on_gpu[:5].cpu(), on_cpu, rtol=0, atol=1e-5)
    # The padding rows repeat the first clip.
    torch.testing.assert_close(on_gpu[5:].cpu(), on_cpu[:1].expand(3, -1, -1, -1, -1),
                               rtol=0, atol=1e-5)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.gpu
@needs_cuda
def test_sync_batchnorm_in_a_one_process_nccl_group_matches_batchnorm():
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from c3d_extract.models.r2plus1d import build_r2plus1d_18

    if not dist.is_nccl_available():
        pytest.skip("this torch has no NCCL")
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0,
                            world_size=1)
    try:
        plain = build_r2plus1d_18(num_classes=4, seed=0).cuda().train()
        synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(
            build_r2plus1d_18(num_classes=4, seed=0)).cuda().train()
        assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules())
        wrapped = DistributedDataParallel(synced, device_ids=[torch.cuda.current_device()])
        clips = torch.randn(2, 3, 4, 32, 32, device="cuda",
                            generator=torch.Generator("cuda").manual_seed(0))
        expected = plain(clips)
        got = wrapped(clips)
        got.sum().backward()
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        assert all(p.grad is not None for p in synced.parameters() if p.requires_grad)
    finally:
        dist.destroy_process_group()


@pytest.mark.gpu
@needs_cuda
def test_running_out_of_gpu_memory_prints_a_smaller_batch_not_a_traceback(tmp_path):
    video = write_video(tmp_path / "a.mp4", 16)
    # Every batch is padded to --batch-size on CUDA: a million clips (600 GB as uint8)
    # cannot fit.
    done = subprocess.run([sys.executable, "-m", "c3d_extract", str(video), "-o",
                           str(tmp_path / "f.h5"), "--weights", "random", "--device", "cuda",
                           "--batch-size", "1000000", "--workers", "1", "-q"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "out of GPU memory" in done.stderr and "--batch-size 500000" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.gpu
@needs_cuda
def test_r2plus1d_trains_with_deterministic_algorithms_on_cuda():
    from c3d_extract.models.r2plus1d import build_r2plus1d_18

    model = build_r2plus1d_18(num_classes=4, seed=0).cuda().train()
    clips = torch.randn(2, 3, 4, 32, 32, device="cuda")
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        gradients = []
        for _ in range(2):
            model.zero_grad()
            model(clips).sum().backward()
            gradients.append(model.stem[0].weight.grad.clone())
    finally:
        torch.use_deterministic_algorithms(was)
    assert torch.equal(gradients[0], gradients[1])


@pytest.mark.gpu
@needs_cuda
def test_nvdec_frames_match_the_cpu_decoder_within_colour_conversion(tmp_path):
    import importlib.util

    if importlib.util.find_spec("torchcodec") is None:
        pytest.skip("torchcodec is not installed")
    from c3d_extract.video.nvdec import NvdecDecoder
    from c3d_extract.video.opening import check_decoder

    try:
        check_decoder("nvdec")
    except UsageError as error:
        pytest.skip(str(error))
    video = write_video(tmp_path / "a.mp4", 12, width=160, height=120)
    with NvdecDecoder(str(video)) as decoder:
        frames = np.stack(list(decoder.frames()))
        assert decoder.codec() == "h264 (nvdec)", decoder.warnings
    expected = decode_rgb(Path(video))
    assert frames.shape == expected.shape
    difference = np.abs(frames.astype(np.int16) - expected.astype(np.int16))
    # NV12 -> RGB on the GPU rounds differently from swscale: a few levels, rarely more.
    assert difference.mean() <= 2.0 and np.percentile(difference, 99) <= 8, \
        (difference.mean(), np.percentile(difference, 99), difference.max())
