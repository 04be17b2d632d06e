"""The network on OpenVINO's CPU plugin, behind the same interface as ``ClipRunner``.

The torch network, cut after the requested layers, is converted once per
weights file and layers and kept on disk (``converted_model``), with a dynamic
batch dimension that is set to the run's batch size when it is loaded; later
runs read it back in about a second instead of converting again (25-45 s). The
cache holds at most ``$C3D_EXTRACT_OPENVINO_CACHE_MB`` (default 4096 MB): past
that, the entries used least recently are removed. Clips are gathered and
normalised in torch exactly as the torch runner does (``gather_clips``),
then run by asynchronous infer requests, so that the parent keeps receiving
decoded frames and preparing the next batch while the network runs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import threading
import warnings
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from c3d_extract.atomic_files import make_folders, move_into_place
from c3d_extract.errors import UsageError
from c3d_extract.extraction.batching import Batch
from c3d_extract.extraction.runners import Outputs
from c3d_extract.extraction.torch_runner import gather_clips
from c3d_extract.video.preprocess import CropWindow, Preprocessing
from c3d_extract.weights.loading import cache_dir, file_sha256

#: Overrides the folder of converted networks (default: the cache's ``openvino``).
CACHE_ENV = "C3D_EXTRACT_OPENVINO_CACHE"
#: The most the cache may hold, in MB (1 MB = 2**20 bytes); past it the entries used
#: least recently are removed.
CACHE_LIMIT_ENV = "C3D_EXTRACT_OPENVINO_CACHE_MB"
DEFAULT_CACHE_LIMIT_MB = 4096
#: Bumped whenever the converted graph would differ for the same key (model code changes).
#: 3: the batch dimension is dynamic (one entry serves every batch size).
GRAPH_REVISION = 3
#: OpenVINO's names for the precisions, as its INFERENCE_PRECISION_HINT.
INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
_MODEL_FILE, _KEY_FILE, _LOCK_FILE = "model.xml", "key.json", ".lock"
#: Prefixes of the folders an entry is written in, or moved to before it is removed.
_TEMPORARY_PREFIXES = (".converting-", ".stale-")


def openvino_cache_dir() -> Path:
    """``$C3D_EXTRACT_OPENVINO_CACHE``, else ``openvino/`` in the project's cache folder."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else cache_dir() / "openvino"


def openvino_cache_limit() -> int:
    """The cache's size limit in bytes: ``$C3D_EXTRACT_OPENVINO_CACHE_MB`` or 4096 MB."""
    text = os.environ.get(CACHE_LIMIT_ENV, "").strip()
    if not text:
        return DEFAULT_CACHE_LIMIT_MB << 20
    try:
        megabytes = int(text)
    except ValueError:
        megabytes = -1
    if megabytes < 0:
        raise UsageError(f"{CACHE_LIMIT_ENV}={text!r}: expected a whole number of MB "
                         f"(default {DEFAULT_CACHE_LIMIT_MB})")
    return megabytes << 20


@dataclass(frozen=True)
class ConversionKey:
    """What a converted network depends on; its digest names its cache folder.

    Neither the batch size (the stored graph's batch dimension is dynamic) nor the
    precision (a setting of the compilation, not of the graph) is part of it.
    """

    weights_id: str  # the weights file's sha256 and the kernel order it was read in
    layers: Tuple[str, ...]
    clip_shape: Tuple[int, ...]  # 3 x L x H x W: one clip
    num_classes: int
    openvino_version: str
    graph_revision: int = GRAPH_REVISION

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]


