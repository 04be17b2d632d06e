"""Changing an existing HDF5 file in place, atomically, behind a redo log.

HDF5 has no atomic update: a process killed while HDF5 writes leaves a file whose
metadata is half old, half new. A commit therefore runs HDF5 over a file object
(h5py's ``fileobj`` driver, ``Overlay``) that

- writes bytes past the file's old end straight into the file: HDF5 puts new chunks
  there, and the old content refers to nothing past its end;
- keeps every write to the old bytes (metadata, rewritten rows) in memory, page by page.

When HDF5 is done, the file is fsynced, and the changed pages and the new length go to
``<file>.commit`` with a checksum, fsynced: that is the commit point. The pages are then
written into the file, which is fsynced, and the log removed. ``recover`` (run by the
next writer, under the output's lock) replays a complete log, idempotently, or cuts the
file back to the length the log recorded before anything was written. Readers see the
committed content through ``open_fileobj`` even before a crashed commit is recovered.

A commit costs the bytes it adds plus the pages of metadata it changes, never a copy of
the file. The log is a ``Journal`` (checksummed records; a torn one is ignored). This is
the one writer that changes a file rather than replacing it (``atomic_files``): the log,
not a rename, makes it atomic; the log's creation and removal are made durable by
fsyncing the folder (``atomic_files.fsync_parent``), the file's bytes by fsyncing the
descriptor they were written through.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np

from c3d_extract.atomic_files import fsync_parent
from c3d_extract.store.journal import Journal

PAGE = 4096


def log_path(path: str) -> str:
    return path + ".commit"


class Overlay(io.RawIOBase):
    """A file object over ``path``: bytes before ``old_size`` are read from ``pages`` where
    changed, else from the file; writes there go to ``pages``; later bytes are the file's.

    ``writable=False`` gives a reader's view of a committed but not yet applied log.
    """

    def __init__(self, path: str, old_size: int, pages: Optional[Dict[int, bytearray]] = None,
                 size: Optional[int] = None, writable: bool = True) -> None:
        super().__init__()
        self._fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        self._writable = writable
        self.old_size = old_size
        self.size = old_size if size is None else size
        self.pages: Dict[int, bytearray] = pages if pages is not None else {}
        self.tail_bytes = 0  # written past old_size
        self._pos = 0

    # -- io.RawIOBase

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return self._writable

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self.size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = max(0, min(len(view), self.size - self._pos))
        done = 0
        while done < n:
            position = self._pos + done
            if position < self.old_size:
                index, within = divmod(position, PAGE)
                length = min(n - done, PAGE - within, self.old_size - position)
                page = self.pages.get(index)
                if page is not None and within < len(page):
                    length = min(length, len(page) - within)
                    view[done:done + length] = page[within:within + length]
                else:
                    length = self._pread_into(view[done:done + length], position)
            else:
                length = self._pread_into(view[done:n], position)
            if length == 0:  # past the file's bytes: HDF5 reads zeros there
                view[done:n] = bytes(n - done)
                break
            done += length
        self._pos += n
        return n

    def _pread_into(self, view: memoryview, position: int) -> int:
        data = os.pread(self._fd, len(view), position)
        view[:len(data)] = data
        return len(data)

    def write(self, data: Any) -> int:
        if not self._writable:
            raise OSError("the file is open for reading")
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            position = self._pos + done
            if position < self.old_size:
                index, within = divmod(position, PAGE)
                length = min(len(view) - done, PAGE - within, self.old_size - position)
                self._page(index)[within:within + length] = view[done:done + length]
            else:
                length = len(view) - done
                written = os.pwrite(self._fd, view[done:], position)
                if written <= 0:
                    raise OSError(f"short write at byte {position}")
                length = written
                self.tail_bytes += written
            done += length
        self._pos += done
        self.size = max(self.size, self._pos)
        return done

    def _page(self, index: int) -> bytearray:
        page = self.pages.get(index)
        if page is None:
            start = index * PAGE
            page = bytearray(os.pread(self._fd, min(PAGE, self.old_size - start), start))
            self.pages[index] = page
        return page

    def truncate(self, size: Optional[int] = None) -> int:
        size = self._pos if size is None else size
        if self._writable:
            os.ftruncate(self._fd, max(size, self.old_size))
        self.size = size
        return size

    def flush(self) -> None:
        pass

    def fsync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()

    def changed_pages(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(offsets, bytes)`` of every page written below the old end."""
        indices = sorted(self.pages)
        offsets = np.array([i * PAGE for i in indices], np.int64)
        lengths = np.array([len(self.pages[i]) for i in indices], np.int64)
        data = np.frombuffer(b"".join(bytes(self.pages[i]) for i in indices), np.uint8)
        return np.stack([offsets, lengths], axis=1) if indices else np.zeros((0, 2), np.int64), \
            data


