"""Extraction: videos in, per-video records out, and the resumable run over a folder.

``iter_records`` is the streaming core (decode workers -> clip batches ->
network -> per-video pooling); ``extract`` wraps it with input discovery, the
weights, and the crash-safe store.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from c3d_extract.backends import BACKENDS
from c3d_extract.batching import Batch, ClipBatcher
from c3d_extract.clips import SHORT_POLICIES
from c3d_extract.decoders import check_decoder
from c3d_extract.errors import UsageError
from c3d_extract.models.c3d import FEATURE_LAYERS, C3D
from c3d_extract.pooling import ClipAccumulator
from c3d_extract.preprocess import Preprocessing, load_mean, preprocessing_with_mean
from c3d_extract.records import RunParameters, VideoRecord
from c3d_extract.sharding import Shard, select, shard_path
from c3d_extract.sources import VideoSource, discover
from c3d_extract.weights.loading import LoadedWeights, load_network, resolve_weights
from c3d_extract.workers import DecodePool, Failed, Finished, Frames, Started, default_workers

#: Seconds between fsyncs of the journal: what a power loss can cost at most.
SYNC_INTERVAL = 2.0


@dataclass(frozen=True)
class ExtractOptions:
    """How clips are cut and computed. ``0`` means: choose for the device."""

    layers: Tuple[str, ...] = ("fc6",)
    clip_len: int = 16
    stride: int = 8
    short_policy: str = "pad"
    batch_size: int = 0
    device: str = "auto"
    precision: str = "auto"
    backend: str = "auto"
    allow_emulated_precision: bool = False
    decoder: str = "decord"
    workers: int = 0
    timeout: float = 600.0
    per_clip: bool = False

    def validate(self) -> None:
        unknown = [layer for layer in self.layers if layer not in FEATURE_LAYERS]
        if not self.layers or unknown:
            raise UsageError(f"unknown layer(s) {', '.join(unknown) or '(none)'}; "
                             f"choose from {', '.join(FEATURE_LAYERS)}")
        if len(set(self.layers)) != len(self.layers):
            raise UsageError("a layer is named twice")
        for name in ("clip_len", "stride"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name.replace('_', '-')} must be at least 1")
        if self.batch_size < 0 or self.workers < 0:
            raise UsageError("batch size and workers must be positive (0 = automatic)")
        if self.short_policy not in SHORT_POLICIES:
            raise UsageError(f"short policy must be one of {', '.join(SHORT_POLICIES)}")
        if not self.timeout > 0:
            raise UsageError("timeout must be a positive number of seconds")
        check_decoder(self.decoder)
        if self.backend not in BACKENDS:
            raise UsageError(f"backend must be one of {', '.join(BACKENDS)}")


def default_batch_size(device_type: str) -> int:
    """Clips per forward pass when the user does not choose: a GPU needs many to be busy."""
    return 32 if device_type == "cuda" else 8


@dataclass
class _VideoState:
    source: VideoSource
    accumulator: ClipAccumulator
    fps: float = 0.0
    n_frames: int = 0
    width: int = 0
    height: int = 0
    status: str = ""
    finished: bool = False


@dataclass(frozen=True)
class PreparedNetwork:
    """A network on its device, ready for ``iter_records``."""

    runner: "object"  # ClipRunner or OpenVinoRunner (imported lazily with torch)
    model: C3D
    weights: LoadedWeights
    preprocessing: Preprocessing
    precision: str
    device_type: str
    backend: str = "torch"


def prepare_network(weights: Union[LoadedWeights, str, None], options: ExtractOptions,
                    mean: Optional[str] = None) -> PreparedNetwork:
    """Resolve weights, device and precision; build the network and its runner."""
    options.validate()  # before torch is imported: a usage error comes at once
    from c3d_extract.backends import make_runner, resolve_backend
    from c3d_extract.runner import resolve_device, resolve_precision

    device = resolve_device(options.device)
    precision = resolve_precision(options.precision, device, options.allow_emulated_precision)
    backend = resolve_backend(options.backend, device)
    loaded = weights if isinstance(weights, LoadedWeights) else resolve_weights(weights)
    if loaded.is_random:
        warnings.warn("using RANDOM weights: the features are meaningless except for testing",
                      UserWarning, stacklevel=2)
    preprocessing = loaded.preprocessing
    if mean is not None:
        preprocessing = preprocessing_with_mean(preprocessing, load_mean(mean))
    try:
        preprocessing.cropped_mean(options.clip_len)
    except ValueError as error:
        raise UsageError(str(error)) from None
    model = load_network(loaded)
    missing = [layer for layer in options.layers if layer not in model.available_layers]
    if missing:
        raise UsageError(f"{loaded.name} has no fc8 (no classifier), so {', '.join(missing)} "
                         "cannot be extracted; choose from "
                         f"{', '.join(model.available_layers)}")
    batch_size = options.batch_size or default_batch_size(device.type)
    runner = make_runner(backend, model, loaded.sha256, preprocessing, options.clip_len,
                         options.layers, device, precision, batch_size)
    return PreparedNetwork(runner, model, loaded, preprocessing, precision, device.type, backend)


def iter_records(videos: Sequence[Union[VideoSource, Tuple[str, str]]],
                 weights: Union[LoadedWeights, str, None, PreparedNetwork] = None,
                 options: ExtractOptions = ExtractOptions(),
                 on_batch: Optional[Callable[[int], None]] = None) -> Iterator[VideoRecord]:
    """Decode, cut, compute and pool each video; yield one record per video as it finishes.

    Records come in completion order, not input order. A video that cannot be
    decoded yields a record with ``status == "error"``; nothing is raised for it.
    """
    prepared = weights if isinstance(weights, PreparedNetwork) \
        else prepare_network(weights, options)
    sources = [v if isinstance(v, VideoSource) else VideoSource(*v) for v in videos]
    if not sources:
        return
    batch_size = options.batch_size or default_batch_size(prepared.device_type)
    workers = options.workers or default_workers(prepared.device_type)
    batcher = ClipBatcher(options.clip_len, options.stride, options.short_policy, batch_size)
    queue: Deque[Tuple[int, VideoSource]] = deque(enumerate(sources))
    states: Dict[int, _VideoState] = {}
    runner = prepared.runner
    # Clips of each video inside the runner: a video is complete when none are left.
    in_flight: Counter = Counter()
    # Read frames only while the queued clips are few: decoders then wait, memory stays bounded.
    max_pending = 2 * batch_size

    def finished(slot: int) -> Optional[VideoRecord]:
        state = states.get(slot)
        if (state is None or not state.finished or batcher.pending_for(slot)
                or in_flight[slot]):
            return None
        del states[slot]
        in_flight.pop(slot, None)
        return _finished_record(state)

    def take(done: List[Tuple[Batch, Dict]]) -> Iterator[VideoRecord]:
        for batch, outputs in done:
            for row, clip in enumerate(batch.clips):
                in_flight[clip.slot] -= 1
                state = states.get(clip.slot)  # None: the video failed meanwhile
                if state is not None:
                    state.accumulator.add(
                        clip.start, {layer: values[row] for layer, values in outputs.items()})
            if on_batch is not None:
                on_batch(len(batch.clips))
            for slot in sorted({clip.slot for clip in batch.clips}):
                record = finished(slot)
                if record is not None:
                    yield record

    try:
        with DecodePool(min(workers, len(sources)), options.decoder, prepared.preprocessing,
                        options.timeout) as pool:
            while queue or pool.busy or batcher.pending_clips or runner.pending:
                while queue and pool.idle:
                    slot, source = queue.popleft()
                    states[slot] = _VideoState(source, ClipAccumulator(options.layers,
                                                                       options.per_clip))
                    pool.submit(slot, source.path)
                if pool.busy and batcher.pending_clips < max_pending:
                    wait = 0.5 if batcher.pending_clips < batch_size else 0.0
                    for event in pool.poll(wait):
                        record = _apply_event(event, states, batcher)
                        if record is None and isinstance(event, Finished):
                            record = finished(event.slot)
                        if record is not None:
                            yield record
                for batch in batcher.batches(flush=not pool.busy and not queue):
                    runner.submit(batch)
                    in_flight.update(clip.slot for clip in batch.clips)
                    yield from take(runner.collect())
                # Nothing left to decode or batch: wait for the runner's last results.
                idle = not (queue or pool.busy or batcher.pending_clips)
                yield from take(runner.collect(wait=idle))
    finally:
        runner.discard()


def _apply_event(event, states: Dict[int, _VideoState],
                 batcher: ClipBatcher) -> Optional[VideoRecord]:
    """Update the state of the event's video; return its record if it is complete."""
    state = states[event.slot]
    if isinstance(event, Started):
        state.fps = event.fps
    elif isinstance(event, Frames):
        batcher.add_frames(event.slot, event.frames)
        state.n_frames += len(event.frames)
    elif isinstance(event, Finished):
        state.n_frames, state.width, state.height = event.n_frames, event.width, event.height
        state.status = batcher.finish_video(event.slot, event.n_frames)
        state.finished = True  # complete once the runner has its last clips (the caller)
    elif isinstance(event, Failed):
        batcher.drop_video(event.slot)
        del states[event.slot]
        return VideoRecord(id=state.source.id, status="error", error=event.message,
                           n_frames=state.n_frames, fps=state.fps)
    return None


