"""Caffe-faithful C3D (Sports-1M) video descriptors, and the C3D and R(2+1)D models that
make them, trained and evaluated.

One package per stage of the pipeline: read videos (``video``) -> run the network
(``models``, ``weights``, ``device``, ``extraction``) -> store the features (``store``)
-> use them (``evaluation``, ``export``), train (``datasets``, ``train``) and predict
(``predict``); ``cli`` holds one thin module per command. README, "How the code is laid
out", draws the stages.

Names are imported lazily so that decode worker processes, which import this
package, never load torch.
"""

__version__ = "0.1.0"

_EXPORTS = {
    "C3D": "c3d_extract.models.c3d",
    "build_c3d": "c3d_extract.models.c3d",
    "C3DError": "c3d_extract.errors",
    "Preprocessing": "c3d_extract.video.preprocess",
    "ExtractOptions": "c3d_extract.extraction.options",
    "extract": "c3d_extract.extraction.run",
    "iter_records": "c3d_extract.extraction.stream",
    "read_features": "c3d_extract.store.read",
    "resolve_weights": "c3d_extract.weights.hub",
    "load_network": "c3d_extract.weights.loading",
    "load_model": "c3d_extract.weights.networks",
    "create_model": "c3d_extract.models.registry",
    "save_model_file": "c3d_extract.weights.model_file",
    "read_model_file": "c3d_extract.weights.model_file",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'c3d_extract' has no attribute {name!r}")
