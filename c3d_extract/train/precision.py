"""Training precision: mixed precision only where the hardware computes it natively.

On CUDA, ``auto`` trains in bf16 autocast where the GPU supports it (fp16 with a gradient
scaler otherwise). On a CPU, bf16 without native instructions (AVX-512 BF16 or AMX) is
emulated and many times slower than fp32 (SPEC section 8), so ``auto`` keeps fp32 there
and an explicit ``bf16`` is refused; fp16 is for CUDA only.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, FrozenSet

import torch

from c3d_extract.errors import UsageError

NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> FrozenSet[str]:
    """The feature flags of the first CPU listed in ``cpuinfo`` (empty if unreadable)."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_cpu_bf16(flags: FrozenSet[str]) -> bool:
    return bool(flags & NATIVE_BF16_FLAGS)


def resolve_training_precision(precision: str, device: torch.device,
                               flags: FrozenSet[str] = frozenset()) -> str:
    """``auto``/``fp32``/``bf16``/``fp16`` -> the precision to train in on ``device``.

    ``flags`` are the CPU's feature flags (``cpu_flags()``), consulted for bf16 on a CPU.
    """
    if device.type == "cuda":
        if precision == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return precision
    if precision in ("auto", "fp32"):
        return "fp32"
    if precision == "fp16":
        raise UsageError("fp16 training needs a CUDA device; use --precision fp32 or bf16")
    if not native_cpu_bf16(flags):
        raise UsageError("this CPU has no native bf16 (neither AMX nor AVX-512 BF16), where "
                         "bf16 is emulated and slower than fp32; use --precision fp32")
    return "bf16"


def autocast(precision: str, device: torch.device) -> ContextManager:
    """The forward pass's autocast context (nothing for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> "torch.amp.GradScaler":
    """A loss scaler, active for fp16 only (bf16 has fp32's exponent range)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
