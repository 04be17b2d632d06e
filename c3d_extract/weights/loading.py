"""Resolve a ``--weights`` value to a checked C3D state dict and its metadata.

Sources, in order: ``random`` (seeded, for smoke tests), a registry name, a
file in any supported format, or (nothing given) the default file in
``weights/`` or the cache directory. Every file is read without executing
code (``weights_only=True``, safetensors) and checked tensor by tensor
against the architecture before a model is built, so a bad file never
half-loads a network.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from c3d_extract.errors import WeightsError, WeightsNotFoundError
from c3d_extract.models.c3d import C3D, SPORTS1M_CLASSES, build_c3d, state_dict_shapes
from c3d_extract.preprocess import SPORTS1M, Preprocessing

if TYPE_CHECKING:
    from c3d_extract.weights import formats

DEFAULT_WEIGHTS_FILE = "c3d_sports1m.safetensors"
RANDOM_SEED = 0
_PROJECT_WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"


@dataclass(frozen=True)
class LoadedWeights:
    """A checked state dict in the project's naming and what is known about it."""

    state_dict: Dict[str, torch.Tensor] = field(repr=False)
    name: str                 # as given: path, registry name or "random"
    sha256: str               # of the source file ("random-seed-0" for random weights)
    source_format: str
    preprocessing: Preprocessing = SPORTS1M
    class_names: Tuple[str, ...] = ()
    conversion_notes: Tuple[str, ...] = ()  # e.g. how the source's own pipeline differed

    @property
    def num_classes(self) -> int:
        weight = self.state_dict.get("fc8.weight")
        return 0 if weight is None else int(weight.shape[0])

    @property
    def is_random(self) -> bool:
        return self.source_format == "random"


def cache_dir() -> Path:
    """``$C3D_EXTRACT_CACHE``, else ``~/.cache/c3d_extract``."""
    configured = os.environ.get("C3D_EXTRACT_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "c3d_extract"


def default_weights_path() -> Optional[Path]:
    for directory in (Path.cwd() / "weights", _PROJECT_WEIGHTS_DIR, cache_dir()):
        candidate = directory / DEFAULT_WEIGHTS_FILE
        if candidate.is_file():
            return candidate
    return None


def file_sha256(path: os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def random_weights(seed: int = RANDOM_SEED, num_classes: int = SPORTS1M_CLASSES) -> LoadedWeights:
    model = build_c3d(num_classes=num_classes, seed=seed)
    return LoadedWeights(state_dict=model.state_dict(), name="random",
                         sha256=f"random-seed-{seed}", source_format="random")


def check_state_dict(state_dict: Dict[str, torch.Tensor], source: str) -> None:
    """Raise ``WeightsError`` naming the first layer whose keys or shapes do not fit C3D."""
    num_classes = int(state_dict["fc8.weight"].shape[0]) if "fc8.weight" in state_dict else 0
    expected = state_dict_shapes(num_classes)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:6])}"
                         f"{' ...' if len(unexpected) > 6 else ''}")
        raise WeightsError(f"{source} does not hold a C3D state dict: {'; '.join(parts)}")
    for key, shape in expected.items():
        actual = tuple(state_dict[key].shape)
        if actual != shape:
            raise WeightsError(f"{source}: layer {key.rsplit('.', 1)[0]} has {key} of shape "
                               f"{actual}, C3D needs {shape}")


def _read_safetensors(path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            return {k: handle.get_tensor(k) for k in handle.keys()}, metadata
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f"cannot read {path} as safetensors: {error}") from None


def read_torch_file(path: str) -> object:
    """``torch.load`` that never runs code from the file (``weights_only=True``, explicitly)."""
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "unsafe content"
        raise WeightsError(f"refusing to load {path}: it holds more than tensors ({first}); "
                           "only plain state dicts are read") from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise WeightsError(f"cannot read {path} as a PyTorch file (truncated or damaged?): "
                           f"{error}") from None


