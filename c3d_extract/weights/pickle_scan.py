"""Checks of a PyTorch file made before any of it is unpickled or inflated.

``torch.load`` (even with ``weights_only=True``) and the restricted reader in
``unpickle`` both trust a pickle's shape: a tuple nested 400,000 deep overflows the C
stack, ``bytearray(6000000000)`` allocates 6 GB, a storage may declare more elements
than the file holds. So every pickle is first walked opcode by opcode with
``pickletools.genops`` (which only reads, builds nothing) while the nesting depth of
what it would build, the size of each container and every integer are tracked, and
the file is refused when one exceeds the limits below. Zip archives are opened only
when every member is STORED or DEFLATE with an uncompressed size that fits the limits.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickletools
import zipfile
from typing import Any, Dict, Iterator, List, Type

#: Deepest nesting of containers a pickle may build (state dicts need about 6).
MAX_DEPTH = 100
#: Most items one container may receive.
MAX_ITEMS = 1 << 22
#: Largest integer (in absolute value) anywhere in a pickle, unless the file is larger.
MAX_INT = 1 << 32
#: Largest integer argument a builtin (``bytearray``, ``bytes`` ...) may be called with.
MAX_BUILTIN_INT = 1 << 26
#: Most bytes a pickle (``data.pkl``, or the head of a legacy file) may have.
MAX_PICKLE_BYTES = 256 << 20
#: Most bytes of a legacy ``torch.save`` file its pickles may take (its tensors follow them).
MAX_LEGACY_HEAD = 64 << 20
#: Most bytes all members of a zip checkpoint may inflate to; most one DEFLATE byte yields.
MAX_UNCOMPRESSED = 8 << 30
MAX_DEFLATE_RATIO = 1100
#: The number ``torch.save``'s legacy format begins with.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_BUILTIN_MODULES = ("builtins", "__builtin__", "_codecs", "copyreg", "copy_reg")


class _Item:
    """What the scan knows of one stack entry: how deep its containers nest, how many
    items it received, and its value when it is an int, a string, a global or a tuple."""

    __slots__ = ("depth", "count", "value")

    def __init__(self, depth: int = 0, value: Any = None) -> None:
        self.depth, self.count, self.value = depth, 0, value


_MARK = object()
_IN_PLACE = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}


class PickleRefused(ValueError):
    """A pickle exceeds the scan's limits (the message says which)."""


def _check_int(value: int, limit: int) -> None:
    if abs(value) > limit and value != LEGACY_MAGIC:
        raise PickleRefused(f"an integer of {value.bit_length()} bits ({value:.3g})"
                            if abs(value) < 1 << 1000 else "an integer of over 1000 bits")


def _scan_one(stream: io.BytesIO, int_limit: int, storage_limit: int) -> None:
    """Walk one pickle (up to its STOP) in ``stream``; ``PickleRefused`` or ``ValueError``."""
    stack: List[Any] = []
    memo: Dict[Any, _Item] = {}
    for opcode, arg, _position in pickletools.genops(stream):
        name = opcode.name
        if name in ("PROTO", "FRAME", "STOP"):
            continue
        if name == "MARK":
            stack.append(_MARK)
            continue
        if name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            if not stack or stack[-1] is _MARK:
                raise PickleRefused("a memo entry of nothing")
            memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
            continue
        if name in ("GET", "BINGET", "LONG_BINGET"):
            if arg not in memo:
                raise PickleRefused(f"a memo lookup of missing entry {arg}")
            stack.append(memo[arg])
            continue
        if name == "DUP":
            stack.append(stack[-1])
            continue
        if isinstance(arg, int) and not isinstance(arg, bool):
            _check_int(arg, int_limit)
        before = opcode.stack_before
        if pickletools.markobject in before:
            if _MARK not in stack:
                raise PickleRefused("a container without its mark")
            at = len(stack) - 1 - stack[::-1].index(_MARK)
            popped = stack[at + 1:]
            del stack[at:]
            leading = before.index(pickletools.markobject)
            if len(stack) < leading:
                raise PickleRefused(f"{name} on an empty stack")
            heads = stack[len(stack) - leading:] if leading else []
            del stack[len(stack) - leading:]
            popped = heads + popped
        else:
            if len(stack) < len(before):
                raise PickleRefused(f"{name} on an empty stack")
            popped = stack[len(stack) - len(before):] if before else []
            del stack[len(stack) - len(before):]
        if any(item is _MARK for item in popped):
            raise PickleRefused(f"{name} across a mark")
        if name == "POP_MARK" or name == "POP":
            continue
        result = _result(name, arg, popped, int_limit, storage_limit)
        if opcode.stack_after:
            stack.append(result)


def _result(name: str, arg: Any, popped: List[_Item], int_limit: int,
            storage_limit: int) -> _Item:
    if name in _IN_PLACE:
        container, items = popped[0], popped[1:]
        container.count += len(items) // (2 if name in ("SETITEM", "SETITEMS") else 1)
        if container.count > MAX_ITEMS:
            raise PickleRefused(f"a container of over {MAX_ITEMS} items")
        container.depth = max([container.depth] + [1 + item.depth for item in items])
        _check_depth(container.depth)
        return container
    if len(popped) > MAX_ITEMS:
        raise PickleRefused(f"a container of over {MAX_ITEMS} items")
    if name == "GLOBAL":
        return _Item(0, ("global", str(arg).replace(" ", ".")))
    if name == "STACK_GLOBAL":
        module, attr = (item.value for item in popped)
        return _Item(0, ("global", f"{module}.{attr}"))
    if name in ("REDUCE", "NEWOBJ", "NEWOBJ_EX", "OBJ", "INST"):
        _check_call(popped)
    if name == "BINPERSID":
        _check_storage(popped[0].value, storage_limit)
    item = _Item(1 + max(i.depth for i in popped) if popped else 0)
    _check_depth(item.depth)
    item.count = len(popped)
    if not popped and isinstance(arg, (int, str)):
        item.value = arg
    elif name.startswith("TUPLE") or name == "TUPLE":
        item.value = tuple(i.value for i in popped)
    return item


