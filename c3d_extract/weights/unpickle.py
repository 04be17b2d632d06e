"""Read the tensors of a ``torch.save`` zip checkpoint without running any code from it.

For checkpoints that ``torch.load(weights_only=True)`` refuses because they hold
other objects (an mmengine Runner's ``message_hub`` with its ``HistoryBuffer``s,
optimizer state objects). The archive is checked first and its ``data.pkl``
pre-scanned (``pickle_scan``: nesting depth, container sizes, integers), then read
by Python's own ``pickle._Unpickler`` whose ``find_class`` decides what each global
becomes:

- tensors are rebuilt by this module's own functions, only as views lying inside
  their storage (no stride-0 or overlapping view of a few bytes posing as gigabytes);
- numpy arrays and scalars are rebuilt by this module from a numeric dtype string,
  a shape and bytes: numpy's C ``__setstate__`` (which trusts flags stored in the
  file, so that bytes can become object pointers) never runs, object and structured
  dtypes are refused, and BUILD is allowed only on this module's own stand-ins;
- ``collections.OrderedDict``, torch dtypes and storage types and a few plain
  builtin containers are used as they are (``bytearray`` with a bounded size);
- any other class becomes an inert placeholder: it takes any arguments and
  ignores its state, so nothing of the real class ever runs;
- any other callable (``os.system``, ``builtins.eval``, anything from
  ``subprocess`` ...) refuses the whole file, naming it, if the pickle calls it.

Nothing is imported to find a global: only modules already loaded are looked at,
and a name from a module that is not loaded is taken for a class when it is
capitalised (Python's naming convention) and refused otherwise.
"""

from __future__ import annotations

import _compat_pickle
import builtins
import collections
import io
import os
import pickle
import struct
import sys
import zipfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from c3d_extract.errors import WeightsError
from c3d_extract.weights import pickle_scan

#: Modules whose every global is refused, classes included.
_REFUSED_MODULES = frozenset({
    "os", "posix", "nt", "subprocess", "sys", "builtins", "__builtin__", "shutil", "importlib",
    "runpy", "socket", "pty", "ctypes", "pickle", "_pickle", "marshal", "code", "codeop",
    "types", "signal", "multiprocessing", "webbrowser", "pdb", "io", "_io", "tempfile",
})


#: The numeric dtypes an array or scalar in a checkpoint may have (numpy's short names).
_NUMERIC_DTYPES = frozenset({"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4",
                             "f8", "c8", "c16"})
_NUMERIC_ALIASES = {"bool": "b1", "int8": "i1", "int16": "i2", "int32": "i4", "int64": "i8",
                    "uint8": "u1", "uint16": "u2", "uint32": "u4", "uint64": "u8",
                    "float16": "f2", "float32": "f4", "float64": "f8", "complex64": "c8",
                    "complex128": "c16"}
#: The most elements a numpy array rebuilt from a checkpoint may have (larger ones are refused).
MAX_ARRAY_ELEMENTS = 1 << 28


class _Refusal(Exception):
    """Raised inside the unpickler by our own constructors; becomes a ``WeightsError``."""


class _NumpyDtype:
    """What ``numpy.dtype(...)`` in a checkpoint becomes: a numeric dtype named by a string,
    built by us. numpy's own ``dtype.__setstate__`` never runs (it trusts the flags stored
    in the pickle); the state is read only for the byte order."""

    def __init__(self, name: Any = None, align: Any = False, copy: Any = True) -> None:
        if not isinstance(name, str):
            raise _Refusal(f"a numpy dtype named by {type(name).__name__}, not a string")
        text = _NUMERIC_ALIASES.get(name, name)
        order, code = (text[0], text[1:]) if text[:1] in "<>|=" else ("=", text)
        if code not in _NUMERIC_DTYPES:
            raise _Refusal(f"numpy dtype {name!r:.40} (only numeric dtypes are read)")
        self.code, self.order = code, order

    def __setstate__(self, state: Any) -> None:
        if (not isinstance(state, tuple) or len(state) < 8 or state[1] not in ("<", ">", "|", "=")
                or any(item is not None for item in state[2:5])):
            raise _Refusal("a numpy dtype with a structured or unexpected state")
        self.order = state[1]

    def numpy(self) -> np.dtype:
        return np.dtype(("" if self.order in "|=" else self.order) + self.code)


