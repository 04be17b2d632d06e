"""Real ``c3d-extract`` processes for the reliability tests, and what they leave behind.

Each run gets a tag in its environment (``C3D_TEST_RUN``) that its decode
workers inherit, so the tests can find every process a run started, through
``/proc``, without knowing their pids.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Callable, List, Optional

import pytest


def file_size(path) -> int:
    """Bytes in ``path``, 0 if it is not there: a run removes its journal when it commits,
    so checking for the file and then reading its size would race with it."""
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


def new_tag() -> str:
    return uuid.uuid4().hex


def start(inputs, out, *extra, tag: Optional[str] = None, **popen) -> subprocess.Popen:
    """``python -m c3d_extract INPUTS -o OUT --weights random --quiet EXTRA...``."""
    env = dict(os.environ, C3D_TEST_RUN=tag or new_tag())
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs
    popen["preexec_fn"] = interruptible(popen.get("preexec_fn"))
    return subprocess.Popen(
        [sys.executable, "-m", "c3d_extract", *map(str, inputs), "-o", str(out),
         "--weights", "random", "--quiet", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **popen)


def interruptible(then: Optional[Callable[[], None]] = None) -> Callable[[], None]:
    """A ``preexec_fn`` giving the child SIGINT's default action, so that Python turns
    Ctrl-C into ``KeyboardInterrupt`` there even when the suite itself runs with SIGINT
    ignored (a background job of a non-interactive shell inherits SIG_IGN)."""
    def run() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if then is not None:
            then()
    return run


def processes_tagged(tag: str) -> List[int]:
    """Pids of live (not zombie) processes whose environment has ``C3D_TEST_RUN=tag``."""
    found = []
    needle = f"C3D_TEST_RUN={tag}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if needle not in handle.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/stat") as handle:
                if handle.read().rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
                    continue
        except OSError:
            continue
        found.append(int(entry))
    return found


def assert_no_processes_left(tag: str, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while processes_tagged(tag):
        if time.monotonic() > deadline:
            pytest.fail(f"processes left behind: {processes_tagged(tag)}")
        time.sleep(0.1)


def leftovers(out) -> List[str]:
    """Files beside ``out`` whose names start with its name (journal, lock, temporaries)."""
    folder, name = os.path.split(str(out))
    return sorted(entry for entry in os.listdir(folder)
                  if entry.startswith(name) and entry != name)


def wait_for(condition, process: subprocess.Popen, what: str, limit: float = 300) -> None:
    """Poll ``condition()`` until it holds; fail if ``process`` ends first or time runs out."""
    deadline = time.monotonic() + limit
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the run ended before {what}: {process.stderr.read()}")
        if time.monotonic() > deadline:
            pytest.fail(f"waited {limit} s for {what}")
        time.sleep(0.02)
