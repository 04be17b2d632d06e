"""The kernel orders a weights file may hold, relative to the Caffe binary's (SPEC section 4).

Plain data without heavy imports, so the command-line option can list the choices
without loading torch.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from c3d_extract.errors import UsageError

CAFFE = "caffe"
KD_REVERSED = "kd-reversed"
KHKW_REVERSED = "khkw-reversed"

#: Order name -> the kernel axes of (out, in, kD, kH, kW) that are reversed with respect to
#: Caffe; reversing them again gives Caffe order.
REVERSED_AXES: Dict[str, Tuple[int, ...]] = {
    CAFFE: (),
    KD_REVERSED: (2,),
    KHKW_REVERSED: (3, 4),
}
KERNEL_ORDERS: Tuple[str, ...] = tuple(REVERSED_AXES)

DESCRIPTIONS: Dict[str, str] = {
    CAFFE: "Caffe order",
    KD_REVERSED: "Caffe's kernels reversed in kD",
    KHKW_REVERSED: "Caffe's kernels reversed in kH and kW",
}

OPTION_HELP = ("Kernel order the weights file holds: caffe, kd-reversed (Caffe's kernels "
               "reversed in time) or khkw-reversed (reversed in height and width). Default: "
               "the file's format decides (kd-reversed, assumed, for DavideA's c3d.pickle; "
               "khkw-reversed for Keras 1 / Theano files; caffe for the others).")


def check_kernel_order(kernel_order: Optional[str]) -> Optional[str]:
    """``kernel_order`` if it is None or a known order; ``UsageError`` otherwise."""
    if kernel_order is not None and kernel_order not in KERNEL_ORDERS:
        raise UsageError(f"unknown kernel order {kernel_order!r}; choose from "
                         f"{', '.join(KERNEL_ORDERS)}")
    return kernel_order
