"""Which engine runs the network: torch, or OpenVINO on a CPU, and the runner for it.

``auto`` picks OpenVINO on an x86-64 CPU that has AVX2 when the ``openvino``
package is installed (it is a dependency on x86-64 Linux), torch otherwise and
always on CUDA. The rule comes from measurements (BENCHMARKS.md): OpenVINO's
C3D was faster than torch's at the same precision on every x86-64 CPU measured
(AMD Zen 3 with AVX2 only, AMD Zen 4 with AVX-512 BF16). It is decided from
the CPU's flags, never timed at run time, so the same machine always makes
the same choice. ``$C3D_EXTRACT_BACKEND`` (torch or openvino) overrides what
``auto`` means on a CPU.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING, Callable, FrozenSet, Optional, Sequence, Tuple

from c3d_extract.errors import UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from c3d_extract.device.hardware import CpuInfo
    from c3d_extract.extraction.runners import Runner
    from c3d_extract.video.preprocess import CropWindow, Preprocessing

BACKENDS = ("auto", "torch", "openvino")
#: When set (torch or openvino), what ``auto`` means on a CPU.
BACKEND_ENV = "C3D_EXTRACT_BACKEND"
#: CPU flags OpenVINO's fast path needs; without them torch is used.
OPENVINO_FLAGS: FrozenSet[str] = frozenset({"avx2", "fma"})


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def choose_backend(device_type: str, cpu_flags: FrozenSet[str], openvino_available: bool) -> str:
    """``--backend auto``: OpenVINO on an AVX2 CPU where it is installed, else torch."""
    if device_type == "cpu" and openvino_available and OPENVINO_FLAGS <= cpu_flags:
        return "openvino"
    return "torch"


def resolve_backend(name: str, device: "torch.device",
                    cpu: Optional["CpuInfo"] = None) -> str:
    """``auto``, ``torch`` or ``openvino`` -> the backend to use; OpenVINO is checked to
    be installed and asked for on a CPU."""
    from c3d_extract.device.hardware import detect_cpu

    if name not in BACKENDS:
        raise UsageError(f"backend must be one of {', '.join(BACKENDS)}")
    if name == "auto":
        if device.type != "cpu":
            return "torch"
        name = os.environ.get(BACKEND_ENV, "")
        if not name:
            return choose_backend(device.type, (cpu or detect_cpu()).flags,
                                  openvino_installed())
        if name not in BACKENDS[1:]:
            raise UsageError(f"{BACKEND_ENV}={name!r}: expected torch or openvino")
    if name == "openvino":
        if device.type != "cpu":
            raise UsageError(f"the OpenVINO backend runs on the CPU; use --device cpu, or "
                             f"--backend torch on {device}")
        if not openvino_installed():
            raise UsageError("the OpenVINO backend needs the openvino package: "
                             "pip install openvino")
        from c3d_extract.extraction.openvino_runner import openvino_cache_limit

        openvino_cache_limit()  # a bad $C3D_EXTRACT_OPENVINO_CACHE_MB, before any work
    return name


def make_runner(backend: str, model: "nn.Module", weights_id: str,
                preprocessing: "Preprocessing", clip_len: int, layers: Sequence[str],
                device: "torch.device", precision: str, batch_size: int,
                windows: Tuple["CropWindow", ...] = (),
                on_convert: Optional[Callable[[], None]] = None) -> "Runner":
    """The runner of ``backend`` (resolved) for ``model``: ``ClipRunner`` or
    ``OpenVinoRunner``; both take batches with ``submit`` and return them with ``collect``.
    ``batch_size`` counts clips; with several crop ``windows`` each clip is that many
    rows of the network's batch. ``on_convert()`` is called before OpenVINO converts the
    network (a first use)."""
    if backend == "openvino":
        from c3d_extract.extraction.openvino_runner import OpenVinoRunner

        return OpenVinoRunner(model, weights_id, preprocessing, clip_len, layers,
                              precision, batch_size, on_convert=on_convert,
                              windows=windows)
    from c3d_extract.extraction.torch_runner import ClipRunner

    return ClipRunner(model, preprocessing, clip_len, layers, device, precision,
                      fixed_batch=batch_size, windows=windows)
