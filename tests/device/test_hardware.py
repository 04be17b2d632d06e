"""Native precisions from CPU flags, what `--precision auto` picks on each kind of CPU, the
refusal of an emulated bf16/fp16, and bf16's faithfulness where it is native."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from c3d_extract.device.hardware import (CpuInfo, choose_cpu_precision, cpu_info_from, detect_cpu,
                                         parse_cpuinfo)
from c3d_extract.device.precision import resolve_precision
from c3d_extract.errors import UsageError
from tests.support.videos import write_video

BASE = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c avx2 fma bmi2"
# Flag lists as the kernel prints them (abridged) for each kind of CPU.
CPUS = {
    "intel_sapphire_rapids": BASE + " avx512f avx512bw avx512vl avx512_bf16 avx512_fp16 "
                                    "amx_bf16 amx_tile amx_int8",
    "intel_granite_rapids": BASE + " avx512f avx512_bf16 avx512_fp16 amx_bf16 amx_fp16",
    "intel_skylake_avx512": BASE + " avx512f avx512bw avx512vl avx512dq",
    "amd_zen4": BASE + " avx512f avx512bw avx512vl avx512_bf16",
    "amd_zen3": BASE,
}
# (native bf16, native fp16, what auto picks)
EXPECTED = {
    "intel_sapphire_rapids": (True, True, "bf16"),
    "intel_granite_rapids": (True, True, "bf16"),
    "intel_skylake_avx512": (False, False, "fp32"),  # AVX-512, but bf16 only emulated
    "amd_zen4": (True, False, "bf16"),
    "amd_zen3": (False, False, "fp32"),
}
CPU = torch.device("cpu")


def info(kind: str, **torch_checks) -> CpuInfo:
    return cpu_info_from(kind, frozenset(CPUS[kind].split()), **torch_checks)


@pytest.fixture
def no_pinning(monkeypatch):
    monkeypatch.delenv("C3D_EXTRACT_CPU_PRECISION", raising=False)


@pytest.mark.parametrize("kind", sorted(CPUS))
def test_native_precisions_and_auto_for_each_kind_of_cpu(kind, no_pinning):
    bf16, fp16, auto = EXPECTED[kind]
    cpu = info(kind)
    assert (cpu.bf16_native, cpu.fp16_native) == (bf16, fp16)
    assert choose_cpu_precision(cpu) == auto
    assert resolve_precision("auto", CPU, cpu=cpu) == auto
    assert resolve_precision("fp32", CPU, cpu=cpu) == "fp32"


def test_torch_without_onednn_bf16_means_not_native():
    assert not info("amd_zen4", torch_bf16=False).bf16_native
    assert info("amd_zen4", torch_bf16=None).bf16_native  # this torch has no such check


def test_parse_cpuinfo_reads_the_first_processor():
    text = ("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n"
            "flags\t\t: fpu avx2 fma\n\nprocessor\t: 1\nmodel name\t: other\n"
            "flags\t\t: fpu avx512_bf16\n")
    assert parse_cpuinfo(text) == ("AMD EPYC 7B13", frozenset({"fpu", "avx2", "fma"}))
    assert parse_cpuinfo("") == ("", frozenset())


@pytest.mark.parametrize("kind, precision", [("amd_zen3", "bf16"), ("amd_zen3", "fp16"),
                                             ("intel_skylake_avx512", "bf16"),
                                             ("amd_zen4", "fp16")])
def test_an_emulated_precision_is_refused_unless_allowed(kind, precision, no_pinning):
    with pytest.raises(UsageError) as raised:
        resolve_precision(precision, CPU, cpu=info(kind))
    message = str(raised.value)
    assert "emulated" in message and "--precision fp32" in message
    assert "--allow-emulated-precision" in message and kind in message
    assert resolve_precision(precision, CPU, allow_emulated=True, cpu=info(kind)) == precision


def test_native_reduced_precisions_are_accepted(no_pinning):
    assert resolve_precision("bf16", CPU, cpu=info("amd_zen4")) == "bf16"
    assert resolve_precision("fp16", CPU, cpu=info("intel_sapphire_rapids")) == "fp16"


def test_cuda_is_not_judged_by_the_cpu(no_pinning):
    cuda = torch.device("cuda")
    assert resolve_precision("auto", cuda, cpu=info("amd_zen3")) == "bf16"
    assert resolve_precision("fp16", cuda, cpu=info("amd_zen3")) == "fp16"


def test_pinning_auto_with_the_environment(monkeypatch):
    monkeypatch.setenv("C3D_EXTRACT_CPU_PRECISION", "fp32")
    assert resolve_precision("auto", CPU, cpu=info("amd_zen4")) == "fp32"
    monkeypatch.setenv("C3D_EXTRACT_CPU_PRECISION", "bf16")
    with pytest.raises(UsageError, match="emulated"):
        resolve_precision("auto", CPU, cpu=info("amd_zen3"))
    monkeypatch.setenv("C3D_EXTRACT_CPU_PRECISION", "int8")
    with pytest.raises(UsageError, match="C3D_EXTRACT_CPU_PRECISION"):
        resolve_precision("auto", CPU, cpu=info("amd_zen3"))


def test_this_machine_is_detected_consistently():
    cpu = detect_cpu()
    flags = set(parse_cpuinfo(open("/proc/cpuinfo").read())[1])
    assert cpu.flags == flags
    if cpu.bf16_native:
        assert flags & {"amx_bf16", "avx512_bf16"}


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    write_video(folder / "v.mp4", 32)  # 3 clips
    return folder


def test_cli_refuses_emulated_bf16_before_computing(video_folder, tmp_path, monkeypatch):
    """As on an AVX2-only CPU, whatever this machine is."""
    from c3d_extract.cli.extract import cli

    monkeypatch.setattr("c3d_extract.device.precision.detect_cpu", lambda: info("amd_zen3"))
    out = tmp_path / "o.h5"
    result = CliRunner().invoke(cli, [str(video_folder), "-o", str(out), "--weights", "random",
                                      "--device", "cpu", "--precision", "bf16"])
    assert result.exit_code == 2, result.output
    assert "emulated" in result.output and "--allow-emulated-precision" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_cli_refuses_emulated_bf16_on_this_machine(video_folder, tmp_path):
    if detect_cpu().bf16_native:
        pytest.skip(f"bf16 is native on this CPU ({detect_cpu().describe()})")
    out = tmp_path / "o.h5"
    done = subprocess.run([sys.executable, "-m", "c3d_extract", str(video_folder), "-o",
                           str(out), "--weights", "random", "--device", "cpu", "--precision",
                           "bf16", "--quiet"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr
    assert "emulated" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()


def test_auto_keeps_cosine_to_fp32_on_real_video(video_folder, random_weights, monkeypatch):
    """Where auto picks a reduced precision (bf16 where native), its per-clip fc6 on real
    decoded video stays within cosine 0.9999 of fp32."""
    from c3d_extract.extraction.network import prepare_network
    from c3d_extract.extraction.options import ExtractOptions
    from c3d_extract.extraction.stream import iter_records

    monkeypatch.delenv("C3D_EXTRACT_CPU_PRECISION", raising=False)
    cpu = detect_cpu()
    if choose_cpu_precision(cpu) == "fp32":
        pytest.skip(f"auto is fp32 on this CPU, {cpu.describe()}: bf16 is not native")
    videos = [("v", str(video_folder / "v.mp4"))]
    features = {}
    for precision in ("auto", "fp32"):
        options = ExtractOptions(device="cpu", precision=precision, per_clip=True,
                                 backend="torch")
        prepared = prepare_network(random_weights, options)
        (record,) = iter_records(videos, prepared, options)
        features[prepared.precision] = record.clip_features["fc6"].astype(np.float64)
    assert set(features) == {"bf16", "fp32"}
    reduced, exact = features["bf16"], features["fp32"]
    assert len(exact) == 3 and (exact > 0).sum() > 100
    cosines = (reduced * exact).sum(1) / (np.linalg.norm(reduced, axis=1)
                                          * np.linalg.norm(exact, axis=1))
    assert cosines.min() >= 0.9999, cosines
