"""Weights: where they come from, how they are read, and the preset that travels with them.

The modules import one another in one direction: format readers (``caffe_proto``,
``unpickle``, ``formats``, ``means``) -> conversion to Caffe order (``layouts``, ``convert``) ->
loading (``loading``) -> published files by name (``hub``); ``compare`` reads
files through ``loading``. Names are imported lazily, so that ``kernel_orders`` can be
read without loading torch.
"""

_EXPORTS = {
    "DEFAULT_WEIGHTS_FILE": "c3d_extract.weights.loading",
    "LoadedWeights": "c3d_extract.weights.convert",
    "cache_dir": "c3d_extract.weights.loading",
    "default_weights_path": "c3d_extract.weights.loading",
    "file_sha256": "c3d_extract.weights.loading",
    "load_network": "c3d_extract.weights.loading",
    "load_state_dict": "c3d_extract.weights.loading",
    "random_weights": "c3d_extract.weights.loading",
    "resolve_weights": "c3d_extract.weights.hub",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'c3d_extract.weights' has no attribute {name!r}")
