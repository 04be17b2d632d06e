"""Mean files: the mean a Caffe-family preset subtracts, read from disk.

The mean travels with the weights (Caffe published ``.binaryproto`` blobs beside its
models), so reading it belongs with the weights' format readers; the video layer only
takes the array, through ``preprocess.preprocessing_with_mean``.
"""

from __future__ import annotations

import numpy as np

from c3d_extract.errors import UsageError
from c3d_extract.weights.caffe_proto import read_mean_binaryproto


def load_mean(path: str) -> np.ndarray:
    """A mean from ``.npy`` (3 x 16 x 128 x 171 BGR volume, or 3 channel values) or a Caffe
    ``.binaryproto`` mean blob. Returns the array as stored (float32)."""
    if path.lower().endswith(".binaryproto"):
        return read_mean_binaryproto(path)
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read the mean file {path}: {error}") from None
    return np.asarray(array, dtype=np.float32)
