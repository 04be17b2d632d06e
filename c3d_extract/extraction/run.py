"""Extraction: videos in, per-video records out, and the resumable run over a folder.

``iter_records`` is the streaming core (decode workers -> clip batches ->
network -> per-video pooling); ``extract`` wraps it with input discovery, the
weights, and the crash-safe store. ``check_videos`` (``--decode-only``) runs the
same pipeline and store without the network: every video decoded, its frames and
clips counted, no weights loaded.

With a target frame rate (``target_fps``) the workers send the resampled frame
sequence (``resample``) and clips are cut from it. With several crops (``crops``
5 or 10) the workers send resized, uncropped frames and the runner cuts every
clip's crops on the device, so each crop is one row of the network's batch.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from typing import (TYPE_CHECKING, Any, Callable, Deque, Dict, Iterator, List, Optional,
                    Sequence, Tuple, Union)

from c3d_extract.extraction.backends import BACKENDS
from c3d_extract.extraction.batching import Batch, ClipBatcher
from c3d_extract.video.clip_plan import SHORT_POLICIES
from c3d_extract.video.decoders import check_decoder
from c3d_extract.errors import UsageError
from c3d_extract.extraction.pooling import ClipAccumulator
from c3d_extract.video.preprocess import (CROP_COUNTS, SPORTS1M, CropWindow, Preprocessing, crop_windows,
                                   load_mean, preprocessing_with_mean)
from c3d_extract.store.records import RunParameters, VideoRecord
from c3d_extract.video.resample import check_target_fps
from c3d_extract.device.sharding import Shard, select, shard_path
from c3d_extract.video.sources import VideoSource, discover
from c3d_extract.weights.convert import check_kernel_order
from c3d_extract.video.workers import (Damaged, DecodePool, Failed, Finished, Frames, FrameSampling,
                                 Noted, Started,
                                 Warned, default_workers)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from c3d_extract.weights.convert import LoadedWeights
    from c3d_extract.weights.networks import LoadedModel

#: What ``--weights`` may be: a loaded network or C3D state dict, a path or name, or None.
WeightsSpec = Union["LoadedModel", "LoadedWeights", str, None]

#: ``weights`` and ``precision`` of a ``--decode-only`` file, which has no features.
DECODE_ONLY = "none (decode only)"
#: Seconds between fsyncs of the journal: what a power loss can cost at most.
SYNC_INTERVAL = 2.0


@dataclass(frozen=True)
class ExtractOptions:
    """How clips are cut and computed. ``0`` (or no layers) means: choose for the device or
    the network (its default layer, its clip length, a stride of half the clip length)."""

    layers: Tuple[str, ...] = ()
    clip_len: int = 0
    stride: int = 0
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
    kernel_order: Optional[str] = None  # declared kernel order of the weights file
    crops: int = 1  # crops per clip: 1 (the centre), 5 (and the corners), 10 (and mirrored)
    target_fps: float = 0.0  # resample every video to this frame rate first; 0: as decoded
    #: Damaged or truncated videos keep the frames that decoded (status ``ok``/``padded``,
    #: the damage kept as their error text) instead of being errors.
    allow_damaged: bool = False

    def validate(self, network: bool = True) -> None:
        """Raise ``UsageError`` for a bad option; ``network=False`` leaves out the layers."""
        from c3d_extract.models.registry import (all_layer_names, architecture_names,
                                                 get_architecture)

        known = all_layer_names()
        unknown = [layer for layer in self.layers if layer not in known]
        if network and (unknown or any(not layer for layer in self.layers)):
            # The network is not known yet: each architecture's layers, apart. A layer of
            # another architecture than the weights' is refused by ``for_network``, which
            # lists the weights' layers only.
            choices = "; ".join(f"{name}: {', '.join(get_architecture(name).layers)}"
                                for name in architecture_names())
            raise UsageError(f"unknown layer(s) {', '.join(unknown) or '(none)'}; the layers "
                             f"are, by architecture, {choices}")
        if network and len(set(self.layers)) != len(self.layers):
            raise UsageError("a layer is named twice")
        for name in ("clip_len", "stride"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name.replace('_', '-')} must be at least 1")
        if self.batch_size < 0 or self.workers < 0:
            raise UsageError("batch size and workers must be positive (0 = automatic)")
        if self.short_policy not in SHORT_POLICIES:
            raise UsageError(f"short policy must be one of {', '.join(SHORT_POLICIES)}")
        if not self.timeout > 0:
            raise UsageError("timeout must be a positive number of seconds")
        if self.crops not in CROP_COUNTS:
            raise UsageError(f"crops must be one of {', '.join(map(str, CROP_COUNTS))}")
        try:
            if self.target_fps:
                check_target_fps(self.target_fps)
        except ValueError as error:
            raise UsageError(str(error)) from None
        check_decoder(self.decoder)
        check_kernel_order(self.kernel_order)
        if self.backend not in BACKENDS:
            raise UsageError(f"backend must be one of {', '.join(BACKENDS)}")

    def for_network(self, network: "LoadedModel") -> "ExtractOptions":
        """These options with the layers, clip length and stride left open filled in from
        ``network``; a layer it does not have is a ``UsageError``."""
        layers = self.layers or (network.default_layer,)
        missing = [layer for layer in layers if layer not in network.layers]
        if missing:
            raise UsageError(f"{network.name} ({network.arch}) has no layer "
                             f"{', '.join(missing)}; choose from {', '.join(network.layers)}")
        clip_len = self.clip_len or network.clip_len
        return replace(self, layers=tuple(layers), clip_len=clip_len,
                       stride=self.stride or max(1, clip_len // 2))


def default_batch_size(device_type: str) -> int:
    """Clips per forward pass when the user does not choose: a GPU needs many to be busy."""
    return 32 if device_type == "cuda" else 8


def clips_per_batch(batch_size: int, crops: int) -> int:
    """Video clips per batch when each is ``crops`` rows of the network's batch of
    ``batch_size`` (at least one clip, so one clip's crops may exceed it)."""
    return max(1, batch_size // max(1, crops))


def crops_of(preprocessing: Preprocessing, crops: int) -> Tuple[CropWindow, ...]:
    """The crop windows cut on the device: () for the one centre crop the workers cut."""
    if crops == 1:
        return ()
    return crop_windows(*preprocessing.resize, preprocessing.crop, crops, preprocessing.crop_rule)


@dataclass
class _VideoState:
    source: VideoSource
    accumulator: ClipAccumulator
    fps: float = 0.0
    codec: str = ""
    decoder: str = ""
    declared_frames: int = 0
    damage: str = ""
    n_frames: int = 0
    width: int = 0
    height: int = 0
    status: str = ""
    finished: bool = False
    warnings: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


@dataclass(frozen=True)
class PreparedNetwork:
    """A network on its device, ready for ``iter_records`` once it has its runner."""

    runner: "object"  # ClipRunner or OpenVinoRunner; None until ``with_runner``
    model: "nn.Module"
    weights: "LoadedModel"
    preprocessing: Preprocessing
    precision: str
    device_type: str
    backend: str = "torch"
    device: Optional["torch.device"] = None

    def resolve(self, options: ExtractOptions) -> ExtractOptions:
        return options.for_network(self.weights)


#: Receives a line saying what a wait of more than a few seconds is for (the CLI shows it).
Notify = Callable[[str], None]
#: Weights files larger than this get a line before they are loaded (a few seconds).
LARGE_WEIGHTS_BYTES = 100 << 20


def prepare_network(weights: WeightsSpec, options: ExtractOptions,
                    mean: Optional[str] = None, *,
                    notify: Optional[Notify] = None) -> PreparedNetwork:
    """Resolve weights, device and precision; build the network and its runner.
    ``notify`` hears of the long waits: loading large weights, a first-use conversion."""
    return with_runner(load_prepared_network(weights, options, mean, notify=notify), options,
                       notify=notify)


def resolve_compute(options: ExtractOptions) -> Tuple["torch.device", str, str]:
    """``(device, precision, backend)`` the options ask for, checked; no weights read."""
    from c3d_extract.extraction.backends import resolve_backend
    from c3d_extract.extraction.torch_runner import resolve_device, resolve_precision

    device = resolve_device(options.device)
    precision = resolve_precision(options.precision, device, options.allow_emulated_precision)
    return device, precision, resolve_backend(options.backend, device)


def load_prepared_network(weights: WeightsSpec, options: ExtractOptions,
                          mean: Optional[str] = None, *,
                          notify: Optional[Notify] = None) -> PreparedNetwork:
    """``prepare_network`` without the runner (``runner`` None): everything the output's
    parameters depend on, and nothing spent on a backend yet (``with_runner`` does it)."""
    options.validate()  # before torch is imported: a usage error comes at once
    from c3d_extract.weights.networks import load_model

    device, precision, backend = resolve_compute(options)
    large = _local_weights_file(weights)
    if notify is not None and large is not None and os.path.getsize(large) > LARGE_WEIGHTS_BYTES:
        notify(f"loading the weights {large} ({os.path.getsize(large) >> 20} MB)")
    loaded = load_model(weights, kernel_order=options.kernel_order)
    if loaded.is_random:
        warnings.warn("using RANDOM weights: the features are meaningless except for testing",
                      UserWarning, stacklevel=2)
    if loaded.kernel_order_assumed:
        warnings.warn(f"{loaded.name}: {loaded.notes[0]}", UserWarning, stacklevel=2)
    options = options.for_network(loaded)
    preprocessing = loaded.preset
    if mean is not None:
        preprocessing = preprocessing_with_mean(preprocessing, load_mean(mean))
    try:
        preprocessing.cropped_mean(options.clip_len)
    except ValueError as error:
        raise UsageError(str(error)) from None
    return PreparedNetwork(None, loaded.model, loaded, preprocessing, precision, device.type,
                           backend, device)


def with_runner(prepared: PreparedNetwork, options: ExtractOptions, *,
                notify: Optional[Notify] = None) -> PreparedNetwork:
    """``prepared`` with its runner built (unless it has one): with OpenVINO, the network
    converted on the first use of these weights and layers (25-45 s for C3D), which
    ``notify`` is told of first."""
    from c3d_extract.extraction.backends import make_runner

    if prepared.runner is not None:
        return prepared
    options = prepared.resolve(options)
    batch_size = options.batch_size or default_batch_size(prepared.device_type)

    def converting() -> None:
        if notify is not None:
            from c3d_extract.extraction.openvino_runner import openvino_cache_dir

            notify("converting the network for OpenVINO (first use of these weights and "
                   f"layers, about 30 s; kept in {openvino_cache_dir()})")

    # The kernel order the file was read in is part of the network's identity (a cached
    # conversion of the same file read in another order is another network).
    import torch

    loaded = prepared.weights
    device = prepared.device or torch.device(prepared.device_type)
    runner = make_runner(prepared.backend, prepared.model,
                         f"{loaded.sha256}:{loaded.kernel_order}", prepared.preprocessing,
                         options.clip_len, options.layers, device, prepared.precision,
                         clips_per_batch(batch_size, options.crops),
                         crops_of(prepared.preprocessing, options.crops), on_convert=converting)
    return replace(prepared, runner=runner)


def _local_weights_file(weights: WeightsSpec) -> Optional[str]:
    """The local file ``--weights`` names (the default file for None), if it is one."""
    if weights is None:
        from c3d_extract.weights.loading import default_weights_path

        default = default_weights_path()
        return None if default is None else str(default)
    if isinstance(weights, str) and os.path.isfile(weights):
        return weights
    return None


def _known_parameters(weights: WeightsSpec, options: ExtractOptions,
                      precision: str) -> Callable[[RunParameters], RunParameters]:
    """The run's parameters as far as they are known before the weights are loaded (the
    options given, the weights file's sha256), the rest taken from what is recorded."""
    def requested(recorded: RunParameters) -> RunParameters:
        from c3d_extract.weights.loading import file_sha256

        known: Dict[str, Any] = dict(short_policy=options.short_policy,
                                     per_clip=options.per_clip, precision=precision)
        if options.layers:
            known["layers"] = tuple(options.layers)
        if options.clip_len:
            known["clip_len"] = options.clip_len
            known["stride"] = options.stride or max(1, options.clip_len // 2)
        elif options.stride:
            known["stride"] = options.stride
        path = _local_weights_file(weights)
        if path is not None:
            known["weights_sha256"] = file_sha256(path)
        return replace(recorded, **known)
    return requested


#: What turns batches of clips into per-layer features: ``ClipRunner``, ``OpenVinoRunner``
#: or ``_NoNetwork`` (``submit``, ``collect``, ``pending``, ``discard``).
Runner = Any


def iter_records(videos: Sequence[Union[VideoSource, Tuple[str, str]]],
                 weights: Union[WeightsSpec, PreparedNetwork] = None,
                 options: ExtractOptions = ExtractOptions(),
                 on_batch: Optional[Callable[[int], None]] = None,
                 on_frames: Optional[Callable[[int], None]] = None) -> Iterator[VideoRecord]:
    """Decode, cut, compute and pool each video; yield one record per video as it finishes.

    Records come in completion order, not input order. A video that cannot be
    decoded yields a record with ``status == "error"``; nothing is raised for it.
    ``on_batch(n_clips)`` follows each batch through the network, ``on_frames(n)``
    each message of decoded frames.
    """
    prepared = with_runner(weights, options) if isinstance(weights, PreparedNetwork) \
        else prepare_network(weights, options)
    options = prepared.resolve(options)
    yield from _stream(videos, prepared.runner, prepared.preprocessing,  # type: ignore[arg-type]
                       options, prepared.device_type, on_batch, on_frames)


def iter_decoded(videos: Sequence[Union[VideoSource, Tuple[str, str]]],
                 options: ExtractOptions = ExtractOptions(),
                 on_batch: Optional[Callable[[int], None]] = None,
                 on_frames: Optional[Callable[[int], None]] = None) -> Iterator[VideoRecord]:
    """``iter_records`` without the network: records with frames and clips counted and no
    features. Workers and batches default to a GPU run's, whose host side this is; clips
    are the C3D protocol's unless ``options`` say otherwise."""
    options = decode_only_options(options)
    options.validate(network=False)
    yield from _stream(videos, _NoNetwork(), SPORTS1M, options, "cuda", on_batch, on_frames)


def decode_only_options(options: ExtractOptions) -> ExtractOptions:
    """``options`` for a run without a network: no layers, C3D's clip protocol by default."""
    clip_len = options.clip_len or 16
    return replace(options, layers=(), clip_len=clip_len,
                   stride=options.stride or max(1, clip_len // 2))


def _stream(videos: Sequence[Union[VideoSource, Tuple[str, str]]], runner: Runner,
            preprocessing: Preprocessing, options: ExtractOptions, device_type: str,
            on_batch: Optional[Callable[[int], None]],
            on_frames: Optional[Callable[[int], None]]) -> Iterator[VideoRecord]:
    """The streaming core: decode workers -> clip batches -> ``runner`` -> per-video records."""
    sources = [v if isinstance(v, VideoSource) else VideoSource(*v) for v in videos]
    if not sources:
        return
    batch_size = clips_per_batch(options.batch_size or default_batch_size(device_type),
                                 options.crops)
    workers = options.workers or default_workers(device_type)
    keep_clips = options.per_clip and bool(options.layers)
    # Several crops are cut on the device from the resized frames: one decode, one transfer.
    sampling = FrameSampling(target_fps=options.target_fps, crop=options.crops == 1)
    batcher = ClipBatcher(options.clip_len, options.stride, options.short_policy, batch_size)
    queue: Deque[Tuple[int, VideoSource]] = deque(enumerate(sources))
    states: Dict[int, _VideoState] = {}
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
        with DecodePool(min(workers, len(sources)), options.decoder, preprocessing,
                        options.timeout, sampling, options.allow_damaged) as pool:
            while queue or pool.busy or batcher.pending_clips or runner.pending:
                while queue and pool.idle:
                    slot, source = queue.popleft()
                    states[slot] = _VideoState(source, ClipAccumulator(options.layers,
                                                                       keep_clips))
                    pool.submit(slot, source.path)
                if pool.busy and batcher.pending_clips < max_pending:
                    wait = 0.5 if batcher.pending_clips < batch_size else 0.0
                    for event in pool.poll(wait):
                        if on_frames is not None and isinstance(event, Frames):
                            on_frames(len(event.frames))
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


class _NoNetwork:
    """The runner of a run without a network (``--decode-only``): each batch comes back at
    once with no outputs, so clips are counted and nothing is computed."""

    def __init__(self) -> None:
        self._done: List[Tuple[Batch, Dict]] = []

    def submit(self, batch: Batch) -> None:
        self._done.append((batch, {}))

    def collect(self, wait: bool = False) -> List[Tuple[Batch, Dict]]:
        done, self._done = self._done, []
        return done

    @property
    def pending(self) -> int:
        return len(self._done)

    def discard(self) -> None:
        self._done = []


def _apply_event(event, states: Dict[int, _VideoState],
                 batcher: ClipBatcher) -> Optional[VideoRecord]:
    """Update the state of the event's video; return its record if it is complete."""
    state = states[event.slot]
    if isinstance(event, Started):
        state.fps, state.codec = event.fps, event.codec
        state.decoder, state.declared_frames = event.decoder, event.declared_frames
    elif isinstance(event, Frames):
        batcher.add_frames(event.slot, event.frames)
        state.n_frames += len(event.frames)
    elif isinstance(event, Warned):
        state.warnings.append(event.message)
    elif isinstance(event, Noted):
        state.notes.append(event.message)
    elif isinstance(event, Damaged):
        state.damage = event.message
    elif isinstance(event, Finished):
        state.n_frames, state.width, state.height = event.n_frames, event.width, event.height
        state.status = batcher.finish_video(event.slot, event.n_frames)
        state.finished = True  # complete once the runner has its last clips (the caller)
    elif isinstance(event, Failed):
        batcher.drop_video(event.slot)
        del states[event.slot]
        n_frames = state.n_frames if event.n_frames is None else event.n_frames
        return VideoRecord(id=state.source.id, status="error", error=event.message,
                           n_frames=n_frames, fps=state.fps, codec=state.codec,
                           decoder=state.decoder, declared_frames=state.declared_frames,
                           warnings=tuple(state.warnings), decoder_notes=tuple(state.notes))
    return None


def _finished_record(state: _VideoState) -> VideoRecord:
    record = VideoRecord(id=state.source.id, status=state.status, error=state.damage,
                         n_frames=state.n_frames, n_clips=state.accumulator.count,
                         fps=state.fps, width=state.width, height=state.height,
                         codec=state.codec, decoder=state.decoder,
                         declared_frames=state.declared_frames, warnings=tuple(state.warnings),
                         decoder_notes=tuple(state.notes))
    if state.accumulator.count and state.accumulator.layers:
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
        rate = (f", {self.n_clips / self.seconds:.1f} clips/s, "
                f"{self.n_frames / self.seconds:.0f} frames/s" if self.seconds > 0 else "")
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

    def frames_decoded(self, n_frames: int) -> None:
        """Called as decoded frames arrive from the decode workers."""

    def notice(self, text: str) -> None:
        """Called before a wait of more than a few seconds (loading large weights, a
        first-use network conversion), with a line saying what it is."""


def extract(inputs: Union[str, Sequence[str]], output: str, *,
            weights: Union[WeightsSpec, PreparedNetwork] = None,
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
                   weights: Union[WeightsSpec, PreparedNetwork] = None,
                   options: ExtractOptions = ExtractOptions(), mean: Optional[str] = None,
                   overwrite: bool = False, retry_errors: bool = False,
                   progress: Optional[Progress] = None,
                   shard: Optional[Shard] = None) -> ExtractSummary:
    """``extract`` for videos already discovered; ``weights`` may be a network already
    prepared (``prepare_network``), which then serves several calls."""
    from c3d_extract.store.write import (check_output_location, check_rerun, check_resumable,
                                   feature_dims)

    if shard is not None:
        videos = select(videos, shard)
        output = shard_path(output, shard)
    options.validate()
    # Everything that can refuse the run is checked before weights are loaded or a network
    # converted: the output's folder, then (on a rerun) the parameters it was made with.
    check_output_location(output)
    if not overwrite:  # crops and frame rate first: they are known without the weights
        check_resumable(output, _sampling_parameters(options), ("crops", "target_fps"))
    notify = progress.notice if progress is not None else None
    if isinstance(weights, PreparedNetwork):
        if mean is not None:
            raise UsageError("a prepared network already has its mean; give the mean to "
                             "prepare_network")
        prepared = weights
    else:
        _, precision, _ = resolve_compute(options)
        weights_file = _local_weights_file(weights)
        if weights_file is not None:
            from c3d_extract.weights.formats import detect_format

            detect_format(weights_file)  # a file that is no weights is named first
        if not overwrite:
            check_rerun(output, _known_parameters(weights, options, precision), shard)
        prepared = load_prepared_network(weights, options, mean, notify=notify)
    options = prepared.resolve(options)
    params = RunParameters(
        layers=tuple(options.layers), clip_len=options.clip_len, stride=options.stride,
        short_policy=options.short_policy, weights=prepared.weights.name,
        weights_sha256=prepared.weights.sha256, preprocessing=prepared.preprocessing.to_json(),
        precision=prepared.precision, per_clip=options.per_clip,
        weights_kernel_order=prepared.weights.kernel_order, crops=options.crops,
        target_fps=options.target_fps)
    dims = feature_dims(options.layers, prepared.model.feature_dim)
    summary = ExtractSummary(output=output, n_inputs=len(videos), n_skipped_existing=0,
                             weights=prepared.weights.name,
                             random_weights=prepared.weights.is_random, shard=shard)
    ready: List[PreparedNetwork] = []

    def build_runner() -> None:  # once the store has accepted the run, if there is work
        ready.append(with_runner(prepared, options, notify=notify))

    return _run_into_store(
        videos, summary, params, dims,
        lambda todo, progress: iter_records(todo, ready[0], options, progress.clips_done,
                                            progress.frames_decoded),
        overwrite=overwrite, retry_errors=retry_errors, progress=progress, shard=shard,
        before_work=build_runner)


def _sampling_parameters(options: ExtractOptions) -> RunParameters:
    """Run parameters that say only how frames and crops are taken (the rest left empty):
    what ``check_resumable`` compares before any network is built."""
    return RunParameters(layers=(), clip_len=0, stride=0, short_policy="", weights="",
                         weights_sha256="", preprocessing="", precision="", per_clip=False,
                         crops=options.crops, target_fps=options.target_fps)


def check_videos(videos: Sequence[VideoSource], output: str, *,
                 options: ExtractOptions = ExtractOptions(), overwrite: bool = False,
                 retry_errors: bool = False, progress: Optional[Progress] = None,
                 shard: Optional[Shard] = None) -> ExtractSummary:
    """``extract_videos`` without the network (``--decode-only``): every video decoded,
    its frames and clips counted, the video table written to ``output``, resumably.
    The file has no features (``layers`` empty, ``weights`` "none")."""
    from c3d_extract.store.write import check_output_location

    if shard is not None:
        videos = select(videos, shard)
        output = shard_path(output, shard)
    options = decode_only_options(replace(options, per_clip=False))
    options.validate(network=False)
    check_output_location(output)
    params = RunParameters(
        layers=(), clip_len=options.clip_len, stride=options.stride,
        short_policy=options.short_policy, weights=DECODE_ONLY, weights_sha256="",
        preprocessing=SPORTS1M.to_json(), precision=DECODE_ONLY, per_clip=False,
        crops=options.crops, target_fps=options.target_fps)
    summary = ExtractSummary(output=output, n_inputs=len(videos), n_skipped_existing=0,
                             weights=DECODE_ONLY, shard=shard)
    return _run_into_store(
        videos, summary, params, {},
        lambda todo, progress: iter_decoded(todo, options, progress.clips_done,
                                            progress.frames_decoded),
        overwrite=overwrite, retry_errors=retry_errors, progress=progress, shard=shard)


def _run_into_store(videos: Sequence[VideoSource], summary: ExtractSummary,
                    params: RunParameters, dims: Dict[str, int],
                    records_of: Callable[[List[VideoSource], Progress], Iterator[VideoRecord]],
                    *, overwrite: bool, retry_errors: bool, progress: Optional[Progress],
                    shard: Optional[Shard],
                    before_work: Optional[Callable[[], None]] = None) -> ExtractSummary:
    """The resumable run: skip what the output holds, journal each record, commit.
    ``before_work()`` runs once the store has accepted the run and only if there are
    videos to process (building the runner); the run's time is counted after it."""
    from c3d_extract.store.write import FeatureStore

    progress = progress or Progress()
    with FeatureStore(summary.output, params, dims, overwrite=overwrite, shard=shard) as store:
        todo = [v for v in videos if v.id not in store.done
                or (retry_errors and store.done[v.id] == "error")]
        summary.n_skipped_existing = len(videos) - len(todo)
        if todo and before_work is not None:
            before_work()
        started = time.monotonic()
        progress.start(len(videos), summary.n_skipped_existing)
        last_sync = time.monotonic()
        records = records_of(todo, progress) if todo else _no_records()
        # closing(): whatever stops the loop, the decode workers are stopped right away.
        with contextlib.closing(records):  # type: ignore[type-var]
            try:
                for record in records:
                    store.add(record)
                    _count(summary, record)
                    progress.video_done(record)
                    if time.monotonic() - last_sync > SYNC_INTERVAL:
                        store.sync()
                        last_sync = time.monotonic()
            except KeyboardInterrupt:
                records.close()  # type: ignore[attr-defined]
                _finish(store, summary, videos, started)
                raise
        _finish(store, summary, videos, started)
    return summary


def _no_records() -> Iterator[VideoRecord]:
    """The records of a run with nothing to do (no network is built for it)."""
    yield from ()


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