def _numeric_dtype(value: Any) -> np.dtype:
    if not isinstance(value, _NumpyDtype):
        raise _Refusal(f"a numpy array whose dtype is a {type(value).__name__}")
    return value.numpy()


def _array_from_bytes(data: Any, dtype: np.dtype, shape: Any, fortran: bool) -> np.ndarray:
    """A copy of ``data`` as an array of ``dtype`` and ``shape``, every size checked first."""
    if isinstance(data, pickle.PickleBuffer):
        data = data.raw().tobytes()
    if isinstance(data, str):  # protocol 0-2 pickles store the bytes as latin-1 text
        data = data.encode("latin-1")
    if not isinstance(data, (bytes, bytearray)):
        raise _Refusal(f"a numpy array whose data is a {type(data).__name__}, not bytes "
                       "(object arrays are not read)")
    if (not isinstance(shape, tuple) or len(shape) > 32
            or not all(isinstance(d, int) and 0 <= d <= MAX_ARRAY_ELEMENTS for d in shape)):
        raise _Refusal(f"a numpy array of shape {shape!r:.60}")
    count = 1
    for dim in shape:
        count *= dim
    if count > MAX_ARRAY_ELEMENTS or count * dtype.itemsize != len(data):
        raise _Refusal(f"a numpy array of shape {shape} and dtype {dtype} stored in "
                       f"{len(data)} bytes")
    flat = np.frombuffer(bytes(data), dtype=dtype).copy()
    return flat.reshape(shape, order="F" if fortran else "C")


class _NumpyArray:
    """What ``numpy.core.multiarray._reconstruct(ndarray, ...)`` becomes: an array rebuilt
    by us from its state's numeric dtype, shape and bytes (numpy's C ``__setstate__`` never
    runs). ``array`` holds it once the state is set."""

    def __init__(self, *args: Any) -> None:
        self.array: Optional[np.ndarray] = None

    def __setstate__(self, state: Any) -> None:
        if self.array is not None or not isinstance(state, tuple) or len(state) != 5:
            raise _Refusal("a numpy array with an unexpected state")
        _version, shape, dtype, fortran, data = state
        self.array = _array_from_bytes(data, _numeric_dtype(dtype), shape, bool(fortran))


def _reconstruct(cls: Any, *args: Any) -> _NumpyArray:
    if cls is not _NumpyArrayClass:
        raise _Refusal(f"numpy _reconstruct of {getattr(cls, '__name__', type(cls).__name__)}")
    return _NumpyArray()


class _NumpyArrayClass:
    """Stands for ``numpy.ndarray``: only ever the first argument of ``_reconstruct``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise _Refusal("numpy.ndarray called directly")


def _frombuffer(data: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    return _array_from_bytes(data, _numeric_dtype(dtype), shape, order == "F")


def _scalar(dtype: Any, data: Any = None) -> Any:
    numeric = _numeric_dtype(dtype)
    return _array_from_bytes(data, numeric, (), False)[()]


def _encode(text: Any, encoding: Any = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refusal("_codecs.encode other than of text to latin-1")
    return text.encode("latin-1")


#: The most bytes ``bytearray(n)`` in a pickle may ask for.
MAX_BYTEARRAY = pickle_scan.MAX_BUILTIN_INT  # what the pre-scan lets through


def _bytearray(*args: Any) -> bytearray:
    if args and isinstance(args[0], int) and not isinstance(args[0], bool) \
            and not 0 <= args[0] <= MAX_BYTEARRAY:
        raise _Refusal(f"bytearray({args[0]})")
    if len(args) > 1 and args[1] not in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
        raise _Refusal("bytearray with an unusual encoding")
    return bytearray(*args)


def _int_tuple(value: Any, what: str) -> Tuple[int, ...]:
    if (not isinstance(value, (tuple, list, torch.Size)) or len(value) > 16
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)):
        raise _Refusal(f"a tensor {what} of {value!r:.60}")
    return tuple(value)


def checked_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> torch.Tensor:
    """``torch._utils._rebuild_tensor`` once the view is checked to lie inside its storage and
    not to repeat elements (stride 0 or overlapping strides make a small storage look huge)."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise _Refusal(f"a tensor over a {type(storage).__name__}, not a storage")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise _Refusal(f"a tensor storage offset of {offset!r:.40}")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise _Refusal(f"a tensor of size {size} with strides {stride}")
    check_view(size, stride, offset, storage._size())
    return torch._utils._rebuild_tensor(storage, offset, size, stride)


