"""Load a weights file of any supported format as a checked C3D state dict.

Safetensors files are read as they are; every other format is read (``formats``),
put in Caffe order (``convert``) and cached as safetensors. Every file is read
without executing code and checked tensor by tensor against the architecture
before a model is built, so a bad file never half-loads a network. Converting
and describing files (``c3d-weights convert`` / ``info``) live here too.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from c3d_extract.errors import InputNotFoundError, StoreError, UsageError, WeightsError
from c3d_extract.models.architecture import parameter_count
from c3d_extract.models.c3d import C3D, SPORTS1M_CLASSES, build_c3d, state_dict_shapes
from c3d_extract.models.state_dicts import key_mismatch, shape_mismatch
from c3d_extract.video.preprocess import SPORTS1M, Preprocessing
from c3d_extract.weights import formats
from c3d_extract.weights.convert import (LoadedWeights, convert_stored, read_class_names,
                                         with_class_names, write_safetensors)
from c3d_extract.weights.formats import StoredWeights, looks_like_safetensors
from c3d_extract.weights.kernel_orders import CAFFE, check_kernel_order

DEFAULT_WEIGHTS_FILE = "c3d_sports1m.safetensors"
RANDOM_SEED = 0
PROJECT_WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"


def cache_dir() -> Path:
    """``$C3D_EXTRACT_CACHE``, else ``~/.cache/c3d_extract``."""
    configured = os.environ.get("C3D_EXTRACT_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "c3d_extract"


def default_weights_path() -> Optional[Path]:
    for directory in (Path.cwd() / "weights", PROJECT_WEIGHTS_DIR, cache_dir()):
        candidate = directory / DEFAULT_WEIGHTS_FILE
        if candidate.is_file():
            return candidate
    return None


def file_sha256(path: os.PathLike, chunk: int = 1 << 20, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def file_md5(path: os.PathLike) -> str:
    return file_sha256(path, algorithm="md5")


#: Derived copies seen in the wild whose conversion cannot be verified, by md5 (SPEC 4.7).
DERIVED_FILES: Dict[str, str] = {
    "b7a93b2f9156ccbebe3ca24b41fc5402": (
        "this is adamcasson/c3d's sports1M_weights_tf.h5, most likely converted from the "
        "Theano file by a script that reverses all three kernel axes and reorders fc6's rows "
        "the other way; it is read like any Keras 2 file, which is NOT verified to be right. "
        "Check it with `c3d-weights compare FILE conv3d_deepnetA_sport1m_iter_1900000`"),
}


def random_weights(seed: int = RANDOM_SEED, num_classes: int = SPORTS1M_CLASSES) -> LoadedWeights:
    model = build_c3d(num_classes=num_classes, seed=seed)
    return LoadedWeights(state_dict=model.state_dict(), name="random",
                         sha256=f"random-seed-{seed}", source_format="random")


def check_state_dict(state_dict: Dict[str, torch.Tensor], source: str) -> None:
    """Raise ``WeightsError`` naming the first layer whose keys or shapes do not fit C3D."""
    num_classes = int(state_dict["fc8.weight"].shape[0]) if "fc8.weight" in state_dict else 0
    expected = state_dict_shapes(num_classes)
    keys = key_mismatch(expected, state_dict)
    if keys:
        raise WeightsError(f"{source} does not hold a C3D state dict: {keys}")
    wrong = shape_mismatch(expected, state_dict)
    if wrong:
        key, actual, shape = wrong
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
        kernel_order = check_kernel_order(metadata.get("source_kernel_order", CAFFE))
    except (ValueError, TypeError, AttributeError, UsageError) as error:
        raise WeightsError(f"{path} has unreadable metadata: {error}") from None
    except RecursionError:
        raise WeightsError(f"{path} has unreadable metadata: JSON nested too deep") from None
    if not all(isinstance(n, str) for n in class_names + notes):
        raise WeightsError(f"{path} has unreadable metadata: class names and notes must be "
                           "lists of strings")
    return LoadedWeights(
        state_dict=state_dict, name=name, sha256=sha256,
        source_format=metadata.get("source_format", "safetensors"),
        preprocessing=preprocessing, class_names=class_names, conversion_notes=notes,
        kernel_order=str(kernel_order),
        kernel_order_assumed=metadata.get("kernel_order_assumed") == "true"), metadata


def check_tensor_dtypes(state_dict: Dict[str, torch.Tensor], source: str) -> None:
    """Refuse integer, boolean or complex tensors: no trained network's weights."""
    for key, tensor in state_dict.items():
        if not tensor.is_floating_point():
            raise WeightsError(f"{source}: tensor {key} has dtype {str(tensor.dtype)[6:]}; "
                               "weights are floating point (quantised weights are not read)")


