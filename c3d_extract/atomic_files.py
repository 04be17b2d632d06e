"""One way to replace a file: write beside it, fsync, rename over it, fsync the folder.

Every writer of the package goes through ``replaced_atomically`` (or ``write_atomically``
for bytes in memory), so a crash or a power cut leaves the old file or the new one, never
an empty or half-written one.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from c3d_extract.errors import StoreError


def fsync_path(path: str, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def reserve_space(path: str, nbytes: int) -> None:
    """Raise ``OSError`` (ENOSPC, EFBIG...) unless a file of ``nbytes`` can be written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.posix_fallocate(fd, 0, max(nbytes, 1))
    finally:
        os.close(fd)
        remove_quietly(path)


@contextlib.contextmanager
def replaced_atomically(path: str, growth_bound: int) -> Iterator[str]:
    """Yield a temporary file beside ``path`` to write; when the block succeeds, fsync it
    and rename it over ``path``.

    On any failure ``path`` is left as it was and the temporary file is removed; write
    errors become one-line ``StoreError``. HDF5 cannot recover from a write that fails
    for want of space (h5py then crashes the process), so the room for ``growth_bound``
    bytes is reserved first, where failing is clean.
    """
    temporary = temporary_path(path)
    try:
        reserve_space(temporary + ".space", growth_bound)
        yield temporary
        fsync_path(temporary)
        os.replace(temporary, path)
        fsync_path(os.path.dirname(os.path.abspath(path)), directory=True)
    except (OSError, RuntimeError) as error:  # h5py reports failed writes as either
        remove_quietly(temporary)
        raise StoreError(f"cannot write {path}: {one_line(error)}") from None
    except BaseException:
        remove_quietly(temporary)
        raise


def one_line(error: BaseException) -> str:
    """An OS or HDF5 error on one line, its errno text first when it has one."""
    text = " ".join(str(error).split())
    reason = getattr(error, "strerror", None)
    if reason and reason not in text:
        text = f"{reason} ({text})"
    return text[:400]


def temporary_path(path: str) -> str:
    """Where a new version of ``path`` is written before it is renamed over it."""
    return f"{path}.tmp-{os.getpid()}"


def remove_stale_temporaries(path: str) -> None:
    """Remove the temporaries of ``path`` left by killed writers; call with its lock held."""
    directory, name = os.path.split(path)
    for entry in os.listdir(directory):
        if entry.startswith(name + ".tmp-"):
            remove_quietly(os.path.join(directory, entry))


def remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