def check_view(size: Sequence[int], stride: Sequence[int], offset: int, available: int) -> None:
    """Raise ``_Refusal`` unless a view of ``size``/``stride`` at ``offset`` reads distinct
    elements inside a storage of ``available`` elements."""
    numel = 1
    for dim in size:
        numel *= dim
    if numel == 0:
        return
    last = offset + sum((d - 1) * s for d, s in zip(size, stride))
    if last >= available:
        raise _Refusal(f"a tensor of size {tuple(size)} reaching past its storage of "
                       f"{available} elements")
    if numel > available - offset:
        raise _Refusal(f"a tensor of size {tuple(size)} ({numel} elements) over a storage of "
                       f"{available} elements (strides {tuple(stride)} repeat elements)")


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any,
                       requires_grad: Any = False, backward_hooks: Any = None,
                       metadata: Any = None) -> torch.Tensor:
    if metadata is not None and not isinstance(metadata, dict):
        raise _Refusal(f"tensor metadata that is a {type(metadata).__name__}, not a dict")
    return checked_tensor(storage, offset, size, stride)


def _rebuild_tensor_v3(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                       backward_hooks: Any, dtype: Any, metadata: Any = None) -> torch.Tensor:
    if not isinstance(dtype, torch.dtype) or storage.dtype != dtype:
        raise _Refusal(f"a tensor of dtype {dtype!r:.40} over a storage of another dtype")
    return _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, backward_hooks,
                              metadata)


def _rebuild_parameter(data: Any, requires_grad: Any = False,
                       backward_hooks: Any = None) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise _Refusal(f"a parameter holding a {type(data).__name__}")
    return data


def _allowed() -> Dict[Tuple[str, str], Any]:
    allowed: Dict[Tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor"): checked_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch", "Size"): torch.Size,
        ("numpy", "ndarray"): _NumpyArrayClass,
        ("numpy", "dtype"): _NumpyDtype,
        ("_codecs", "encode"): _encode,  # bytes in pickle protocol 2
        ("builtins", "bytearray"): _bytearray,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = _reconstruct
        allowed[(module, "scalar")] = _scalar
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(module, "_frombuffer")] = _frombuffer
    for name in ("set", "frozenset", "complex", "slice", "range"):
        allowed[("builtins", name)] = getattr(builtins, name)
    return allowed


class _Placeholder:
    """Stands for an instance of a class the reader does not trust; ignores everything."""

    source = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Placeholder":
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<placeholder for {self.source}>"


class _Refused:
    """A callable global the file may mention but never call."""

    def __init__(self, qualified: str, source: str) -> None:
        self.qualified, self.source = qualified, source

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise WeightsError(f"refusing to load {self.source}: its pickle calls {self.qualified}, "
                           "which is not a tensor or container constructor (the file may carry "
                           "code meant to run when loaded); nothing from it was run")


