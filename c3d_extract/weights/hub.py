"""Published Sports-1M weights by name: where they live, download, and checksum on every load;
and ``resolve_weights``, which turns a ``--weights`` value into checked weights.

Entries are data (name -> url, file name, format). None of the sources publishes a
SHA-256 (SPEC 4), so the first download records one in ``registry.json`` in the
cache directory and every later use checks the file against it (trust on first
use). Downloads go to ``<file>.part`` and are renamed only once complete and fsynced, so
a partial download is never read; ``registry.json`` is replaced the same way
(``atomic_files``). ``C3D_EXTRACT_REGISTRY_URL`` (or ``base_url=``) replaces each entry's
directory, e.g. to serve files from a local mirror.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, Optional

from c3d_extract.atomic_files import make_folders, replaced_atomically, write_atomically
from c3d_extract.errors import ChecksumError, DownloadError, WeightsError, WeightsNotFoundError
from c3d_extract.weights.loading import (DEFAULT_WEIGHTS_FILE, PROJECT_WEIGHTS_DIR, LoadedWeights,
                                         cache_dir, default_weights_path, file_sha256,
                                         load_state_dict, random_weights)

REGISTRY_URL_ENV = "C3D_EXTRACT_REGISTRY_URL"
RECORDS_FILE = "registry.json"

#: Called with (bytes received so far, total bytes or None when the server does not say).
ProgressCallback = Callable[[int, Optional[int]], None]


@dataclass(frozen=True)
class RegistryEntry:
    """One published weights file."""

    name: str
    url: str
    filename: str
    format: str
    description: str


REGISTRY: Dict[str, RegistryEntry] = {entry.name: entry for entry in (
    RegistryEntry(
        name="sports1m-caffe",
        url="http://vlg.cs.dartmouth.edu/c3d/conv3d_deepnetA_sport1m_iter_1900000",
        filename="conv3d_deepnetA_sport1m_iter_1900000", format="caffe",
        description="the original C3D-v1.0 Caffe model (Tran et al. 2015)"),
    RegistryEntry(
        name="sports1m-pytorch",
        url="http://imagelab.ing.unimore.it/files/c3d_pytorch/c3d.pickle",
        filename="c3d.pickle", format="c3d-pytorch-pickle",
        description="DavideA/c3d-pytorch state dict, converted from Caffe"),
    RegistryEntry(
        name="sports1m-mmaction2",
        url="https://download.openmmlab.com/mmaction/recognition/c3d/"
            "c3d_sports1m_pretrain_20201016-dcc47ddc.pth",
        filename="c3d_sports1m_pretrain_20201016-dcc47ddc.pth", format="mmaction2",
        description="mmaction2 C3D backbone (no fc8: fc6/fc7 features only)"),
)}


def entry(name: str) -> RegistryEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise WeightsError(f"unknown weights name {name!r}; known: "
                           f"{', '.join(sorted(REGISTRY))}") from None


def entry_url(item: RegistryEntry, base_url: Optional[str] = None) -> str:
    """The entry's URL, or ``<base_url>/<filename>`` when a mirror is configured."""
    base = base_url if base_url is not None else os.environ.get(REGISTRY_URL_ENV)
    return f"{base.rstrip('/')}/{item.filename}" if base else item.url


def local_path(item: RegistryEntry) -> Path:
    return cache_dir() / item.filename


def _records_path() -> Path:
    return cache_dir() / RECORDS_FILE


def read_records() -> Dict[str, Dict[str, object]]:
    """The recorded downloads: name -> {filename, url, sha256, size, downloaded}."""
    path = _records_path()
    if not path.is_file():
        return {}
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise WeightsError(f"cannot read the weights registry {path}: {error}") from None
    if not isinstance(records, dict):
        raise WeightsError(f"the weights registry {path} is not a JSON object")
    return records


def _write_records(records: Dict[str, Dict[str, object]]) -> None:
    """Replace ``registry.json`` atomically: a torn one would lose every recorded sha256."""
    path = _records_path()
    make_folders(str(path.parent))
    write_atomically(str(path), json.dumps(records, indent=2, sort_keys=True).encode("utf-8"))