def _finished_record(state: _VideoState) -> VideoRecord:
    record = VideoRecord(id=state.source.id, status=state.status, n_frames=state.n_frames,
                         n_clips=state.accumulator.count, fps=state.fps, width=state.width,
                         height=state.height)
    if state.accumulator.count:
        record.features, record.zero_descriptor = state.accumulator.descriptors()
        if state.accumulator.keep_clips:
            record.clip_starts, record.clip_features = state.accumulator.clip_rows()
    return record


# ---------------------------------------------------------------- the resumable run

@dataclass
class ExtractSummary:
    """What a run did, and the state of every input video in the output file."""

    output: str
    n_inputs: int  # of this run's share (its shard) of the videos
    n_skipped_existing: int
    status_counts: Counter = field(default_factory=Counter)  # over all inputs
    failures: List[Tuple[str, str]] = field(default_factory=list)  # (id, message), this run
    n_processed: int = 0
    n_clips: int = 0
    n_frames: int = 0
    seconds: float = 0.0
    zero_descriptors: int = 0
    weights: str = ""
    random_weights: bool = False
    shard: Optional[Shard] = None

    @property
    def n_failed(self) -> int:
        return self.status_counts.get("error", 0)

    @property
    def complete(self) -> bool:
        return sum(self.status_counts.values()) == self.n_inputs

    def line(self) -> str:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(self.status_counts.items()))
        rate = f", {self.n_clips / self.seconds:.1f} clips/s" if self.seconds > 0 else ""
        return (f"{self.n_inputs} videos ({counts or 'none'}); this run processed "
                f"{self.n_processed} in {self.seconds:.1f} s{rate}; skipped "
                f"{self.n_skipped_existing} already in {self.output}")


