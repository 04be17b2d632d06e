"""The resumable run over a folder: videos in, a feature file out.

``extract`` wraps the streaming core (``stream.iter_records``: decode workers -> clip
batches -> network -> per-video pooling) with input discovery, the weights, and the
crash-safe store. ``check_videos`` (``--decode-only``) runs the
same pipeline and store without the network: every video decoded, its frames and
clips counted, no weights loaded.

In the streaming core, with a target frame rate (``target_fps``) the workers send the
resampled frame sequence (``video.resample``) and clips are cut from it; with several
crops (``crops`` 5 or 10) the workers send resized, uncropped frames and the runner cuts
every clip's crops on the device, so each crop is one row of the network's batch.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from c3d_extract.device.sharding import Shard, select, shard_path
from c3d_extract.errors import UsageError
from c3d_extract.extraction.network import (PreparedNetwork, WeightsSpec, known_parameters,
                                            load_prepared_network, local_weights_file,
                                            resolve_compute, with_runner)
from c3d_extract.extraction.options import DECODE_ONLY, ExtractOptions, decode_only_options
from c3d_extract.extraction.stream import iter_decoded, iter_records
from c3d_extract.store.records import RunParameters, VideoRecord
from c3d_extract.video.preprocess import SPORTS1M
from c3d_extract.video.sources import VideoSource, discover

#: Seconds between fsyncs of the journal: what a power loss can cost at most.
SYNC_INTERVAL = 2.0


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
    from c3d_extract.store.layout import feature_dims
    from c3d_extract.store.rerun_checks import check_output_location, check_rerun, check_resumable

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
        weights_file = local_weights_file(weights)
        if weights_file is not None:
            from c3d_extract.weights.formats import detect_format

            detect_format(weights_file)  # a file that is no weights is named first
        if not overwrite:
            check_rerun(output, known_parameters(weights, options, precision), shard)
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
    from c3d_extract.store.rerun_checks import check_output_location

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