def _record(item: RegistryEntry, path: Path, sha256: str, url: str) -> None:
    records = read_records()
    records[item.name] = {"filename": item.filename, "url": url, "sha256": sha256,
                          "size": path.stat().st_size,
                          "downloaded": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    _write_records(records)


def verify(name: str) -> Path:
    """The cached file of ``name``, checked against its recorded sha256.

    ``WeightsNotFoundError`` if it was never downloaded; ``ChecksumError`` if it changed.
    A file placed in the cache by hand is recorded on first use.
    """
    item = entry(name)
    path = local_path(item)
    if not path.is_file():
        raise WeightsNotFoundError(f"{name} is not downloaded yet: run `c3d-weights fetch {name}` "
                                   f"(or put {item.url} at {path} by hand)")
    sha256 = file_sha256(path)
    recorded = read_records().get(name, {}).get("sha256")
    if recorded is None:
        _record(item, path, sha256, url="(placed by hand)")
    elif recorded != sha256:
        raise ChecksumError(f"{path} has sha256 {sha256}, but {recorded} was recorded when {name} "
                            f"was downloaded: the file changed or is damaged. Delete it and run "
                            f"`c3d-weights fetch {name}` again")
    return path


def registry_path(name: str) -> Optional[Path]:
    """Verified path of a downloaded registry entry; None if ``name`` is not a registry name.

    A known name that is not downloaded yet raises ``WeightsNotFoundError`` saying how to
    fetch it.
    """
    if name not in REGISTRY:
        return None
    return verify(name)


def _manual_steps(item: RegistryEntry, url: str) -> str:
    return (f"To install it by hand, download {url} on a machine that can reach it, then either "
            f"copy it to {local_path(item)} or run `c3d-weights convert FILE -o "
            f"c3d_sports1m.safetensors` and pass --weights c3d_sports1m.safetensors")


def fetch(name: str, *, base_url: Optional[str] = None,
          progress: Optional[ProgressCallback] = None, timeout: float = 30.0,
          force: bool = False) -> Path:
    """Download ``name`` into the cache (unless already there and intact) and return its path.

    The sha256 is recorded on first download and checked on every later call.
    """
    item = entry(name)
    target = local_path(item)
    if target.is_file() and not force:
        return verify(name)
    url = entry_url(item, base_url)
    make_folders(str(target.parent))
    # A fixed name: what a killed download left is overwritten by the next one.
    partial = str(target.with_name(target.name + ".part"))
    with replaced_atomically(str(target), growth_bound=0, temporary=partial):
        _download(url, Path(partial), progress, timeout, _manual_steps(item, url))
    _record(item, target, file_sha256(target), url)
    return target


def _download(url: str, partial: Path, progress: Optional[ProgressCallback],
              timeout: float, steps: str) -> int:
    """Stream ``url`` into ``partial``; return the byte count. ``DownloadError`` when the
    server cannot be reached or the transfer ends short of its announced length."""
    import http.client

    request = urllib.request.Request(url, headers={"User-Agent": "c3d-extract"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - registry URLs
    except urllib.error.HTTPError as error:
        raise DownloadError(f"cannot download {url}: HTTP {error.code} {error.reason}. "
                            f"{steps}") from None
    except (urllib.error.URLError, socket.timeout, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(f"cannot download {url}: {reason} (offline or unreachable?). "
                            f"{steps}") from None
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        received = 0
        if progress is not None:
            progress(0, total)
        try:
            with open(partial, "wb") as out:
                while True:
                    block = response.read(1 << 20)
                    if not block:
                        break
                    out.write(block)
                    received += len(block)
                    if progress is not None:
                        progress(received, total)
        except (http.client.IncompleteRead, socket.timeout, OSError) as error:
            raise DownloadError(f"download of {url} broke off after {received} bytes: "
                                f"{error}. Nothing was kept; try again. {steps}") from None
    if total is not None and received != total:
        raise DownloadError(f"download of {url} broke off: {received} of {total} bytes. "
                            f"Nothing was kept; try again. {steps}")
    if received == 0:
        raise DownloadError(f"download of {url} returned no data. {steps}")
    return received


def resolve_weights(spec: Optional[str], *, kernel_order: Optional[str] = None) -> LoadedWeights:
    """``--weights``: ``random``, a registry name, a file path, or None for the default file.

    ``kernel_order`` declares the order the file's kernels hold (``--kernel-order``).
    Sources, in order: ``random`` (seeded, for smoke tests), a registry name, a file in any
    supported format, or (nothing given) the default file in ``weights/`` or the cache.
    """
    if spec == "random":
        return random_weights()
    if spec is None:
        found = default_weights_path()
        if found is None:
            raise WeightsNotFoundError(
                "no C3D weights given and none found (looked for "
                f"{DEFAULT_WEIGHTS_FILE} in ./weights, {PROJECT_WEIGHTS_DIR} and {cache_dir()}). "
                "Pass --weights FILE (safetensors, a PyTorch state dict, or a published "
                "Sports-1M file), fetch one with `c3d-weights fetch`, or use --weights random "
                "for a smoke test")
        return load_state_dict(str(found), kernel_order=kernel_order)
    if not os.path.exists(spec):
        path = registry_path(spec)
        if path is not None:
            loaded = load_state_dict(str(path), kernel_order=kernel_order)
            return replace(loaded, name=spec)
        raise WeightsError(f"no weights file at {spec} (and {spec!r} is not a known "
                           "registry name; see `c3d-weights fetch --help`)")
    return load_state_dict(spec, kernel_order=kernel_order)