class Progress:
    """Callbacks the CLI implements to draw a progress bar; the default does nothing."""

    def start(self, total: int, already_done: int) -> None:
        """Called once with the number of input videos and of those already in the file."""

    def video_done(self, record: VideoRecord) -> None:
        """Called as each video finishes, in completion order."""

    def clips_done(self, n_clips: int) -> None:
        """Called after each batch of clips has been through the network."""


def extract(inputs: Union[str, Sequence[str]], output: str, *,
            weights: Union[LoadedWeights, str, None, PreparedNetwork] = None,
            options: ExtractOptions = ExtractOptions(),
            list_file: Optional[str] = None, mean: Optional[str] = None,
            overwrite: bool = False, retry_errors: bool = False,
            progress: Optional[Progress] = None, shard: Optional[Shard] = None) -> ExtractSummary:
    """Extract every video under ``inputs`` into the HDF5 file ``output``, resumably.

    Videos already in ``output`` (or in the journal of an interrupted run) are
    skipped; failed ones are retried with ``retry_errors``. On Ctrl-C the work
    done so far is committed before ``KeyboardInterrupt`` propagates. With a
    ``shard``, only that shard's videos are extracted, into the shard's own file
    next to ``output`` (``sharding.shard_path``).
    """
    videos = discover([inputs] if isinstance(inputs, str) else list(inputs), list_file)
    return extract_videos(videos, output, weights=weights, options=options, mean=mean,
                          overwrite=overwrite, retry_errors=retry_errors, progress=progress,
                          shard=shard)