#: The storage types ``torch.save`` names, and their element types.
_STORAGE_DTYPES: Dict[str, torch.dtype] = {
    "UntypedStorage": torch.uint8, "ByteStorage": torch.uint8, "CharStorage": torch.int8,
    "ShortStorage": torch.int16, "IntStorage": torch.int32, "LongStorage": torch.int64,
    "HalfStorage": torch.float16, "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64, "BFloat16Storage": torch.bfloat16,
    "BoolStorage": torch.bool, "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
}


class _StorageType:
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _module_attribute(module: str, name: str) -> Tuple[bool, Any]:
    """``(found, value)`` of ``module.name`` among loaded modules, reading ``__dict__``s only."""
    value: Any = sys.modules.get(module)
    if value is None:
        return False, None
    for part in name.split("."):
        namespace = getattr(value, "__dict__", None)
        if namespace is None or part not in namespace:
            return False, None
        value = namespace[part]
    return True, value


def _build(unpickler: "_TensorsOnlyUnpickler") -> None:
    """BUILD only on our own stand-ins: never on a numpy dtype or array, a tensor or anything
    else whose ``__setstate__`` is C code trusting the file."""
    state = unpickler.stack.pop()
    inst = unpickler.stack[-1]
    if type(inst) is collections.OrderedDict:  # a state dict's ``_metadata`` attribute
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise _Refusal("an OrderedDict with an unexpected state")
        vars(inst).update(state)
        return
    if not isinstance(inst, (_Placeholder, _NumpyDtype, _NumpyArray)):
        raise _Refusal(f"setting the state of a {type(inst).__name__}")
    inst.__setstate__(state)


class _TensorsOnlyUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """Python's own unpickler (not the C one), so that BUILD can be restricted."""

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]
    dispatch[pickle.BUILD[0]] = _build

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, source: str) -> None:
        super().__init__(io.BytesIO(data))
        self._archive, self._prefix, self._source = archive, prefix, source
        self._allowed = _allowed()
        self._placeholders: Dict[str, type] = {}
        self._storages: Dict[str, Any] = {}
        self.refused: List[str] = []

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names that pickle protocols 0-2 use (__builtin__, copy_reg ...).
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        qualified = f"{module}.{name}"
        if module == "torch":
            if name.endswith("Storage"):
                return self._storage_type(name)
            found = vars(torch).get(name)
            if isinstance(found, torch.dtype):
                return found
        if module.split(".")[0] in _REFUSED_MODULES:
            return self._refuse(qualified)
        found, value = _module_attribute(module, name)
        is_class = isinstance(value, type) if found else name[:1].isupper()
        return self._placeholder(qualified) if is_class else self._refuse(qualified)

    def _refuse(self, qualified: str) -> _Refused:
        self.refused.append(qualified)
        return _Refused(qualified, self._source)

    def _placeholder(self, qualified: str) -> type:
        if qualified not in self._placeholders:
            self._placeholders[qualified] = type(qualified.rpartition(".")[2] or "Placeholder",
                                                 (_Placeholder,), {"source": qualified})
        return self._placeholders[qualified]

    def _storage_type(self, name: str) -> _StorageType:
        if name not in _STORAGE_DTYPES:
            raise WeightsError(f"{self._source}: unknown storage type torch.{name}")
        return _StorageType(_STORAGE_DTYPES[name])

    def persistent_load(self, saved_id: Any) -> Any:
        if (not isinstance(saved_id, tuple) or len(saved_id) != 5 or saved_id[0] != "storage"
                or not isinstance(saved_id[1], _StorageType) or not isinstance(saved_id[2], str)):
            raise WeightsError(f"{self._source}: unexpected persistent reference {saved_id!r:.80}")
        _, storage_type, key, _location, numel = saved_id
        if key not in self._storages:
            self._storages[key] = self._read_storage(key, storage_type.dtype, numel)
        return self._storages[key]

    def _read_storage(self, key: str, dtype: torch.dtype, numel: Any) -> Any:
        entry = f"{self._prefix}/data/{key}"
        try:
            info = self._archive.getinfo(entry)
        except KeyError:
            raise WeightsError(f"{self._source}: the tensor data {entry} is missing "
                               "(truncated or damaged?)") from None
        if info.compress_type != zipfile.ZIP_STORED:
            raise WeightsError(f"{self._source}: tensor data {entry} is compressed; torch.save "
                               "never writes that")
        itemsize = torch.empty((), dtype=dtype).element_size()
        if not isinstance(numel, int) or info.file_size != numel * itemsize:
            raise WeightsError(f"{self._source}: tensor data {entry} has {info.file_size} "
                               f"bytes, expected {numel!r:.20} x {itemsize}")
        raw = self._archive.read(entry)
        if len(raw) != numel * itemsize:
            raise WeightsError(f"{self._source}: tensor data {entry} has {len(raw)} bytes, "
                               f"expected {numel} x {itemsize}")
        buffer = torch.empty(len(raw), dtype=torch.uint8)
        buffer.numpy()[:] = np.frombuffer(raw, dtype=np.uint8)
        return torch.storage.TypedStorage(wrap_storage=buffer.untyped_storage(), dtype=dtype,
                                          _internal=True)


