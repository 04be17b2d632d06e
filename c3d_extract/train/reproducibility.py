"""Bit-for-bit reproducible CPU arithmetic for ``--deterministic``.

``torch.use_deterministic_algorithms`` picks deterministic kernels but does not pin what
Intel MKL does: MKL chooses among code paths (instruction set, blocking, how unaligned
buffers are copied) at run time, and which one it takes can depend on the alignment of
the buffers it is given, which follows from the process's memory layout (even the size of
the environment). Two runs of the same training then differ in the last bits, and a
resumed run matches an uninterrupted one only by luck. MKL's Conditional Numerical
Reproducibility fixes this: in ``AUTO,STRICT`` mode (``MKL_CBWR``) it keeps one code path
for the machine and gives the same bits whatever the alignment.

MKL reads ``MKL_CBWR`` once, when it first runs, so the command line sets it before torch
is imported (``set_reproducible_environment``); ``pin_mkl_results`` sets the same mode
through MKL's own call as well, which takes effect when no MKL routine has run yet, and
says when it could not. oneDNN (``ONEDNN_DEFAULT_FPMATH_MODE=STRICT``: no implicit
down-conversion of fp32 on AMX machines) and torch's own flag for deterministic oneDNN
kernels are set too.
"""

from __future__ import annotations

import ctypes
import os
import warnings
from typing import MutableMapping, Optional

#: MKL's conditional numerical reproducibility mode for --deterministic.
MKL_CBWR = "AUTO,STRICT"
_MKL_CBWR_AUTO, _MKL_CBWR_STRICT, _MKL_CBWR_ALL = 2, 0x10000, -1
ENVIRONMENT = {"MKL_CBWR": MKL_CBWR, "ONEDNN_DEFAULT_FPMATH_MODE": "STRICT"}


def set_reproducible_environment(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set the variables MKL and oneDNN read when they start (a value the user set is
    kept); call before torch is imported."""
    for name, value in ENVIRONMENT.items():
        environ.setdefault(name, value)


def _mkl() -> Optional[ctypes.CDLL]:
    """torch's library with MKL linked in, or None where torch has no MKL."""
    import torch

    if not torch.backends.mkl.is_available():
        return None
    path = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    try:
        library = ctypes.CDLL(path)
        library.mkl_serv_cbwr_get, library.mkl_serv_cbwr_set  # noqa: B018
    except (OSError, AttributeError):
        return None
    return library


def mkl_mode() -> Optional[int]:
    """MKL's current reproducibility mode (``MKL_CBWR_*`` bits), None without MKL."""
    library = _mkl()
    return None if library is None else int(library.mkl_serv_cbwr_get(_MKL_CBWR_ALL))


def mkl_results_pinned() -> Optional[bool]:
    """Whether MKL runs in ``AUTO,STRICT`` mode; None without MKL."""
    mode = mkl_mode()
    return None if mode is None else mode == _MKL_CBWR_AUTO | _MKL_CBWR_STRICT


def pin_mkl_results() -> None:
    """Put MKL in ``AUTO,STRICT`` mode; warn when it is too late (MKL already ran in
    another mode, e.g. torch was imported and used before ``MKL_CBWR`` was set)."""
    library = _mkl()
    if library is None or mkl_results_pinned():
        return
    if library.mkl_serv_cbwr_set(_MKL_CBWR_AUTO | _MKL_CBWR_STRICT) != 0:
        warnings.warn(f"MKL had already run, so its results depend on memory alignment and "
                      f"may differ between runs; set MKL_CBWR={MKL_CBWR} in the environment "
                      "for bit-identical runs", RuntimeWarning, stacklevel=2)
