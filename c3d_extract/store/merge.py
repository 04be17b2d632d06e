"""Merging the shard files of a sharded run (``--shard``, torchrun, Ray) into one output.

The merge checks before it writes anything. It refuses, naming each problem,
when a shard 0..N-1 is missing, incomplete (attribute ``complete`` false),
unfinished (an interrupted run's journal still holds videos, or a run is
writing it now), when the shards were made with different run parameters or
shard counts, or when a video id appears in two shards. With
``allow_incomplete`` the first three are accepted and recorded in the output
(``complete`` false, ``missing_shards``, ``incomplete_shards``); the others
never are, because the file would mix incompatible features.

The output is a plain copy of every row (``videos/*``, ``features/*``,
``clips/*`` with ``clips/video`` shifted to the merged rows), shard after
shard, written to a temporary file in the same folder, fsynced and renamed
into place; never a virtual dataset, which would read a missing source as
zeros.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from c3d_extract.atomic_files import remove_stale_temporaries, replaced_atomically
from c3d_extract.device.sharding import Shard, parse_shard_path, shard_files, shard_of, shard_path
from c3d_extract.errors import MergeError, OutputLockedError, StoreError
from c3d_extract.store.journal import Journal
from c3d_extract.store.locking import OutputLock
from c3d_extract.store.read import open_for_reading, recorded_shard
from c3d_extract.store.records import RunParameters

#: The groups whose datasets have one row per video (``videos``, ``features``) or per
#: clip (``clips``); every dataset in them is copied.
ROW_GROUPS = ("videos", "features", "clips")
#: Root attributes that describe one shard, not the merged file.
_SHARD_ATTRS = ("shard_index", "shard_count", "complete", "n_inputs", "folded_journal")
_COPY_BYTES = 64 << 20
_MAX_LISTED = 10


@dataclass(frozen=True)
class ShardFile:
    """What the merge needs to know about one shard file."""

    path: str
    shard: Optional[Shard]
    params: RunParameters
    complete: bool
    n_inputs: int
    ids: Tuple[str, ...]
    layout: Dict[str, Tuple[str, Tuple[int, ...]]]  # "group/name" -> (dtype, row shape)
    unfinished: str = ""  # why the file is not final yet, or empty


@dataclass
class MergePlan:
    """The checks' verdict: what would be merged and what stands in the way."""

    count: int
    shards: Dict[int, ShardFile]
    missing: List[int] = field(default_factory=list)
    incomplete: List[int] = field(default_factory=list)
    #: Reasons allow_incomplete accepts (missing, incomplete and unfinished shards).
    gaps: List[str] = field(default_factory=list)
    #: Reasons nothing can override (parameters, shard counts, duplicated ids, layout).
    conflicts: List[str] = field(default_factory=list)


@dataclass
class MergeSummary:
    output: str
    shard_count: int
    merged: List[int]
    missing: List[int]
    incomplete: List[int]
    n_videos: int
    status_counts: Counter

    @property
    def complete(self) -> bool:
        return not self.missing and not self.incomplete

    @property
    def n_failed(self) -> int:
        return self.status_counts.get("error", 0)

    def line(self) -> str:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(self.status_counts.items()))
        gaps = ""
        if self.missing:
            gaps += f"; MISSING shards {_numbers(self.missing)}"
        if self.incomplete:
            gaps += f"; INCOMPLETE shards {_numbers(self.incomplete)}"
        return (f"merged {len(self.merged)} of {self.shard_count} shards into {self.output}: "
                f"{self.n_videos} videos ({counts or 'none'}){gaps}")


def _numbers(values: Sequence[int]) -> str:
    return ", ".join(str(v) for v in values)


# ---------------------------------------------------------------- finding and reading shards

def find_shards(output: str) -> List[str]:
    """The shard files of ``output`` in its folder (``feats.shard-*-of-NNNNN.h5``)."""
    found = shard_files(output)
    if not found:
        directory, name = os.path.split(output)
        stem, ext = os.path.splitext(name)
        raise MergeError(f"no shard files {stem}.shard-*-of-*{ext} in "
                         f"{os.path.abspath(directory or '.')}")
    if len(found) > 1:
        counts = ", ".join(f"{len(files)} of {count}" for count, files in sorted(found.items()))
        raise MergeError(f"shard files of runs with different shard counts lie next to "
                         f"{output} ({counts}); move the stale ones away or name the shards "
                         "to merge")
    (files,) = found.values()
    return [files[index] for index in sorted(files)]