#: What a damaged pickle can raise while it is read (besides our own WeightsError).
_DAMAGED = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, KeyError,
            IndexError, RuntimeError, OverflowError, UnicodeDecodeError, struct.error,
            RecursionError, MemoryError, zipfile.BadZipFile, OSError)


def _resolved(value: Any, depth: int = 0) -> Any:
    """``value`` with each rebuilt numpy array in place of its stand-in (containers only)."""
    if depth > pickle_scan.MAX_DEPTH:
        raise _Refusal("containers nested too deep")
    if isinstance(value, _NumpyArray):
        return value.array
    if isinstance(value, dict):
        for key in list(value):
            value[key] = _resolved(value[key], depth + 1)
    elif isinstance(value, list):
        value[:] = [_resolved(item, depth + 1) for item in value]
    elif isinstance(value, tuple) and not isinstance(value, torch.Size):
        return tuple(_resolved(item, depth + 1) for item in value)
    return value


def load_tensors_only(path: str) -> Any:
    """The object a ``torch.save`` zip file holds, with untrusted classes as inert placeholders.

    ``WeightsError`` when the pickle would call anything but the allowed constructors, or the
    archive is damaged. The archive's members and the pickle are checked first
    (``pickle_scan``); numpy arrays are rebuilt by this module from a numeric dtype, a shape
    and bytes, and tensors only as views that lie inside their storage.
    """
    try:
        with pickle_scan.open_checked_zip(path, WeightsError) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise WeightsError(f"{path} is a zip file but not one written by torch.save "
                                   "(no single data.pkl)")
            prefix = pickles[0][: -len("/data.pkl")]
            order_entry = f"{prefix}/byteorder"
            if order_entry in archive.namelist():
                order = archive.read(order_entry)[:16].decode("ascii", "replace").strip()
                if order != sys.byteorder:
                    raise WeightsError(f"{path} was written on a {order}-endian machine")
            data = archive.read(pickles[0])
            pickle_scan.scan_pickle(data, path, file_size=os.path.getsize(path))
            unpickler = _TensorsOnlyUnpickler(data, archive, prefix, path)
            try:
                return _resolved(unpickler.load())
            except _Refusal as refusal:
                raise WeightsError(f"refusing to load {path}: its pickle builds {refusal}; "
                                   "nothing from it was run") from None
            except _DAMAGED as error:
                if unpickler.refused:
                    raise WeightsError(f"refusing to load {path}: its pickle uses "
                                       f"{', '.join(sorted(set(unpickler.refused)))}, which is "
                                       "not a tensor or container constructor; nothing from it "
                                       "was run") from None
                raise WeightsError(f"cannot read {path} as a PyTorch file (truncated or "
                                   f"damaged?): {type(error).__name__}: {error}") from None
    except (zipfile.BadZipFile, OSError) as error:
        raise WeightsError(f"cannot read {path} as a PyTorch file (truncated or damaged?): "
                           f"{error}") from None