def _check_depth(depth: int) -> None:
    if depth > MAX_DEPTH:
        raise PickleRefused(f"containers nested over {MAX_DEPTH} deep")


def _check_call(popped: List[_Item]) -> None:
    """A builtin may not be called with a large integer (``bytearray(6e9)``)."""
    callee = popped[0].value
    if not (isinstance(callee, tuple) and callee[:1] == ("global",)):
        return
    module = callee[1].rpartition(".")[0]
    if module not in _BUILTIN_MODULES:
        return
    for item in popped[1:]:
        values = item.value if isinstance(item.value, tuple) else (item.value,)
        for value in values:
            if isinstance(value, int) and abs(value) > MAX_BUILTIN_INT:
                raise PickleRefused(f"{callee[1]} called with {value}")


def _check_storage(pid: Any, limit: int) -> None:
    """A storage may not declare more elements than the file has bytes."""
    if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
        numel = pid[4]
        if isinstance(numel, int) and not 0 <= numel <= limit:
            raise PickleRefused(f"a storage of {numel} elements in a file of {limit} bytes")


def scan_pickle(data: bytes, source: str, *, file_size: int, count: int = 1) -> None:
    """Walk ``count`` consecutive pickles of ``data`` (fewer when ``data`` ends between two)
    and raise ``WeightsError`` naming ``source`` if one exceeds the limits."""
    from c3d_extract.errors import WeightsError

    error = WeightsError
    stream = io.BytesIO(data)
    int_limit = max(MAX_INT, 8 * file_size)
    try:
        for index in range(count):
            if index and stream.tell() >= len(data):
                return
            _scan_one(stream, int_limit, storage_limit=max(file_size, 1))
    except PickleRefused as refused:
        raise error(f"refusing to load {source}: its pickle builds {refused}; nothing from it "
                    "was read") from None
    except (ValueError, IndexError, KeyError, TypeError, UnicodeDecodeError,
            OverflowError) as damaged:
        raise error(f"cannot read {source} as a PyTorch file (truncated or damaged?): "
                    f"{damaged}") from None


def starts_with_zip(path: str) -> bool:
    """Whether the file begins like a zip archive (``zipfile.is_zipfile`` also accepts any
    file with a zip directory at its end, such as a pickle with an archive appended)."""
    with open(path, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def check_zip_members(archive: zipfile.ZipFile, source: str, error: Type[Exception]) -> int:
    """The total uncompressed size of ``archive``'s members, once each is checked to be
    STORED or DEFLATE with an uncompressed size its compressed bytes can hold."""
    total = 0
    for info in archive.infolist():
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise error(f"refusing to read {source}: its member {info.filename!r:.80} is "
                        f"compressed with method {info.compress_type} (only stored and "
                        "deflate are read)")
        ratio = 1 if info.compress_type == zipfile.ZIP_STORED else MAX_DEFLATE_RATIO
        if info.file_size > max(info.compress_size, 0) * ratio + 1024:
            raise error(f"refusing to read {source}: its member {info.filename!r:.80} declares "
                        f"{info.file_size} bytes from {info.compress_size} stored")
        total += info.file_size
        if total > MAX_UNCOMPRESSED:
            raise error(f"refusing to read {source}: its members declare over "
                        f"{MAX_UNCOMPRESSED >> 30} GiB")
    return total


@contextlib.contextmanager
def open_checked_zip(path: str, error: Type[Exception]) -> Iterator[zipfile.ZipFile]:
    """A zip archive whose members were checked (``check_zip_members``)."""
    if not starts_with_zip(path):
        raise error(f"{path} is not a zip archive")
    with zipfile.ZipFile(path) as archive:
        check_zip_members(archive, path, error)
        yield archive


def check_torch_file(path: str) -> None:
    """Check ``path`` before ``torch.load`` reads it: the members of a zip checkpoint, then its
    ``data.pkl``; or the pickles a legacy ``torch.save`` file begins with."""
    from c3d_extract.errors import WeightsError

    error = WeightsError
    try:
        size = os.path.getsize(path)
        if starts_with_zip(path):
            with zipfile.ZipFile(path) as archive:
                total = check_zip_members(archive, path, error)
                pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
                if len(pickles) != 1:
                    raise error(f"{path} is a zip file but not one written by torch.save "
                                "(no single data.pkl)")
                if archive.getinfo(pickles[0]).file_size > MAX_PICKLE_BYTES:
                    raise error(f"refusing to load {path}: its data.pkl is over "
                                f"{MAX_PICKLE_BYTES >> 20} MiB")
                data = archive.read(pickles[0])
            scan_pickle(data, path, file_size=max(size, total))
            return
        with open(path, "rb") as handle:
            head = handle.read(MAX_LEGACY_HEAD)
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as damaged:
        raise error(f"cannot read {path} as a PyTorch file (truncated or damaged?): "
                    f"{damaged}") from None
    # The legacy format: magic number, protocol version, system info, the object, storage keys.
    scan_pickle(head, path, file_size=size, count=5)
