"""Caffe-faithful C3D (Sports-1M) video descriptors.

The pipeline, one module per step:
read videos (``sources``, ``decoders``, ``workers``) -> make clips (``clips``,
``batching``) -> run the network (``model``, ``weights``) -> pool (``pooling``)
-> store (``store``) -> evaluate (``evaluation``).
"""

__version__ = "0.1.0"

from c3d_extract.errors import C3DError  # noqa: E402
from c3d_extract.model import C3D, build_c3d  # noqa: E402
from c3d_extract.preprocess import Preprocessing  # noqa: E402

__all__ = ["C3D", "C3DError", "Preprocessing", "build_c3d", "extract", "read_features",
           "__version__"]


def __getattr__(name: str):
    # The extractor and the store pull in h5py and the decoders; load them lazily.
    if name == "extract":
        from c3d_extract.extractor import extract
        return extract
    if name == "read_features":
        from c3d_extract.store import read_features
        return read_features
    raise AttributeError(name)