def read_shard(path: str, unfinished: str = "") -> ShardFile:
    """Read the attributes, ids and layout of one shard file (not its features)."""
    with open_for_reading(path) as handle:
        attrs = dict(handle.attrs)
        try:
            params = RunParameters.from_attrs(attrs)
            shard = recorded_shard(attrs)
        except (KeyError, ValueError) as error:
            raise StoreError(f"{path} lacks the run parameters ({error})") from None
        layout = {}
        for group in ROW_GROUPS:
            if group in handle:
                for name, dataset in handle[group].items():
                    layout[f"{group}/{name}"] = (dataset.dtype.str, tuple(dataset.shape[1:]))
        ids = tuple(handle["videos/id"].asstr()[...])
    journal = Journal(path + ".journal")
    pending = sum(1 for meta, _ in journal.records() if meta.get("kind") != "header")
    if pending and not unfinished:
        unfinished = (f"the journal of an interrupted run still holds {pending} videos not "
                      "in the file")
    return ShardFile(path=path, shard=shard, params=params,
                     complete=bool(attrs.get("complete", False)),
                     n_inputs=int(attrs.get("n_inputs", 0)), ids=ids, layout=layout,
                     unfinished=unfinished)


# ---------------------------------------------------------------- the checks

def plan_merge(files: Sequence[ShardFile], expected_count: Optional[int] = None) -> MergePlan:
    """Check that ``files`` are the complete, compatible shards of one run.

    ``expected_count`` is the shard count the files' names promise, if known.
    """
    conflicts: List[str] = []
    sharded = []
    for shard_file in files:
        if shard_file.shard is None:
            conflicts.append(f"{shard_file.path} is not a shard file (it has no shard_index "
                             "and shard_count attributes)")
        else:
            sharded.append(shard_file)
    counts = sorted({f.shard.count for f in sharded} | (
        {expected_count} if expected_count is not None else set()))
    if len(counts) > 1:
        conflicts.append("the shards come from runs with different shard counts: " + "; ".join(
            f"{f.path} is shard {f.shard}" for f in sharded))
    count = counts[0] if counts else 0
    shards: Dict[int, ShardFile] = {}
    for shard_file in sharded:
        index = shard_file.shard.index
        if index in shards:
            conflicts.append(f"shard {index} is given twice: {shards[index].path} and "
                             f"{shard_file.path}")
        else:
            shards[index] = shard_file
    plan = MergePlan(count=count, shards=dict(sorted(shards.items())), conflicts=conflicts)
    if len(counts) == 1:
        _check_coverage(plan)
    _check_parameters(plan)
    _check_ids(plan)
    return plan


def _check_coverage(plan: MergePlan) -> None:
    for index in range(plan.count):
        shard_file = plan.shards.get(index)
        if shard_file is None:
            plan.missing.append(index)
            expected = _expected_name(plan, index)
            interrupted = (" (an interrupted run left its journal: rerun it)"
                           if os.path.exists(expected + ".journal") else "")
            plan.gaps.append(f"shard {index} of {plan.count} is missing (expected a file like "
                             f"{os.path.basename(expected)}){interrupted}")
        elif shard_file.unfinished:
            plan.incomplete.append(index)
            plan.gaps.append(f"shard {index} ({shard_file.path}) is unfinished: "
                             f"{shard_file.unfinished}; rerun its extraction to finish it")
        elif not shard_file.complete:
            plan.incomplete.append(index)
            plan.gaps.append(f"shard {index} ({shard_file.path}) is incomplete: it has "
                             f"{len(shard_file.ids)} of its {shard_file.n_inputs} videos; "
                             "rerun its extraction to finish it")


def _expected_name(plan: MergePlan, index: int) -> str:
    if not plan.shards:
        return f"*.shard-{index:05d}-of-{plan.count:05d}.*"
    output, _ = _output_of(next(iter(plan.shards.values())).path)
    return shard_path(output, Shard(index, plan.count))


def _output_of(path: str) -> Tuple[str, Optional[Shard]]:
    parsed = parse_shard_path(path)
    return (parsed[0], parsed[1]) if parsed else (path, None)


def _check_parameters(plan: MergePlan) -> None:
    if not plan.shards:
        return
    first_index, first = next(iter(plan.shards.items()))
    for index, shard_file in plan.shards.items():
        differing = first.params.differences(shard_file.params)
        if differing:
            names = [text.split(":", 1)[0] for text in differing]
            details = "; ".join(f"{name}: {_field(first.params, name)!r} in shard "
                                f"{first_index}, {_field(shard_file.params, name)!r} in shard "
                                f"{index}" for name in names)
            plan.conflicts.append(f"shard {index} ({shard_file.path}) was made with other "
                                  f"parameters than shard {first_index} ({details})")
        elif shard_file.layout != first.layout:
            plan.conflicts.append(f"shard {index} ({shard_file.path}) has other datasets "
                                  f"than shard {first_index} ({first.path})")