class _Layers(nn.Module):
    """The network returning the requested layers as a tuple: the graph that is converted."""

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.layers = tuple(layers)

    def forward(self, clips: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        outputs = self.model.extract(clips, self.layers)
        return tuple(outputs[layer] for layer in self.layers)


def convert_network(model: nn.Module, clip_shape: Sequence[int]) -> Any:
    """A torch module -> an ``openvino.Model`` taking a batch of any size of clips of
    ``clip_shape`` (3 x L x H x W); ``with_batch_size`` fixes the batch before compiling."""
    import openvino as ov

    example = torch.zeros((2, *clip_shape))  # 2, not 1: no size-1 dimension to fold away
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # OpenVINO's use of jit.trace
        return ov.convert_model(model, example_input=example, input=[-1, *clip_shape])


def with_batch_size(model: Any, batch_size: int) -> Any:
    """``model`` (dynamic batch) reshaped to ``batch_size`` clips, in place; returned."""
    shape = model.inputs[0].get_partial_shape()
    model.reshape([batch_size] + [dim.get_length() for dim in list(shape)[1:]])
    return model


def converted_model(key: ConversionKey, convert: Callable[[], Any],
                    root: Optional[Path] = None,
                    on_convert: Optional[Callable[[], None]] = None) -> Tuple[Any, bool]:
    """The network for ``key`` from the cache, or ``convert()`` then stored there.

    Returns ``(openvino.Model, converted_now)``. A cache entry is used only if its
    key and the sha256 of its weights file match what was recorded when it was
    written; a damaged one is converted and written again. ``on_convert()`` is
    called just before a conversion (it takes 25-45 s for C3D), so that a caller can
    say why it waits. Entries are written in a temporary folder renamed into place,
    so a crash never leaves half an entry; a lock on the cache folder keeps
    concurrent runs from reading an entry while it is replaced or removed. After
    writing, the entries used least recently are removed while the cache holds more
    than ``openvino_cache_limit()`` (never the one just written).
    """
    import openvino as ov

    limit = openvino_cache_limit()  # a bad setting is refused before converting
    root = root if root is not None else openvino_cache_dir()
    folder = root / key.digest()
    with _cache_lock(root, exclusive=False):
        problem = _check_entry(folder, key)
        if problem is None:
            try:
                model = ov.Core().read_model(str(folder / _MODEL_FILE))
            except RuntimeError as error:
                problem = f"OpenVINO cannot read it ({error})"
            else:
                _mark_used(folder)
                return model, False
    if folder.exists():
        warnings.warn(f"the converted network in {folder} is damaged ({problem}); "
                      "converting it again", RuntimeWarning, stacklevel=2)
    if on_convert is not None:
        on_convert()
    model = convert()
    with _cache_lock(root, exclusive=True):
        _remove_temporaries(root)  # under the exclusive lock: left by dead processes
        _store_entry(root, folder, key, model)
        _evict(root, limit, keep=folder)
    return model, True


@contextlib.contextmanager
def _cache_lock(root: Path, exclusive: bool) -> Iterator[None]:
    """An advisory ``flock`` on the cache folder's lock file: shared to read an entry,
    exclusive to write or remove one. A folder that cannot hold a lock file (read
    only) is used without one."""
    try:
        make_folders(str(root))
        fd = os.open(root / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        if error.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            yield
            return
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


def _mark_used(folder: Path) -> None:
    """Record a use of the entry (the mtime of its key file) for the LRU order."""
    try:
        os.utime(folder / _KEY_FILE)
    except OSError:
        pass  # a read-only cache is still read; only its LRU order goes stale


@dataclass(frozen=True)
class CacheEntry:
    """One converted network in the cache, as ``c3d-weights cache`` lists it."""

    path: Path
    size: int          # bytes of its files
    last_used: float   # seconds since the epoch
    key: Dict[str, Any]  # as recorded ({} if unreadable)


def cache_entries(root: Optional[Path] = None) -> List[CacheEntry]:
    """The cache's entries, most recently used first (temporary folders left out)."""
    root = root if root is not None else openvino_cache_dir()
    entries = []
    try:
        folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except FileNotFoundError:
        return []
    for folder in folders:
        size, last_used = 0, 0.0
        try:
            for path in folder.iterdir():
                status = path.stat()
                size += status.st_size
                if path.name == _KEY_FILE:
                    last_used = status.st_mtime
            last_used = last_used or folder.stat().st_mtime
        except FileNotFoundError:
            continue  # removed meanwhile
        try:
            recorded = json.loads((folder / _KEY_FILE).read_text()).get("key", {})
        except (OSError, ValueError, AttributeError):
            recorded = {}
        entries.append(CacheEntry(folder, size, last_used,
                                  recorded if isinstance(recorded, dict) else {}))
    return sorted(entries, key=lambda entry: (-entry.last_used, entry.path.name))


def entries_to_evict(entries: Sequence[CacheEntry], limit: int,
                     keep: Optional[Path] = None) -> List[CacheEntry]:
    """The entries to remove, least recently used first, for the rest to total at most
    ``limit`` bytes; ``keep`` (the entry just written) is never among them."""
    total = sum(entry.size for entry in entries)
    evicted = []
    for entry in sorted(entries, key=lambda entry: (entry.last_used, entry.path.name)):
        if total <= limit:
            break
        if keep is not None and entry.path == keep:
            continue
        evicted.append(entry)
        total -= entry.size
    return evicted


def _evict(root: Path, limit: int, keep: Optional[Path] = None) -> None:
    for entry in entries_to_evict(cache_entries(root), limit, keep):
        _remove_folder(root, entry.path)


def clear_cache(root: Optional[Path] = None) -> Tuple[int, int]:
    """Remove every entry of the cache; returns ``(entries, bytes)`` removed. Runs that
    are reading an entry finish first (the lock); later ones convert again."""
    root = root if root is not None else openvino_cache_dir()
    if not root.is_dir():
        return 0, 0
    with _cache_lock(root, exclusive=True):
        entries = cache_entries(root)
        for entry in entries:
            _remove_folder(root, entry.path)
        _remove_temporaries(root)
    return len(entries), sum(entry.size for entry in entries)


def _remove_folder(root: Path, folder: Path) -> None:
    """Rename, then delete: an entry is either whole or absent, even if this is killed."""
    stale = Path(tempfile.mkdtemp(prefix=".stale-", dir=root))
    try:
        os.rename(folder, stale / "entry")
    except FileNotFoundError:
        pass
    shutil.rmtree(stale, ignore_errors=True)


def _remove_temporaries(root: Path) -> None:
    for path in root.iterdir():
        if path.is_dir() and path.name.startswith(_TEMPORARY_PREFIXES):
            shutil.rmtree(path, ignore_errors=True)


def _check_entry(folder: Path, key: ConversionKey) -> Optional[str]:
    """``None`` if the entry is complete and intact, else what is wrong with it."""
    try:
        recorded = json.loads((folder / _KEY_FILE).read_text())
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError) as error:
        return f"unreadable key: {error}"
    if not isinstance(recorded, dict) or recorded.get("key") != json.loads(
            json.dumps(asdict(key))):
        return "its key differs"
    files = recorded.get("sha256")
    if not isinstance(files, dict) or not files:
        return "no checksums"
    for name, digest in files.items():
        try:
            if file_sha256(folder / name) != digest:
                return f"{name} has changed"
        except OSError as error:
            return f"{name}: {error}"
    return None


def _store_entry(root: Path, folder: Path, key: ConversionKey, model: Any) -> None:
    """Write the entry (the caller holds the exclusive lock) unless a concurrent run has
    written it meanwhile: in a temporary folder, its files and itself fsynced, renamed into
    place (``move_into_place``), so that a crash leaves no entry rather than half of one."""
    import openvino as ov

    if _check_entry(folder, key) is None:
        return
    temporary = Path(tempfile.mkdtemp(prefix=".converting-", dir=root))
    try:
        # compress_to_fp16=False: the stored weights stay the fp32 ones.
        ov.save_model(model, str(temporary / _MODEL_FILE), compress_to_fp16=False)
        checksums = {path.name: file_sha256(path) for path in sorted(temporary.iterdir())}
        (temporary / _KEY_FILE).write_text(json.dumps({"key": asdict(key),
                                                       "sha256": checksums}))
        if folder.exists():
            _remove_folder(root, folder)  # damaged (``_check_entry``): a new one replaces it
        move_into_place(str(temporary), str(folder))
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


@dataclass
class _Entry:
    batch: Batch
    outputs: Optional[Outputs] = None
    error: Optional[BaseException] = None
    done: bool = False


class OpenVinoRunner:
    """The network compiled for OpenVINO's CPU plugin; batches run asynchronously.

    ``submit`` returns as soon as an infer request has taken the batch (it waits
    only while every request is busy); ``collect`` returns finished batches in the
    order they were submitted.
    """

    def __init__(self, model: nn.Module, weights_id: str, preprocessing: Preprocessing,
                 clip_len: int, layers: Sequence[str], precision: str, batch_size: int,
                 cache_root: Optional[Path] = None,
                 on_convert: Optional[Callable[[], None]] = None,
                 windows: Tuple[CropWindow, ...] = ()) -> None:
        import openvino as ov

        self.layers = tuple(layers)
        self.precision = precision
        self.batch_size = batch_size  # clips per batch
        #: Crop windows cut before the network (several crops), or () for cropped frames.
        self.windows = tuple(windows) if len(windows) > 1 else ()
        self.device = torch.device("cpu")
        crop = preprocessing.crop
        clip_shape = (3, clip_len, crop, crop)
        key = ConversionKey(weights_id, self.layers, clip_shape,
                            int(getattr(model, "num_classes", 0)), ov.get_version())
        network = _Layers(model.eval(), self.layers)
        converted, self.converted_now = converted_model(
            key, lambda: convert_network(network, clip_shape), cache_root, on_convert)
        # The batch the network is compiled for: every crop of every clip is one row.
        with_batch_size(converted, batch_size * max(1, len(self.windows)))
        self.compiled = ov.Core().compile_model(converted, "CPU", compile_config(precision))
        jobs = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        # Two requests at least: one computes while the next batch is handed over.
        self.requests = ov.AsyncInferQueue(self.compiled, max(2, jobs))
        self.requests.set_callback(self._finished)
        preprocessing.cropped_mean(clip_len)  # a mean volume must cover the clips
        self.preprocessing = preprocessing
        self._entries: Deque[_Entry] = deque()
        self._changed = threading.Condition()

    def submit(self, batch: Batch) -> None:
        clips = gather_clips(batch, self.preprocessing, self.device, self.batch_size,
                             windows=self.windows).numpy()
        entry = _Entry(batch)
        with self._changed:
            self._entries.append(entry)
        self.requests.start_async({0: clips}, entry)

    def _finished(self, request: Any, entry: _Entry) -> None:
        try:
            n, crops = len(entry.batch.clips), len(self.windows)
            entry.outputs = {}
            for i, layer in enumerate(self.layers):
                rows = np.array(request.get_output_tensor(i).data[:n * max(1, crops)],
                                np.float32)
                # Clips x crops x dims with several crops, as the torch runner gives.
                entry.outputs[layer] = rows.reshape(n, crops, -1) if crops > 1 else rows
        except Exception as error:  # noqa: BLE001 - handed to the caller in collect()
            entry.error = error
        with self._changed:
            entry.done = True
            self._changed.notify_all()

    def collect(self, wait: bool = False) -> List[Tuple[Batch, Outputs]]:
        """Finished batches in submission order; with ``wait``, at least one if any is
        pending."""
        done: List[Tuple[Batch, Outputs]] = []
        with self._changed:
            if wait and self._entries:
                self._changed.wait_for(lambda: self._entries[0].done)
            while self._entries and self._entries[0].done:
                entry = self._entries.popleft()
                if entry.error is not None:
                    raise RuntimeError(f"OpenVINO inference failed: {entry.error}") \
                        from entry.error
                done.append((entry.batch, entry.outputs or {}))
        return done

    @property
    def pending(self) -> int:
        with self._changed:
            return len(self._entries)

    def discard(self) -> None:
        """Wait for the requests still running and forget their batches."""
        self.requests.wait_all()
        with self._changed:
            self._entries.clear()

    def __call__(self, batch: Batch) -> Outputs:
        """One batch, synchronously (after any batches already submitted)."""
        self.submit(batch)
        results: List[Tuple[Batch, Outputs]] = []
        while self.pending:
            results += self.collect(wait=True)
        return results[-1][1]


def compile_config(precision: str) -> Dict[str, str]:
    """CPU plugin settings: the precision asked for (OpenVINO would pick bf16 by itself
    on a CPU that has it) and throughput-oriented streams."""
    return {"INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[precision],
            "PERFORMANCE_HINT": "THROUGHPUT"}
