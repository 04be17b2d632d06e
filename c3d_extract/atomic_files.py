"""One way to replace a file: write beside it, fsync, rename over it, fsync the folder.

Every writer of the package goes through ``replaced_atomically`` (or ``write_atomically``
for bytes in memory), so a crash or a power cut leaves the old file or the new one, never
an empty or half-written one. A rename is durable only once the folder holding it is
fsynced, and the new file's bytes only once the file is: ``move_into_place`` does both, in
that order, for a file or for a folder of files (the OpenVINO cache's entries). Appends
(the store's journal, lock files) and the store's commit in place (``store.inplace``,
behind its own redo log, which fsyncs its folder with ``fsync_parent``) are not
replacements and do not go through here.
"""

from __future__ import annotations

import contextlib
import errno
import os
from typing import Iterator, Optional

from c3d_extract.errors import StoreError


def fsync_path(path: str, directory: bool = False) -> None:
    """Flush ``path``'s bytes (a file) or its entries (a folder, ``directory=True``) to the
    disk: what was written or renamed before survives a power cut only after this."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_parent(path: str) -> None:
    """fsync the folder holding ``path``, so that its creation, rename or removal lasts."""
    fsync_path(os.path.dirname(os.path.abspath(path)), directory=True)


def make_folders(directory: str) -> None:
    """Create ``directory`` and its missing parents, each fsynced into its own parent, so that
    a file renamed into a new folder does not vanish with the folder after a power cut."""
    missing = []
    current = os.path.abspath(directory)
    while not os.path.isdir(current):
        missing.append(current)
        current = os.path.dirname(current)
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by a concurrent writer
            os.mkdir(folder)
        if not os.path.isdir(folder):  # a file of that name, as os.makedirs reports it
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), folder)
        fsync_parent(folder)


def reserve_space(path: str, nbytes: int) -> None:
    """Raise ``OSError`` (ENOSPC, EFBIG...) unless a file of ``nbytes`` can be written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.posix_fallocate(fd, 0, max(nbytes, 1))
    finally:
        os.close(fd)
        remove_quietly(path)


def move_into_place(temporary: str, path: str) -> None:
    """Rename the finished ``temporary`` (a file, or a folder of files) to ``path``.

    Its bytes are fsynced before the rename, else a power cut could leave the new name
    on an empty file; the folder holding ``path`` is fsynced after it, else the rename
    itself could be lost. A folder can replace only a missing or empty ``path``.
    """
    if os.path.isdir(temporary):
        for folder, _, names in os.walk(temporary):
            for name in names:
                fsync_path(os.path.join(folder, name))
            fsync_path(folder, directory=True)
    else:
        fsync_path(temporary)
    os.replace(temporary, path)
    fsync_parent(path)


@contextlib.contextmanager
def replaced_atomically(path: str, growth_bound: int,
                        temporary: Optional[str] = None) -> Iterator[str]:
    """Yield a temporary file beside ``path`` to write; when the block succeeds, fsync it
    and rename it over ``path`` (``move_into_place``).

    On any failure ``path`` is left as it was and the temporary file is removed; write
    errors become one-line ``StoreError``. HDF5 cannot recover from a write that fails
    for want of space (h5py then crashes the process), so the room for ``growth_bound``
    bytes is reserved first, where failing is clean. ``temporary`` names the temporary
    file when a writer needs a fixed name (default ``temporary_path(path)``).
    """
    temporary = temporary or temporary_path(path)
    try:
        reserve_space(temporary + ".space", growth_bound)
        yield temporary
        move_into_place(temporary, path)
    except (OSError, RuntimeError) as error:  # h5py reports failed writes as either
        remove_quietly(temporary)
        raise StoreError(f"cannot write {path}: {_write_error(error, temporary)}") from None
    except BaseException:
        remove_quietly(temporary)
        raise


def _write_error(error: BaseException, temporary: str) -> str:
    """Why a write failed, naming no temporary file: the user knows only ``path``."""
    if isinstance(error, OSError) and error.strerror \
            and str(error.filename or "").startswith(temporary):
        return " ".join(error.strerror.split())
    return one_line(error)


def write_atomically(path: str, data: bytes) -> None:
    """Replace ``path`` by ``data`` (``replaced_atomically``): for contents held in memory."""
    with replaced_atomically(path, growth_bound=len(data)) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(data)


def one_line(error: BaseException) -> str:
    """An OS or HDF5 error on one line, its errno text first when it has one."""
    text = " ".join(str(error).split())
    reason = " ".join(str(getattr(error, "strerror", None) or "").split())
    if reason and reason not in text:
        text = f"{reason} ({text})"
    return text[:400]


def temporary_path(path: str) -> str:
    """Where a new version of ``path`` is written before it is renamed over it."""
    return f"{path}.tmp-{os.getpid()}"


def remove_stale_temporaries(path: str) -> None:
    """Remove the temporaries of ``path`` left by killed writers; call with its lock held."""
    directory, name = os.path.split(path)
    directory = directory or "."
    for entry in os.listdir(directory):
        if entry.startswith(name + ".tmp-"):
            remove_quietly(os.path.join(directory, entry))


def remove_quietly(path: str) -> None:
    """Remove the file ``path`` if it is there: cleaning up must not hide the first error."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