def check_tensor_values(state_dict: Dict[str, torch.Tensor], source: str) -> None:
    """Refuse weights that no trained network holds: integer, boolean or complex tensors,
    and NaN or infinite values (they make every feature NaN or zero without an error)."""
    check_tensor_dtypes(state_dict, source)
    for key, tensor in state_dict.items():
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise WeightsError(f"{source}: tensor {key} holds {bad} NaN or infinite values")


def _checked(weights: LoadedWeights, source: str, values: bool = True) -> LoadedWeights:
    check_state_dict(weights.state_dict, source)  # shapes first: nothing large is copied before
    # Dtypes before the float32 cast hides them; values once, after it: NaN and infinities
    # survive the cast, and float64 values beyond float32's range become infinities.
    if values:
        check_tensor_dtypes(weights.state_dict, source)
    state_dict = {k: v.detach().to(torch.float32).contiguous()
                  for k, v in weights.state_dict.items()}
    if values:
        check_tensor_values(state_dict, source)
        constant = [k for k, v in state_dict.items() if k.endswith(".weight") and v.numel() > 1
                    and bool((v.reshape(-1) == v.reshape(-1)[0]).all())]
        if constant:
            more = " ..." if len(constant) > 4 else ""
            warnings.warn(f"{source}: {', '.join(constant[:4])}{more} hold one value in every "
                          "element: never trained or never written "
                          "(no published C3D file has such layers); features will be "
                          "meaningless", stacklevel=2)
    return replace(weights, state_dict=state_dict)


def load_state_dict(path: str, *, kernel_order: Optional[str] = None,
                    use_cache: bool = True, check_values: bool = True) -> LoadedWeights:
    """Read a weights file in any supported format, converted to the project's naming and
    Caffe order.

    ``kernel_order`` declares the order the file's kernels hold (``kernel_orders``); by
    default its format decides. A foreign format (Caffe, Keras, PyTorch pickles) is converted
    once and, with ``use_cache`` and no declared order, kept as safetensors under
    ``cache_dir()/converted/<sha256>`` so later runs skip the conversion; ``sha256`` stays
    that of the source file. Weights holding NaN or infinite values are refused unless
    ``check_values`` is false (``describe`` shows them).
    """
    check_kernel_order(kernel_order)
    if not os.path.isfile(path):
        raise WeightsError(f"no weights file at {path}")
    sha256 = file_sha256(path)
    if _looks_like_safetensors(path) and kernel_order is None:
        return _checked(_from_safetensors(path, path, sha256)[0], path, check_values)
    cached = converted_cache_path(sha256)
    use_cache = use_cache and kernel_order is None
    if use_cache and cached.is_file():
        try:
            weights, metadata = _from_safetensors(str(cached), path, sha256)
            weights = _checked(weights, str(cached))
        except WeightsError:
            cached.unlink(missing_ok=True)  # a damaged cache entry is rebuilt below
        else:
            # Entries written before kernel orders were recorded are converted again.
            if metadata.get("source_sha256") == sha256 and "source_kernel_order" in metadata:
                return weights
    if _looks_like_safetensors(path):  # a declared order applies to any file
        own, _ = _from_safetensors(path, path, sha256)
        stored = StoredWeights({k: v.to(torch.float32).numpy() for k, v in own.state_dict.items()},
                               own.source_format, notes=own.conversion_notes)
        converted = convert_stored(stored, name=path, sha256=sha256, kernel_order=kernel_order)
        return _checked(replace(converted, preprocessing=own.preprocessing,
                                class_names=own.class_names), path, check_values)
    stored = formats.read_stored(path)
    derived = DERIVED_FILES.get(file_md5(path)) if stored.source_format.startswith("keras") \
        else None
    if derived:
        stored = replace(stored, notes=stored.notes + (derived,))
    weights = _checked(convert_stored(stored, name=path, sha256=sha256,
                                      kernel_order=kernel_order), path, check_values)
    if use_cache and check_values:
        try:
            write_safetensors(weights, cached)
        except (OSError, StoreError):  # StoreError: the write failed (``atomic_files``)
            pass  # a read-only or full cache only costs the conversion next time
    return weights