def _field(params: RunParameters, name: str) -> object:
    """A run parameter as the file's attributes write it (``layers`` comma-separated)."""
    value = getattr(params, name)
    return ",".join(value) if name == "layers" else value


def _check_ids(plan: MergePlan) -> None:
    seen: Dict[str, int] = {}
    duplicates: List[str] = []
    for index, shard_file in plan.shards.items():
        strays = [video_id for video_id in shard_file.ids
                  if shard_of(video_id, shard_file.shard.count) != index]
        if strays:
            plan.conflicts.append(
                f"shard {index} ({shard_file.path}) holds {len(strays)} videos that belong "
                f"to other shards (e.g. {strays[0]!r}); it was not made by --shard "
                f"{index}/{shard_file.shard.count}")
        for video_id in shard_file.ids:
            if video_id in seen:
                duplicates.append(f"video id {video_id!r} is in shard {seen[video_id]} and in "
                                  f"shard {index}")
            else:
                seen[video_id] = index
    plan.conflicts.extend(duplicates[:_MAX_LISTED])
    if len(duplicates) > _MAX_LISTED:
        plan.conflicts.append(f"... and {len(duplicates) - _MAX_LISTED} more duplicated ids")


# ---------------------------------------------------------------- the merge

def merge_shards(output: str, shards: Optional[Sequence[str]] = None, *,
                 allow_incomplete: bool = False, shard_count: Optional[int] = None,
                 base: Optional[str] = None) -> MergeSummary:
    """Merge the shard files of ``output`` (found next to it, or the given ``shards``).

    Raises ``MergeError`` listing every problem unless all shards are there,
    finished and compatible; ``allow_incomplete`` merges what there is and
    records what is missing. ``shard_count``, if given, is the count the
    shards must have. ``base``, the output of an earlier merge whose shard files
    are gone, goes first; its videos must not be in the shards.
    """
    output = os.path.abspath(output)
    expected_count = shard_count
    if shards is None:
        paths = find_shards(output)
        named_count = _output_of(paths[0])[1].count  # type: ignore[union-attr]
        if expected_count is not None and named_count != expected_count:
            raise MergeError(f"the shard files next to {output} are {named_count} shards, "
                             f"not {expected_count}")
        expected_count = named_count
    else:
        paths = list(shards)
        if not paths:
            raise MergeError("name at least one shard file to merge")
    paths = [os.path.abspath(p) for p in paths]
    if output in paths:
        raise MergeError(f"the output {output} is one of the shards to merge")
    directory = os.path.dirname(output)
    if not os.path.isdir(directory):
        raise StoreError(f"the output directory {directory} does not exist")

    locks: List[OutputLock] = []
    try:
        locks.append(_lock(OutputLock(output), f"the output {output}"))
        _check_replaceable(output)
        files = []
        for path in dict.fromkeys(paths):
            files.append(read_shard(path, _lock_shard(path, locks)))
        plan = plan_merge(files, expected_count)
        before = read_shard(base) if base is not None else None  # locked: it is the output
        if before is not None:
            _check_base(plan, before)
        problems = plan.conflicts + ([] if allow_incomplete else plan.gaps)
        if problems:
            hint = ("" if plan.conflicts or not plan.gaps else
                    "\n(--allow-incomplete merges the shards there are and records what is "
                    "missing)")
            raise MergeError(f"cannot merge into {output}:\n  - " + "\n  - ".join(problems)
                             + hint, problems)
        remove_stale_temporaries(output)
        ordered = ([before] if before is not None else []) + list(plan.shards.values())
        status_counts = _write(output, plan, ordered)
    finally:
        for lock in reversed(locks):
            lock.release()
    return MergeSummary(output=output, shard_count=plan.count, merged=list(plan.shards),
                        missing=plan.missing, incomplete=plan.incomplete,
                        n_videos=sum(len(f.ids) for f in ordered),
                        status_counts=status_counts)


def _check_base(plan: MergePlan, base: ShardFile) -> None:
    """An earlier merge's output can go first if it matches the shards and shares no id."""
    if not plan.shards:
        return
    first = next(iter(plan.shards.values()))
    differing = base.params.differences(first.params)
    if differing:
        plan.conflicts.append(f"the earlier merge {base.path} was made with other parameters "
                              f"({'; '.join(differing)})")
    elif base.layout != first.layout:
        plan.conflicts.append(f"the earlier merge {base.path} has other datasets than "
                              f"{first.path}")
    ids = set(base.ids)
    shared = [video_id for f in plan.shards.values() for video_id in f.ids if video_id in ids]
    if shared:
        plan.conflicts.append(f"{len(shared)} videos of the shards are in the earlier merge "
                              f"{base.path} already (e.g. {shared[0]!r})")


