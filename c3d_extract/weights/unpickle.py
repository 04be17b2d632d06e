"""Read the tensors of a ``torch.save`` zip checkpoint without running any code from it.

For checkpoints that ``torch.load(weights_only=True)`` refuses because they hold
other objects (an mmengine Runner's ``message_hub`` with its ``HistoryBuffer``s,
optimizer state objects). The archive's ``data.pkl`` is read by a
``pickle.Unpickler`` whose ``find_class`` decides what each global becomes:

- torch's tensor rebuild functions and storage types, torch dtypes,
  ``collections.OrderedDict``, numpy's array reconstruction and a few plain
  builtin containers are used as they are;
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
import pickle
import struct
import sys
import zipfile
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from c3d_extract.errors import WeightsError

#: Modules whose every global is refused, classes included.
_REFUSED_MODULES = frozenset({
    "os", "posix", "nt", "subprocess", "sys", "builtins", "__builtin__", "shutil", "importlib",
    "runpy", "socket", "pty", "ctypes", "pickle", "_pickle", "marshal", "code", "codeop",
    "types", "signal", "multiprocessing", "webbrowser", "pdb", "io", "_io", "tempfile",
})


def _numpy_global(*names: str) -> Optional[Any]:
    """The first of ``module.attr`` names that this numpy has (numpy 1 and 2 differ)."""
    for qualified in names:
        module_name, _, attr = qualified.rpartition(".")
        module = sys.modules.get(module_name)
        if module is not None and attr in vars(module):
            return vars(module)[attr]
    return None


def _allowed() -> Dict[Tuple[str, str], Any]:
    import codecs

    import torch._utils as tu

    reconstruct = _numpy_global("numpy._core.multiarray._reconstruct",
                                "numpy.core.multiarray._reconstruct")
    scalar = _numpy_global("numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar")
    frombuffer = _numpy_global("numpy._core.numeric._frombuffer", "numpy.core.numeric._frombuffer")
    allowed: Dict[Tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor"): tu._rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): tu._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): tu._rebuild_parameter,
        ("torch", "Size"): torch.Size,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # bytes in pickle protocol 2
    }
    if hasattr(tu, "_rebuild_tensor_v3"):
        allowed[("torch._utils", "_rebuild_tensor_v3")] = tu._rebuild_tensor_v3
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        if reconstruct is not None:
            allowed[(module, "_reconstruct")] = reconstruct
        if scalar is not None:
            allowed[(module, "scalar")] = scalar
    if frombuffer is not None:
        for module in ("numpy.core.numeric", "numpy._core.numeric"):
            allowed[(module, "_frombuffer")] = frombuffer
    for name in ("set", "frozenset", "bytearray", "complex", "slice", "range"):
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


class _TensorsOnlyUnpickler(pickle.Unpickler):
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
        raw = self._archive.read(entry)
        itemsize = torch.empty((), dtype=dtype).element_size()
        if not isinstance(numel, int) or len(raw) != numel * itemsize:
            raise WeightsError(f"{self._source}: tensor data {entry} has {len(raw)} bytes, "
                               f"expected {numel} x {itemsize}")
        buffer = torch.empty(len(raw), dtype=torch.uint8)
        buffer.numpy()[:] = np.frombuffer(raw, dtype=np.uint8)
        return torch.storage.TypedStorage(wrap_storage=buffer.untyped_storage(), dtype=dtype,
                                          _internal=True)


#: What a damaged pickle can raise while it is read (besides our own WeightsError).
_DAMAGED = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, KeyError,
            IndexError, RuntimeError, OverflowError, UnicodeDecodeError, struct.error,
            RecursionError, zipfile.BadZipFile, OSError)


def load_tensors_only(path: str) -> Any:
    """The object a ``torch.save`` zip file holds, with untrusted classes as inert placeholders.

    ``WeightsError`` when the pickle would call anything but the allowed constructors, or the
    archive is damaged.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise WeightsError(f"{path} is a zip file but not one written by torch.save "
                                   "(no single data.pkl)")
            prefix = pickles[0][: -len("/data.pkl")]
            order_entry = f"{prefix}/byteorder"
            if order_entry in archive.namelist():
                order = archive.read(order_entry).decode("ascii", "replace").strip()
                if order != sys.byteorder:
                    raise WeightsError(f"{path} was written on a {order}-endian machine")
            unpickler = _TensorsOnlyUnpickler(archive.read(pickles[0]), archive, prefix, path)
            try:
                return unpickler.load()
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
