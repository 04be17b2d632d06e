"""Where and in what precision a network runs: the device, the precision, one autocast.

Mixed precision only where the hardware computes it natively. For extraction ``auto`` is
bf16 on CUDA and, on a CPU, bf16 where it is native, else fp32. For training, on CUDA
``auto`` trains in bf16 autocast where the GPU supports it (fp16 with a gradient scaler
otherwise). On a CPU, bf16 without native instructions (AVX-512 BF16 or AMX) is
emulated and many times slower than fp32 (SPEC section 8), so ``auto`` keeps fp32 there
and an explicit ``bf16`` is refused; fp16 is for CUDA only.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import ContextManager, Optional

import torch

from c3d_extract.device.hardware import (PRECISIONS, CpuInfo, choose_cpu_precision, detect_cpu,
                                         emulated_precision_message)
from c3d_extract.device.launch import auto_device, local_rank
from c3d_extract.errors import UsageError

#: When set (fp32, bf16 or fp16), what ``auto`` means on a CPU, e.g. fp32 on a fleet of
#: mixed CPUs so that any machine can resume any output.
CPU_PRECISION_ENV = "C3D_EXTRACT_CPU_PRECISION"
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: cuDNN releases that skip cuDNN for bf16/fp16 NCDHW conv3d (SPEC section 8).
_SLOW_CUDNN = range(90800, 91500)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available (under torchrun the GPU ``LOCAL_RANK``), else cpu;
    ``cuda[:N]`` is checked to exist."""
    if name == "auto":
        cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
        name = auto_device(cuda_devices, local_rank(os.environ))
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {name} asked for, but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"device {name} does not exist "
                             f"({torch.cuda.device_count()} CUDA devices)")
    elif device.type != "cpu":
        raise UsageError(f"unsupported device {name!r}; use auto, cpu or cuda[:N]")
    return device


def resolve_precision(precision: str, device: torch.device, allow_emulated: bool = False,
                      cpu: Optional[CpuInfo] = None) -> str:
    """``auto`` -> bf16 on CUDA; on a CPU bf16 where it is native (AMX or AVX-512 BF16),
    else fp32 (or ``$C3D_EXTRACT_CPU_PRECISION``). An explicit bf16 or fp16 that the CPU
    would emulate is refused unless ``allow_emulated``. ``cpu`` defaults to this machine's."""
    if precision not in PRECISIONS:
        raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}")
    if device.type == "cuda":
        return "bf16" if precision == "auto" else precision
    info = cpu if cpu is not None else detect_cpu()
    if precision == "auto":
        pinned = os.environ.get(CPU_PRECISION_ENV, "")
        if not pinned:
            return choose_cpu_precision(info)
        if pinned not in PRECISIONS[1:]:
            raise UsageError(f"{CPU_PRECISION_ENV}={pinned!r}: expected one of "
                             f"{', '.join(PRECISIONS[1:])}")
        precision = pinned
    if not info.native(precision) and not allow_emulated:
        raise UsageError(emulated_precision_message(precision, info))
    return precision


def resolve_training_precision(precision: str, device: torch.device,
                               cpu: Optional[CpuInfo] = None) -> str:
    """``auto``/``fp32``/``bf16``/``fp16`` -> the precision to train in on ``device``.

    ``cpu`` (default: this machine's, ``hardware.detect_cpu``) says whether bf16 is native.
    """
    if device.type == "cuda":
        if precision == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return precision
    if precision in ("auto", "fp32"):
        return "fp32"
    if precision == "fp16":
        raise UsageError("fp16 training needs a CUDA device; use --precision fp32 or bf16")
    cpu = cpu or detect_cpu()
    if not cpu.bf16_native:
        raise UsageError(f"{cpu.describe()} has no native bf16 (neither AMX nor AVX-512 "
                         "BF16): bf16 is emulated there, many times slower than fp32; use "
                         "--precision fp32")
    return "bf16"


def autocast(precision: str, device: torch.device, *,
             cache_enabled: Optional[bool] = None) -> ContextManager:
    """The forward pass's autocast context (nothing for fp32), the one every pass uses.

    ``cache_enabled=False`` is for a CUDA graph's capture, which must not keep autocast's
    cast weights; None keeps torch's default."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[precision], cache_enabled=cache_enabled)


def grad_scaler(precision: str, device: torch.device) -> "torch.amp.GradScaler":
    """A loss scaler, active for fp16 only (bf16 has fp32's exponent range)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def warn_if_slow_cudnn(precision: str) -> None:
    version = torch.backends.cudnn.version()
    if precision != "fp32" and version is not None and version in _SLOW_CUDNN:
        warnings.warn(f"cuDNN {version} is known to skip its fast kernels for {precision} "
                      "conv3d in NCDHW layout; channels_last_3d is used to avoid that, but "
                      "a cuDNN outside 9.8-9.14 is faster", RuntimeWarning, stacklevel=3)
