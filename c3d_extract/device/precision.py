"""Training precision: mixed precision only where the hardware computes it natively.

On CUDA, ``auto`` trains in bf16 autocast where the GPU supports it (fp16 with a gradient
scaler otherwise). On a CPU, bf16 without native instructions (AVX-512 BF16 or AMX) is
emulated and many times slower than fp32 (SPEC section 8), so ``auto`` keeps fp32 there
and an explicit ``bf16`` is refused; fp16 is for CUDA only.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, Optional

import torch

from c3d_extract.errors import UsageError
from c3d_extract.device.hardware import CpuInfo, detect_cpu

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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


def autocast(precision: str, device: torch.device) -> ContextManager:
    """The forward pass's autocast context (nothing for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> "torch.amp.GradScaler":
    """A loss scaler, active for fp16 only (bf16 has fp32's exponent range)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
