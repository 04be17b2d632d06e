"""The network on OpenVINO's CPU plugin, behind the same interface as ``ClipRunner``.

The torch network, cut after the requested layers, is converted once per
weights file and kept on disk (``converted_model``); later runs read it back in
about a second instead of converting again (25-45 s). Clips are gathered and
normalised in torch exactly as the torch runner does (``gather_clips``),
then run by asynchronous infer requests, so that the parent keeps receiving
decoded frames and preparing the next batch while the network runs.
"""

from __future__ import annotations

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
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from c3d_extract.batching import Batch
from c3d_extract.preprocess import CropWindow, Preprocessing
from c3d_extract.runner import Outputs, gather_clips
from c3d_extract.weights.loading import cache_dir, file_sha256

#: Overrides the folder of converted networks (default: the cache's ``openvino``).
CACHE_ENV = "C3D_EXTRACT_OPENVINO_CACHE"
#: Bumped whenever the converted graph would differ for the same key (model code changes).
GRAPH_REVISION = 2
#: OpenVINO's names for the precisions, as its INFERENCE_PRECISION_HINT.
INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
_MODEL_FILE, _KEY_FILE = "model.xml", "key.json"


def openvino_cache_dir() -> Path:
    """``$C3D_EXTRACT_OPENVINO_CACHE``, else ``openvino/`` in the project's cache folder."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else cache_dir() / "openvino"


@dataclass(frozen=True)
class ConversionKey:
    """What a converted network depends on; its digest names its cache folder."""

    weights_id: str  # the weights file's sha256 and the kernel order it was read in
    layers: Tuple[str, ...]
    precision: str
    input_shape: Tuple[int, ...]  # batch x 3 x L x H x W
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


def convert_network(model: nn.Module, input_shape: Sequence[int]) -> Any:
    """A torch module -> an ``openvino.Model`` with the fixed input shape."""
    import openvino as ov

    example = torch.zeros(tuple(input_shape))
    with torch.no_grad(), warnings.catch_warnings():
        # The trace is taken for this one fixed shape, which is all it is used for.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # OpenVINO's use of jit.trace
        converted = ov.convert_model(model, example_input=example)
    converted.reshape(list(input_shape))
    return converted


def converted_model(key: ConversionKey, convert: Callable[[], Any],
                    root: Optional[Path] = None) -> Tuple[Any, bool]:
    """The network for ``key`` from the cache, or ``convert()`` then stored there.

    Returns ``(openvino.Model, converted_now)``. A cache entry is used only if its
    key and the sha256 of its weights file match what was recorded when it was
    written; a damaged one is converted and written again. Entries are written in a
    temporary folder renamed into place, so a crash never leaves half an entry.
    """
    import openvino as ov

    root = root if root is not None else openvino_cache_dir()
    folder = root / key.digest()
    problem = _check_entry(folder, key)
    if problem is None:
        try:
            return ov.Core().read_model(str(folder / _MODEL_FILE)), False
        except RuntimeError as error:
            problem = f"OpenVINO cannot read it ({error})"
    if folder.exists():
        warnings.warn(f"the converted network in {folder} is damaged ({problem}); "
                      "converting it again", RuntimeWarning, stacklevel=2)
    model = convert()
    _store_entry(root, folder, key, model)
    return model, True


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
    import openvino as ov

    root.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=".converting-", dir=root))
    try:
        # compress_to_fp16=False: the stored weights stay the fp32 ones.
        ov.save_model(model, str(temporary / _MODEL_FILE), compress_to_fp16=False)
        checksums = {path.name: file_sha256(path) for path in sorted(temporary.iterdir())}
        (temporary / _KEY_FILE).write_text(json.dumps({"key": asdict(key),
                                                       "sha256": checksums}))
        for path in temporary.iterdir():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        if folder.exists():
            stale = Path(tempfile.mkdtemp(prefix=".stale-", dir=root))
            os.rename(folder, stale / "entry")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(temporary, folder)
        except OSError:
            if not folder.exists():  # not another process that got there first
                raise
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
                 windows: Tuple[CropWindow, ...] = ()) -> None:
        import openvino as ov

        self.layers = tuple(layers)
        self.precision = precision
        self.batch_size = batch_size  # clips per batch
        #: Crop windows cut before the network (several crops), or () for cropped frames.
        self.windows = tuple(windows) if len(windows) > 1 else ()
        self.device = torch.device("cpu")
        crop = preprocessing.crop
        # The network's fixed batch: every crop of every clip is one row.
        input_shape = (batch_size * max(1, len(self.windows)), 3, clip_len, crop, crop)
        key = ConversionKey(weights_id, self.layers, precision, input_shape,
                            int(getattr(model, "num_classes", 0)), ov.get_version())
        network = _Layers(model.eval(), self.layers)
        converted, self.converted_now = converted_model(
            key, lambda: convert_network(network, input_shape), cache_root)
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