def _lock(lock: OutputLock, what: str) -> OutputLock:
    try:
        return lock.acquire()
    except OutputLockedError:
        raise MergeError(f"{what} is being written by a running c3d-extract; wait for it "
                         "to finish") from None


def _lock_shard(path: str, locks: List[OutputLock]) -> str:
    """Lock a shard so that no run changes it while it is read; '' or why it is unfinished."""
    if not os.path.exists(path):
        raise MergeError(f"no such shard file: {path}")
    lock = OutputLock(path)
    try:
        locks.append(lock.acquire())
    except OutputLockedError:
        return "a c3d-extract run is writing it now"
    return ""


def _check_replaceable(output: str) -> None:
    """A merge may replace an earlier merge, never the result of an ordinary run."""
    if os.path.exists(output + ".journal"):
        raise MergeError(f"{output} has the journal of an unfinished extraction run "
                         f"({output}.journal); finish or remove that run first")
    if not os.path.exists(output):
        return
    try:
        with open_for_reading(output) as handle:
            merged = "merged_shard_count" in handle.attrs
    except StoreError:
        merged = False
    if not merged:
        raise MergeError(f"{output} already exists and is not the result of a merge; "
                         "remove it or merge into another file")


def _write(output: str, plan: MergePlan, ordered: Sequence[ShardFile]) -> Counter:
    import h5py

    status_counts: Counter = Counter()
    needed = sum(os.path.getsize(f.path) for f in ordered)
    with replaced_atomically(output, int(needed * 1.25) + (1 << 20)) as temporary:
        with h5py.File(temporary, "w") as merged:
            _create_like(merged, ordered)
            filled: Dict[str, int] = {}
            video_rows = 0
            for shard_file in ordered:
                with open_for_reading(shard_file.path) as source:
                    _copy_rows(source, merged, filled, video_rows)
                    status_counts.update(source["videos/status"].asstr()[...])
                video_rows += len(shard_file.ids)
            merged.attrs["complete"] = (not plan.missing and not plan.incomplete
                                        and all(f.complete for f in ordered))
            merged.attrs["n_inputs"] = sum(f.n_inputs for f in ordered)
            merged.attrs["merged_shard_count"] = plan.count
            merged.attrs["missing_shards"] = np.array(plan.missing, np.int64)
            merged.attrs["incomplete_shards"] = np.array(plan.incomplete, np.int64)
    return status_counts


def _create_like(merged, ordered: Sequence[ShardFile]) -> None:
    """Root attributes and row datasets shaped like the first shard's, sized for all."""
    totals: Counter = Counter()
    for shard_file in ordered:
        with open_for_reading(shard_file.path) as handle:
            for group_name in ROW_GROUPS:
                if group_name in handle:
                    for name, dataset in handle[group_name].items():
                        totals[f"{group_name}/{name}"] += dataset.shape[0]
    with open_for_reading(ordered[0].path) as first:
        for key, value in first.attrs.items():
            if key not in _SHARD_ATTRS:
                merged.attrs[key] = value
        for group_name in ROW_GROUPS:
            if group_name not in first:
                continue
            group = merged.create_group(group_name)
            group.attrs.update(first[group_name].attrs)
            for name, dataset in first[group_name].items():
                copy = group.create_dataset(
                    name, shape=(totals[f"{group_name}/{name}"],) + dataset.shape[1:],
                    dtype=dataset.dtype, maxshape=(None,) + dataset.shape[1:],
                    chunks=dataset.chunks, compression=dataset.compression,
                    compression_opts=dataset.compression_opts, shuffle=dataset.shuffle,
                    fletcher32=dataset.fletcher32)
                copy.attrs.update(dataset.attrs)


def _copy_rows(source, merged, filled: Dict[str, int], video_rows: int) -> None:
    """Append every row dataset of one shard after the rows ``filled`` so far.

    ``clips/video`` points at rows of ``videos/*``; the shard's rows start at
    ``video_rows`` in the merged file.
    """
    for group_name in ROW_GROUPS:
        if group_name not in source:
            continue
        for name, dataset in source[group_name].items():
            key = f"{group_name}/{name}"
            target, start = merged[key], filled.get(key, 0)
            row_bytes = dataset.dtype.itemsize * int(np.prod(dataset.shape[1:], dtype=np.int64))
            step = max(1, _COPY_BYTES // max(1, row_bytes))
            for begin in range(0, dataset.shape[0], step):
                values = dataset[begin:begin + step]
                if key == "clips/video":
                    values = values + video_rows
                target[start + begin:start + begin + len(values)] = values
            filled[key] = start + dataset.shape[0]
