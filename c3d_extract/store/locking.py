"""One writer per output file: an advisory ``flock`` the kernel drops when its process dies.

Because the lock dies with the process (``kill -9`` included), a crashed run
never leaves a stale lock behind; the lock file itself is harmless.
"""

from __future__ import annotations

import errno
import fcntl
import os
from typing import Optional

from c3d_extract.errors import OutputLockedError, StoreError


class OutputLock:
    """Exclusive lock on ``<output>.lock``; use as a context manager."""

    def __init__(self, output_path: str) -> None:
        self.path = output_path + ".lock"
        self._fd: Optional[int] = None

    def acquire(self) -> "OutputLock":
        while True:
            fd = self._open_and_lock()
            # The holder before us may have unlinked the file between our open and our
            # lock; a lock on an unlinked inode guards nothing, so start again.
            try:
                same_file = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same_file = False
            if same_file:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def _open_and_lock(self) -> int:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise StoreError(f"cannot create the lock file {self.path}: {error.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _read_holder(fd)
            os.close(fd)
            if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise OutputLockedError(
                    f"another c3d-extract run{holder} is writing {self.path[:-5]}; wait for it "
                    "to finish or choose another output") from None
            raise StoreError(f"cannot lock {self.path}: {error.strerror}") from None
        return fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        # Unlink while still holding the lock, so a waiting run never locks a doomed inode.
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return ""
    return f" (pid {text})" if text.isdigit() else ""
