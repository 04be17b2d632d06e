"""The extraction as a Ray Data job (``c3d-extract ... --ray``; ``pip install -e '.[ray]'``).

Video paths go in as rows, each tagged with its hash shard (``sharding``);
the rows of a shard go to one actor, which holds the network on its GPU and
extracts them into the shard's file exactly as ``c3d-extract --shard I/N``
would (so a rerun resumes, and torchrun and Ray shards are interchangeable).
A video that cannot be decoded, and even a shard whose extraction fails, is a
row with ``status == "error"``, never a failure of the job. When every shard
is done, the driver merges them (``merge``) and, once the merge is verified,
removes the shard files (unless ``keep_shards``). A rerun resumes: from the shard
files of an unfinished job, and from the merged output of a finished one (its
videos are skipped; new ones are extracted and merged after them).

Every worker must see the videos and the output folder at the same paths
(a shared file system); paths are made absolute on the driver.

Example::

    import ray
    from c3d_extract.extraction.options import ExtractOptions
    from c3d_extract.extraction.ray_job import run_ray_job

    job = run_ray_job("videos/", "feats.h5", weights="random",  # or a weights file
                      options=ExtractOptions(layers=("fc6",)))  # address="auto": a cluster
    print(job.line(), job.failures[:10])
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from c3d_extract.atomic_files import remove_quietly
from c3d_extract.device.sharding import Shard, shard_files, shard_of, shard_path
from c3d_extract.errors import C3DError, ClusterError, MergeError, UsageError
from c3d_extract.extraction.options import ExtractOptions
from c3d_extract.extraction.run import Progress
from c3d_extract.store.merge import MergeSummary, merge_shards
from c3d_extract.store.read import read_attributes, read_video_table
from c3d_extract.store.records import VideoRecord
from c3d_extract.video.sources import VideoSource, discover

#: The columns of the job's rows, one row per video extracted by this job; a row with an
#: empty id per shard carries, in ``resumed``, the videos its file or journal already held.
ROW_COLUMNS = ("id", "shard", "status", "error", "n_clips", "resumed")


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data is the part of Ray this job needs)
    except ImportError:
        raise UsageError("the Ray job needs Ray Data: pip install -e '.[ray]' in the "
                         "c3d-extract checkout (or pip install 'ray[data]>=2.9')") from None
    return ray


@dataclass
class RayJobSummary:
    """The rows of the videos extracted by the job, and the merge of its shards."""

    output: str
    shard_count: int
    rows: List[Dict[str, Any]] = field(default_factory=list)
    merge: Optional[MergeSummary] = None
    #: Why the shards were not merged (``MergeError``'s message), or empty.
    merge_error: str = ""
    #: Videos not extracted again: in the shard files or journals, or in the merged output.
    n_resumed: int = 0
    n_inputs: int = 0
    shards_removed: bool = False

    def line(self) -> str:
        counts = Counter(row["status"] for row in self.rows)
        text = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        done = (f"{self.n_inputs} videos: this job extracted {len(self.rows)} "
                f"({text or 'none'}) in {self.shard_count} shards; {self.n_resumed} were "
                f"already done")
        if self.merge is not None:
            done += "; " + self.merge.line()
            if self.shards_removed:
                done += " (shard files removed)"
        return done

    @property
    def failures(self) -> List[Tuple[str, str]]:
        return [(row["id"], row["error"]) for row in self.rows if row["status"] == "error"]


class _Collect(Progress):
    def __init__(self) -> None:
        self.records: List[VideoRecord] = []

    def video_done(self, record: VideoRecord) -> None:
        self.records.append(record)


class ShardExtractor:
    """A Ray actor: the network on its device, and the extraction of whole shards."""

    def __init__(self, output: str, shard_count: int, weights: Union[str, None, Any],
                 options: ExtractOptions, mean: Optional[str], retry_errors: bool) -> None:
        from c3d_extract.extraction.network import prepare_network

        self.output = output
        self.shard_count = shard_count
        self.options = options
        self.retry_errors = retry_errors
        self.prepared = prepare_network(weights, options, mean)

    def __call__(self, group: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        from c3d_extract.extraction.run import extract_videos

        index = int(group["shard"][0])
        videos = [VideoSource(str(i), str(p)) for i, p in zip(group["id"], group["path"])
                  if str(i)]  # an empty id is the marker that makes every shard a group
        collected = _Collect()
        rows: List[Tuple[str, str, str, int, int]] = []
        resumed = 0
        try:
            summary = extract_videos(videos, self.output, weights=self.prepared,
                                     options=self.options, retry_errors=self.retry_errors,
                                     progress=collected, shard=Shard(index, self.shard_count))
            resumed = summary.n_skipped_existing
        except C3DError as error:
            finished = {r.id for r in collected.records}
            rows = [(v.id, "error", f"shard {index} failed: {error}", 0, 0)
                    for v in videos if v.id not in finished]
        rows = [(r.id, r.status, r.error, r.n_clips, 0) for r in collected.records] + rows
        rows.append(("", "", "", 0, resumed))
        return {"id": np.array([r[0] for r in rows], dtype=object),
                "shard": np.full(len(rows), index, np.int64),
                "status": np.array([r[1] for r in rows], dtype=object),
                "error": np.array([r[2] for r in rows], dtype=object),
                "n_clips": np.array([r[3] for r in rows], np.int64),
                "resumed": np.array([r[4] for r in rows], np.int64)}


def video_rows(videos: Sequence[VideoSource], shard_count: int) -> List[Dict[str, Any]]:
    """The job's input rows: each video with its shard, plus one marker row per shard so
    that a shard without videos still gets its (empty, complete) file."""
    rows = [{"id": v.id, "path": os.path.abspath(v.path), "shard": shard_of(v.id, shard_count)}
            for v in videos]
    rows += [{"id": "", "path": "", "shard": index} for index in range(shard_count)]
    return rows


def run_ray_job(inputs: Union[str, Sequence[str]], output: str, *,
                weights: Union[str, None, Any] = None,
                options: ExtractOptions = ExtractOptions(),
                list_file: Optional[str] = None, mean: Optional[str] = None,
                num_actors: Optional[int] = None, gpus_per_actor: Optional[float] = None,
                retry_errors: bool = False, merge: bool = True,
                allow_incomplete: bool = False, address: Optional[str] = None,
                keep_shards: bool = False) -> RayJobSummary:
    """Extract ``inputs`` into ``output`` with one Ray actor per GPU, then merge the shards.

    Ray is started here unless it is already: ``address`` None starts a local cluster,
    else it joins the one there (``"auto"``, ``"host:port"``, ``"ray://host:port"``).
    ``num_actors`` (default: the GPUs of the cluster, or 1 without GPUs) is also
    the shard count; keep it between reruns so that they resume. ``weights`` is
    best a path or name every worker can resolve. With ``merge=False`` the shard
    files are left for ``c3d-extract merge``; a merge that is refused leaves its
    reasons in ``merge_error`` (the rows tell which videos failed). After a merge
    of every shard, complete, the shard files are removed unless ``keep_shards``.
    Videos already in a previously merged ``output`` are skipped (failed ones too:
    ``retry_errors`` retries only those in shard files).
    """
    ray = _ray()
    options.validate()
    videos = discover([inputs] if isinstance(inputs, str) else list(inputs), list_file)
    output = os.path.abspath(output)
    merged_before = _merged_ids(output)
    todo = [v for v in videos if v.id not in merged_before]
    # Videos of an earlier merge whose shard files were removed live only in the output:
    # it is then the base of the next merge, which must not drop them.
    existing = [path for by_index in shard_files(output).values() for path in by_index.values()]
    only_in_output = merged_before - _shard_ids(existing)
    base = output if only_in_output else None
    if base is not None and not todo:  # a finished job: nothing to extract or merge
        return RayJobSummary(output=output, shard_count=0, n_inputs=len(videos),
                             n_resumed=len(videos))
    if not ray.is_initialized():
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as error:
            where = "a local Ray cluster" if address is None else f"the Ray cluster {address!r}"
            reason = " ".join(str(error).split())[:400]
            hint = "; start one with `ray start --head`" if address == "auto" else ""
            raise ClusterError(f"cannot start or join {where}: {reason}{hint}") from None
    gpus = float(ray.cluster_resources().get("GPU", 0))
    if gpus_per_actor is None:
        gpus_per_actor = 1.0 if gpus >= 1 else 0.0
    if num_actors is None:
        num_actors = max(1, int(gpus // gpus_per_actor)) if gpus_per_actor else 1
    if num_actors < 1:
        raise UsageError("the Ray job needs at least one actor")
    summary = RayJobSummary(output=output, shard_count=num_actors, n_inputs=len(videos),
                            n_resumed=len(videos) - len(todo))
    shards = [shard_path(output, Shard(index, num_actors)) for index in range(num_actors)]
    dataset = ray.data.from_items(video_rows(todo, num_actors))
    results = dataset.groupby("shard").map_groups(
        ShardExtractor, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        num_gpus=gpus_per_actor,
        fn_constructor_args=(output, num_actors, _absolute_if_file(weights), options,
                             _absolute_if_file(mean), retry_errors))
    for row in results.iter_rows():
        plain = {name: _plain(row[name]) for name in ROW_COLUMNS}
        if plain["id"]:
            summary.rows.append(plain)
        else:
            summary.n_resumed += plain["resumed"]
    if merge:
        try:
            summary.merge = merge_shards(output, [s for s in shards if os.path.exists(s)],
                                         allow_incomplete=allow_incomplete,
                                         shard_count=num_actors,
                                         base=base)
        except MergeError as error:
            # The rows say which videos or shards failed; losing them to an exception
            # would leave the caller without the reasons.
            summary.merge_error = str(error)
        if summary.merge is not None and summary.merge.complete and not keep_shards:
            for path in shards:
                remove_quietly(path)
            summary.shards_removed = True
    return summary


def _shard_ids(paths: Sequence[str]) -> Set[str]:
    """The video ids committed to the shard files ``paths``."""
    ids: Set[str] = set()
    for path in paths:
        ids.update(read_video_table(path)["id"])
    return ids


def _merged_ids(output: str) -> Set[str]:
    """The video ids of an earlier merge's output; empty when there is none."""
    if not os.path.exists(output):
        return set()
    attrs = read_attributes(output)
    if "merged_shard_count" not in attrs:
        return set()  # not a merge: the merge refuses to replace it, and says so
    return set(read_video_table(output)["id"])


def _absolute_if_file(path: Optional[str]) -> Optional[str]:
    """A file named relative to the driver's folder, as actors elsewhere can find it."""
    return os.path.abspath(path) if path is not None and os.path.isfile(path) else path


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