def extract_videos(videos: Sequence[VideoSource], output: str, *,
                   weights: Union[LoadedWeights, str, None, PreparedNetwork] = None,
                   options: ExtractOptions = ExtractOptions(), mean: Optional[str] = None,
                   overwrite: bool = False, retry_errors: bool = False,
                   progress: Optional[Progress] = None,
                   shard: Optional[Shard] = None) -> ExtractSummary:
    """``extract`` for videos already discovered; ``weights`` may be a network already
    prepared (``prepare_network``), which then serves several calls."""
    from c3d_extract.store import FeatureStore, check_output_location, feature_dims

    progress = progress or Progress()
    if shard is not None:
        videos = select(videos, shard)
        output = shard_path(output, shard)
    options.validate()
    check_output_location(output)  # before the network is built: a typo fails at once
    if isinstance(weights, PreparedNetwork):
        if mean is not None:
            raise UsageError("a prepared network already has its mean; give the mean to "
                             "prepare_network")
        prepared = weights
    else:
        prepared = prepare_network(weights, options, mean)
    params = RunParameters(
        layers=tuple(options.layers), clip_len=options.clip_len, stride=options.stride,
        short_policy=options.short_policy, weights=prepared.weights.name,
        weights_sha256=prepared.weights.sha256, preprocessing=prepared.preprocessing.to_json(),
        precision=prepared.precision, per_clip=options.per_clip)
    dims = feature_dims(options.layers, prepared.model.feature_dim)
    summary = ExtractSummary(output=output, n_inputs=len(videos), n_skipped_existing=0,
                             weights=prepared.weights.name,
                             random_weights=prepared.weights.is_random, shard=shard)
    started = time.monotonic()
    with FeatureStore(output, params, dims, overwrite=overwrite, shard=shard) as store:
        todo = [v for v in videos if v.id not in store.done
                or (retry_errors and store.done[v.id] == "error")]
        summary.n_skipped_existing = len(videos) - len(todo)
        progress.start(len(videos), summary.n_skipped_existing)
        last_sync = time.monotonic()
        records = iter_records(todo, prepared, options, on_batch=progress.clips_done)
        # closing(): whatever stops the loop, the decode workers are stopped right away.
        with contextlib.closing(records):
            try:
                for record in records:
                    store.add(record)
                    _count(summary, record)
                    progress.video_done(record)
                    if time.monotonic() - last_sync > SYNC_INTERVAL:
                        store.sync()
                        last_sync = time.monotonic()
            except KeyboardInterrupt:
                records.close()
                _finish(store, summary, videos, started)
                raise
        _finish(store, summary, videos, started)
    return summary


def _count(summary: ExtractSummary, record: VideoRecord) -> None:
    summary.n_processed += 1
    summary.n_clips += record.n_clips
    summary.n_frames += record.n_frames
    summary.zero_descriptors += int(record.zero_descriptor)
    if record.status == "error":
        summary.failures.append((record.id, record.error))


def _finish(store, summary: ExtractSummary, videos: Sequence[VideoSource],
            started: float) -> None:
    statuses = [store.done.get(v.id) for v in videos]
    summary.status_counts = Counter(s for s in statuses if s is not None)
    store.commit(complete=all(s is not None for s in statuses), n_inputs=len(videos))
    summary.seconds = time.monotonic() - started
