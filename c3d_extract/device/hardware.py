"""What the CPU computes natively: bf16 and fp16 matrix units, read from its flags.

Reduced precisions are worth it on a CPU only where the hardware has them:
AVX-512 BF16 or AMX-BF16 for bf16, AVX-512 FP16 or AMX-FP16 for fp16.
Elsewhere oneDNN emulates them, dozens of times slower than fp32 (SPEC
section 8). The decision is a pure function of the flag set, so that every
kind of CPU can be tested from its flag string.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from typing import FrozenSet, Optional, Tuple

#: The precisions a network can be asked to run in. Here, without torch, so that the
#: commands' options and the training options name them without importing torch.
PRECISIONS: Tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
#: /proc/cpuinfo flags that mean bf16 (resp. fp16) dot products in hardware.
BF16_FLAGS: Tuple[str, ...] = ("amx_bf16", "avx512_bf16")
FP16_FLAGS: Tuple[str, ...] = ("amx_fp16", "avx512_fp16")


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name, its flags and what it runs natively."""

    model: str
    flags: FrozenSet[str]
    bf16_native: bool
    fp16_native: bool

    def native(self, precision: str) -> bool:
        """Whether ``precision`` (fp32, bf16 or fp16) runs on this CPU's own units."""
        return {"fp32": True, "bf16": self.bf16_native, "fp16": self.fp16_native}[precision]

    def describe(self) -> str:
        found = [f for f in BF16_FLAGS + FP16_FLAGS if f in self.flags]
        return f"{self.model or 'unknown CPU'} ({', '.join(found) or 'no bf16/fp16 units'})"


def parse_cpuinfo(text: str) -> Tuple[str, FrozenSet[str]]:
    """``/proc/cpuinfo`` text -> (model name, flags of the first processor).

    x86 lists ``flags``; ARM lists ``Features`` (its bf16 is not used here).
    """
    model, flags = "", ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = value
        if model and flags:
            break
    return model, frozenset(flags.split())


def cpu_info_from(model: str, flags: FrozenSet[str],
                  torch_bf16: Optional[bool] = None,
                  torch_fp16: Optional[bool] = None) -> CpuInfo:
    """Native bf16/fp16 from the flags; torch's own check (``None``: not available) must
    agree, since a torch built without oneDNN emulates whatever the CPU has."""
    bf16 = any(f in flags for f in BF16_FLAGS) and torch_bf16 is not False
    fp16 = any(f in flags for f in FP16_FLAGS) and torch_fp16 is not False
    return CpuInfo(model, flags, bf16, fp16)


def choose_cpu_precision(info: CpuInfo) -> str:
    """``--precision auto`` on a CPU: bf16 where native (its descriptors keep cosine
    >= 0.9999 to fp32), else fp32. fp16 is never chosen: its 5-bit exponent is not
    shown to keep C3D's activations (inputs up to +-255) faithful."""
    return "bf16" if info.bf16_native else "fp32"


def emulated_precision_message(precision: str, info: CpuInfo) -> str:
    """Why an explicit reduced precision is refused on this CPU, and what to use."""
    flags = " or ".join(BF16_FLAGS if precision == "bf16" else FP16_FLAGS)
    return (f"--precision {precision} is emulated on this CPU, {info.describe()}: it has no "
            f"{flags}, so {precision} runs dozens of times slower than fp32 (an hour "
            f"instead of a minute). Use --precision fp32 (or auto, which picks fp32 here), "
            f"or pass --allow-emulated-precision to run {precision} anyway")


@functools.lru_cache(maxsize=1)
def detect_cpu() -> CpuInfo:
    """This machine's CPU (read once)."""
    try:
        with open("/proc/cpuinfo") as handle:
            model, flags = parse_cpuinfo(handle.read())
    except OSError:
        model, flags = platform.processor(), frozenset()
    return cpu_info_from(model, flags, *_torch_checks())


def _torch_checks() -> Tuple[Optional[bool], Optional[bool]]:
    """torch's oneDNN checks for bf16/fp16 (``None`` where this torch lacks them)."""
    import torch

    if not torch.backends.mkldnn.is_available():
        return False, False
    checks = []
    for name in ("_is_mkldnn_bf16_supported", "_is_mkldnn_fp16_supported"):
        check = getattr(torch.ops.mkldnn, name, None)
        try:
            checks.append(bool(check()) if check is not None else None)
        except RuntimeError:
            checks.append(None)
    return checks[0], checks[1]
