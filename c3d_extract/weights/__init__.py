"""Weights: where they come from, how they are read, and the preset that travels with them.

From the bytes up: what a file may hold and is safe to unpickle (``pickle_scan``,
``unpickle``, ``safetensors_file``, ``kernel_orders``); the readers of each published format
(``caffe_proto``, ``formats``, ``means`` for Caffe's mean blob); the conversion to Caffe's
kernel order (``layouts``, ``convert``); loading a C3D (``loading``), and a network of any
architecture, model files included (``model_file``, ``networks``); published files by
name (``hub``); and ``compare``, which reads any two files. Names are imported lazily, so
that ``kernel_orders`` can be read without loading torch.
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