def load_network(weights: LoadedWeights) -> C3D:
    """A C3D in eval mode holding ``weights`` (strict: every tensor must fit)."""
    model = build_c3d(num_classes=weights.num_classes)
    result = model.load_state_dict(weights.state_dict, strict=True)
    if result.missing_keys or result.unexpected_keys:  # unreachable after check_state_dict
        raise WeightsError(f"{weights.name}: {result}")
    return model.eval()


def convert_file(source: str, out: str, *, labels: Optional[str] = None,
                 kernel_order: Optional[str] = None) -> LoadedWeights:
    """Convert any supported weights file to a checked safetensors file at ``out``."""
    check_kernel_order(kernel_order)
    if not os.path.isfile(source):
        raise InputNotFoundError(f"no weights file at {source}")
    if os.path.abspath(out) == os.path.abspath(source):
        raise UsageError("the output would overwrite the source file")
    weights = load_state_dict(source, kernel_order=kernel_order, use_cache=False)
    if labels is not None:
        weights = with_class_names(weights, read_class_names(labels), labels)
    write_safetensors(weights, out)
    return weights


@dataclass(frozen=True)
class TensorStats:
    """What ``info`` shows of one tensor's values."""

    name: str
    dtype: str
    nonfinite: int      # NaN and infinite values
    constant: bool      # every value is the same (a never-trained or never-written tensor)


def tensor_stats(name: str, tensor: torch.Tensor) -> TensorStats:
    finite = torch.isfinite(tensor) if tensor.is_floating_point() else None
    flat = tensor.reshape(-1)
    constant = flat.numel() > 1 and bool((flat == flat[0]).all())
    return TensorStats(name, str(tensor.dtype).replace("torch.", ""),
                       0 if finite is None else int((~finite).sum()), constant)


@dataclass(frozen=True)
class WeightsInfo:
    """What ``c3d-weights info`` shows about a weights file."""

    path: str
    source_format: str
    sha256: str
    layers: Tuple[Tuple[str, Tuple[int, ...]], ...]  # tensor name, shape
    tensor_stats: Tuple["TensorStats", ...]
    parameter_count: int
    num_classes: int
    available_layers: Tuple[str, ...]
    class_names: Tuple[str, ...]
    conversion_notes: Tuple[str, ...]
    kernel_order: str
    kernel_order_assumed: bool


def describe(path: str, *, kernel_order: Optional[str] = None) -> WeightsInfo:
    """Read and check a weights file of any supported format (nothing is written)."""
    check_kernel_order(kernel_order)
    if not os.path.isfile(path):
        raise WeightsError(f"no weights file at {path}")
    weights = load_state_dict(path, kernel_order=kernel_order, use_cache=False,
                              check_values=False)
    with torch.device("meta"):  # the architecture only, without allocating parameters
        model = C3D(weights.num_classes)
    return WeightsInfo(path=path, source_format=weights.source_format, sha256=weights.sha256,
                       layers=tuple((k, tuple(v.shape)) for k, v in weights.state_dict.items()),
                       tensor_stats=tuple(tensor_stats(k, v)
                                          for k, v in weights.state_dict.items()),
                       parameter_count=parameter_count(model),
                       num_classes=weights.num_classes,
                       available_layers=model.available_layers,
                       class_names=weights.class_names,
                       conversion_notes=weights.conversion_notes,
                       kernel_order=weights.kernel_order,
                       kernel_order_assumed=weights.kernel_order_assumed)