def looks_like_safetensors(head: bytes, size: int) -> bool:
    """Whether a file of ``size`` bytes starting with ``head`` is safetensors: an 8-byte
    little-endian header length that fits in the file, then a JSON object."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    header_length = int.from_bytes(head[:8], "little")
    return 2 <= header_length <= size - 8


def _looks_like_safetensors(path: str) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(9)
    return looks_like_safetensors(head, os.path.getsize(path))


CONVERTED_DIR = "converted"


def converted_cache_path(sha256: str) -> Path:
    """Where a foreign weights file with this sha256 is cached once converted."""
    return cache_dir() / CONVERTED_DIR / f"{sha256}.safetensors"


def _from_safetensors(path: str, name: str,
                      sha256: str) -> Tuple[LoadedWeights, Dict[str, str]]:
    state_dict, metadata = _read_safetensors(path)
    preprocessing = SPORTS1M
    try:
        if "preprocessing" in metadata:
            preprocessing = Preprocessing.from_dict(json.loads(metadata["preprocessing"]))
        class_names = tuple(json.loads(metadata.get("class_names", "[]")))
        notes = tuple(json.loads(metadata.get("conversion_notes", "[]")))
    except (ValueError, TypeError) as error:
        raise WeightsError(f"{path} has unreadable metadata: {error}") from None
    return LoadedWeights(
        state_dict=state_dict, name=name, sha256=sha256,
        source_format=metadata.get("source_format", "safetensors"),
        preprocessing=preprocessing, class_names=class_names,
        conversion_notes=notes), metadata


def _checked(weights: LoadedWeights, source: str) -> LoadedWeights:
    state_dict = {k: v.detach().to(torch.float32).contiguous()
                  for k, v in weights.state_dict.items()}
    check_state_dict(state_dict, source)
    return replace(weights, state_dict=state_dict)


def load_state_dict(path: str, *, keras_layout: "Optional[formats.KerasLayout]" = None,
                    use_cache: bool = True) -> LoadedWeights:
    """Read a weights file in any supported format, converted to the project's naming.

    A foreign format (Caffe, Keras, PyTorch pickles) is converted once and, with
    ``use_cache``, kept as safetensors under ``cache_dir()/converted/<sha256>`` so later
    runs skip the conversion; ``sha256`` stays that of the source file.
    """
    from c3d_extract.weights import formats

    if not os.path.isfile(path):
        raise WeightsError(f"no weights file at {path}")
    sha256 = file_sha256(path)
    if _looks_like_safetensors(path):
        return _checked(_from_safetensors(path, path, sha256)[0], path)
    cached = converted_cache_path(sha256)
    if use_cache and keras_layout is None and cached.is_file():
        try:
            weights, metadata = _from_safetensors(str(cached), path, sha256)
            weights = _checked(weights, str(cached))
        except WeightsError:
            cached.unlink(missing_ok=True)  # a damaged cache entry is rebuilt below
        else:
            if metadata.get("source_sha256") == sha256:
                return weights
    converted = formats.read_weights(path, keras_layout=keras_layout)
    weights = _checked(LoadedWeights(state_dict=converted.state_dict, name=path, sha256=sha256,
                                     source_format=converted.source_format,
                                     conversion_notes=converted.notes), path)
    if use_cache and keras_layout is None:
        from c3d_extract.weights.convert import write_safetensors
        try:
            write_safetensors(weights, cached)
        except OSError:
            pass  # a read-only cache only costs the conversion next time
    return weights


def resolve_weights(spec: Optional[str]) -> LoadedWeights:
    """``--weights``: ``random``, a registry name, a file path, or None for the default file."""
    if spec == "random":
        return random_weights()
    if spec is None:
        found = default_weights_path()
        if found is None:
            raise WeightsNotFoundError(
                "no C3D weights given and none found (looked for "
                f"{DEFAULT_WEIGHTS_FILE} in ./weights, {_PROJECT_WEIGHTS_DIR} and {cache_dir()}). "
                "Pass --weights FILE (safetensors, a PyTorch state dict, or a published "
                "Sports-1M file), fetch one with `c3d-weights fetch`, or use --weights random "
                "for a smoke test")
        return load_state_dict(str(found))
    if not os.path.exists(spec):
        from c3d_extract.weights import formats
        registry_path = formats.registry_path(spec)
        if registry_path is not None:
            loaded = load_state_dict(str(registry_path))
            return replace(loaded, name=spec)
        raise WeightsError(f"no weights file at {spec} (and {spec!r} is not a known "
                           "registry name; see `c3d-weights fetch --help`)")
    return load_state_dict(spec)


def load_network(weights: LoadedWeights) -> C3D:
    """A C3D in eval mode holding ``weights`` (strict: every tensor must fit)."""
    model = build_c3d(num_classes=weights.num_classes)
    result = model.load_state_dict(weights.state_dict, strict=True)
    if result.missing_keys or result.unexpected_keys:  # unreachable after check_state_dict
        raise WeightsError(f"{weights.name}: {result}")
    return model.eval()


@dataclass(frozen=True)
class LoadedModel:
    """A network ready to run and what prediction needs to know about it.

    Every architecture's loading returns one: the model offers
    ``extract(clips, layers)`` for ``layers``; ``probability_layer`` (``prob``) gives
    class probabilities, and is None for a network without a classifier.
    """

    model: nn.Module = field(repr=False)  # in eval mode
    weights: LoadedWeights = field(repr=False)  # the source: name, sha256, random or not
    architecture: str
    preprocessing: Preprocessing
    clip_len: int
    class_names: Tuple[str, ...]
    num_classes: int
    layers: Tuple[str, ...]
    probability_layer: Optional[str]

    @property
    def name(self) -> str:
        return self.weights.name


def load_model(weights: Union[LoadedWeights, str, None]) -> LoadedModel:
    """``--weights`` (or weights already read) -> the network and its description."""
    from c3d_extract.models.registry import get_architecture

    loaded = weights if isinstance(weights, LoadedWeights) else resolve_weights(weights)
    architecture = get_architecture("c3d")
    model = load_network(loaded)
    return LoadedModel(
        model=model, weights=loaded, architecture=architecture.name,
        preprocessing=loaded.preprocessing, clip_len=architecture.clip_len,
        class_names=loaded.class_names, num_classes=loaded.num_classes,
        layers=model.available_layers, probability_layer="prob" if loaded.num_classes else None)


def names_of_missing(weights: LoadedWeights) -> List[str]:
    return [] if weights.num_classes else ["fc8", "prob"]