# ---------------------------------------------------------------- the log

def _read_log(path: str) -> Tuple[Optional[int], Optional[Tuple[int, np.ndarray, np.ndarray]]]:
    """``(old_size, redo)`` from ``path``'s commit log; ``redo`` is ``(new_size, extents,
    data)`` when the commit point was reached, else None."""
    old_size, redo = None, None
    for meta, arrays in Journal(log_path(path)).records():
        if meta.get("kind") == "intent":
            old_size = int(meta["old_size"])
        elif meta.get("kind") == "redo" and old_size is not None:
            redo = (int(meta["new_size"]), arrays["extents"], arrays["data"])
    return old_size, redo


def _pages_of(extents: np.ndarray, data: np.ndarray) -> Dict[int, bytearray]:
    pages: Dict[int, bytearray] = {}
    start = 0
    for offset, length in extents.tolist():
        pages[offset // PAGE] = bytearray(data[start:start + length].tobytes())
        start += length
    return pages


def _apply(path: str, new_size: int, extents: np.ndarray, data: np.ndarray) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        start = 0
        for offset, length in extents.tolist():
            os.pwrite(fd, data[start:start + length].tobytes(), offset)
            start += length
        os.ftruncate(fd, new_size)
        os.fsync(fd)
    finally:
        os.close(fd)


def recover(path: str) -> bool:
    """Finish or undo a commit a killed process left; call with the file's lock held.

    Returns True when a log was found (and dealt with).
    """
    log = Journal(log_path(path))
    if not log.exists():
        return False
    old_size, redo = _read_log(path)
    if redo is not None:
        _apply(path, *redo)
    elif old_size is not None and os.path.exists(path):
        fd = os.open(path, os.O_RDWR)
        try:
            os.ftruncate(fd, old_size)
            os.fsync(fd)
        finally:
            os.close(fd)
    log.remove()
    fsync_parent(path)
    return True


def open_fileobj(path: str) -> Optional[Overlay]:
    """A read-only view of ``path`` as committed, when a crashed commit's log has not been
    applied yet; None when the file can be read as it is."""
    if not os.path.exists(log_path(path)):
        return None
    old_size, redo = _read_log(path)
    if old_size is None:
        return None
    if redo is None:  # the commit never happened: the old bytes are intact
        return Overlay(path, old_size, writable=False)
    new_size, extents, data = redo
    return Overlay(path, max(old_size, new_size), _pages_of(extents, data), size=new_size,
                   writable=False)


@contextlib.contextmanager
def changed_in_place(path: str) -> Iterator[Overlay]:
    """Yield a file object over ``path`` for h5py to change; commit atomically when the
    block succeeds, leave the file as it was when it fails (see the module's docstring)."""
    old_size = os.path.getsize(path)
    log = Journal(log_path(path))
    log.remove()
    log.open_for_append()
    committed = False
    overlay: Optional[Overlay] = None
    try:
        log.append({"kind": "intent", "old_size": old_size}, {})
        log.sync()
        fsync_parent(path)
        overlay = Overlay(path, old_size)
        yield overlay
        overlay.fsync()  # the new chunks are durable before the log points at them
        extents, data = overlay.changed_pages()
        log.append({"kind": "redo", "new_size": overlay.size},
                   {"extents": extents, "data": data})
        log.sync()
        committed = True
        overlay.close()
        _apply(path, overlay.size, extents, data)
        log.remove()
        fsync_parent(path)
    except BaseException:
        if overlay is not None:
            overlay.close()
        log.close()
        if not committed:
            recover(path)  # cut the file back to its old end and drop the log
        raise
