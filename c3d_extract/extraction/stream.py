"""The streaming core of extraction: decode workers -> clip batches -> runner -> per-video
pooling, one ``VideoRecord`` per video as it finishes (completion order), with a bounded
number of frames and batches in flight."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from c3d_extract.extraction.batching import Batch, ClipBatcher
from c3d_extract.extraction.network import (PreparedNetwork, WeightsSpec, prepare_network,
                                            with_runner)
from c3d_extract.extraction.options import (ExtractOptions, clips_per_batch, decode_only_options,
                                            default_batch_size)
from c3d_extract.extraction.pooling import ClipAccumulator
from c3d_extract.extraction.runners import DecodeOnlyRunner, Runner
from c3d_extract.store.records import VideoRecord
from c3d_extract.video.preprocess import SPORTS1M, Preprocessing
from c3d_extract.video.sources import VideoSource
from c3d_extract.video.workers import (Damaged, DecodePool, Failed, Finished, Frames, FrameSampling,
                                       Noted, Started, Warned, default_workers)


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
    yield from _stream(videos, DecodeOnlyRunner(), SPORTS1M, options, "cuda", on_batch, on_frames)


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
