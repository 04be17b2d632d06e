"""Writing a feature file without ever losing work: the ``FeatureStore``.

Writing: finished videos go to an append-only checksummed journal
(``<output>.journal``), fsynced as they finish. ``commit`` folds the journal into
the output: a new output is written to a temporary file, fsynced and renamed into
place; an existing one is appended to in place behind a redo log (``inplace``), so
a commit costs what it adds, not a copy of the file. The file records the journal
it folded (attribute ``folded_journal``), so a journal that outlived its commit is
recognised and dropped. A killed run therefore leaves the previous output intact
(or the new one) plus a journal that the next run picks up.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np

from c3d_extract import __version__
from c3d_extract.atomic_files import (one_line, remove_stale_temporaries, replaced_atomically,
                                      reserve_space, temporary_path)
from c3d_extract.device.sharding import Shard
from c3d_extract.errors import StoreError
from c3d_extract.store.inplace import changed_in_place, recover
from c3d_extract.store.journal import Journal
from c3d_extract.store.layout import (LATER_COLUMNS, TEXT_COLUMNS, VIDEO_COLUMNS, create_layout,
                                      h5py_module)
from c3d_extract.store.locking import OutputLock
from c3d_extract.store.read import open_for_reading, read_attributes, recorded_shard
from c3d_extract.store.records import RunParameters, VideoRecord
from c3d_extract.store.rerun_checks import (check_output_location, check_parameters, check_shard,
                                            header_shard, journal_folded, journal_header)

_ROWS_PER_WRITE = 256


# ---------------------------------------------------------------- reading


# ---------------------------------------------------------------- writing


def _append(dataset, values: np.ndarray) -> int:
    start = dataset.shape[0]
    dataset.resize(start + len(values), axis=0)
    dataset[start:] = values
    return start


def _write_records(handle, records: Sequence[VideoRecord], dims: Dict[str, int],
                   row_of: Dict[str, int], params: RunParameters) -> None:
    """Append new videos and replace rows of videos written before (retried errors)."""
    videos, features = handle["videos"], handle["features"]
    new = [r for r in records if r.id not in row_of]
    replaced = [r for r in records if r.id in row_of]
    if new:
        start = _append(videos["id"], np.array([r.id for r in new], dtype=object))
        for i, record in enumerate(new):
            row_of[record.id] = start + i
    for rows, batch in ((None, new), ([row_of[r.id] for r in replaced], replaced)):
        if not batch:
            continue
        columns: Dict[str, np.ndarray] = {
            "status": np.array([r.status for r in batch], dtype=object),
            "error": np.array([r.error for r in batch], dtype=object),
            "codec": np.array([r.codec for r in batch], dtype=object),
            "decoder": np.array([r.decoder for r in batch], dtype=object),
            "notes": np.array([r.notes for r in batch], dtype=object),
        }
        for name, dtype in VIDEO_COLUMNS.items():
            columns[name] = np.array([getattr(r, name) for r in batch], dtype=dtype)
        for layer in params.layers:
            matrix = np.zeros((len(batch), dims[layer]), np.float32)
            for i, record in enumerate(batch):
                if layer in record.features:
                    matrix[i] = record.features[layer]
            columns[layer] = matrix
        for name, values in columns.items():
            dataset = features[name] if name in params.layers else videos[name]
            if rows is None:
                _append(dataset, values)
            else:
                for row, value in zip(rows, values):
                    dataset[row] = value
    if params.per_clip:
        _write_clip_rows(handle["clips"], records, row_of, params.layers)


def _write_clip_rows(clips, records: Sequence[VideoRecord], row_of: Dict[str, int],
                     layers: Sequence[str]) -> None:
    with_clips = [r for r in records if r.clip_starts is not None and len(r.clip_starts)]
    if not with_clips:
        return
    _append(clips["video"], np.concatenate(
        [np.full(len(r.clip_starts), row_of[r.id], np.int64) for r in with_clips]))
    _append(clips["start_frame"], np.concatenate([r.clip_starts for r in with_clips]))
    for layer in layers:
        _append(clips[layer], np.concatenate([r.clip_features[layer] for r in with_clips]))


class FeatureStore:
    """The writer of one output file: lock, resume, journal, atomic commit.

    Use as a context manager; ``done`` maps ids already in the file or journal
    to their status, so a rerun skips them. A ``shard`` is recorded in the file
    and must match when it is resumed.
    """

    def __init__(self, path: str, params: RunParameters, dims: Dict[str, int], *,
                 overwrite: bool = False, shard: Optional[Shard] = None) -> None:
        self.path = os.path.abspath(path)
        self.params = params
        self.shard = shard
        self.dims = dims
        self.overwrite = overwrite
        self.journal = Journal(self.path + ".journal")
        self.lock = OutputLock(self.path)
        self.done: Dict[str, str] = {}
        self._base_exists = False
        self._added_since_commit = 0
        #: Row of each video in the output, read once at open and kept up to date, so
        #: that a commit in place does not read every id again.
        self._row_of: Dict[str, int] = {}

    # -- lifecycle

    def open(self) -> "FeatureStore":
        check_output_location(self.path)
        self.lock.acquire()
        try:
            self._remove_stale_temporaries()
            recover(self.path)  # a commit killed in place is finished or undone
            if self.overwrite:
                self.journal.remove()
            else:
                self._load_existing()
            self.journal.open_for_append()
            if self._journal_header() is None:
                self._write_journal_header()
        except BaseException:
            self.journal.close()
            self.lock.release()
            raise
        return self

    def close(self) -> None:
        self.journal.close()
        if os.path.exists(self.journal.path) and self._added_since_commit == 0 \
                and not self._journal_holds_videos():
            self.journal.remove()
        self.lock.release()

    def __enter__(self) -> "FeatureStore":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- resume

    def _load_existing(self) -> None:
        header = self._journal_header()
        if journal_folded(self.path, header):
            self.journal.remove()  # its commit finished; the process died before removing it
            header = None
        if header is not None:
            where = f"the unfinished run's journal {self.journal.path}"
            recorded = RunParameters.from_attrs(header["params"])
            check_parameters(recorded, self.params, where)
            check_shard(header_shard(header), self.shard, where)
            # An interrupted --overwrite run: its journal replaces the old output.
            self.overwrite = bool(header.get("replaces_output", False))
        if os.path.exists(self.path) and not self.overwrite:
            with open_for_reading(self.path) as handle:
                where = f"the existing output {self.path}"
                check_parameters(RunParameters.from_attrs(dict(handle.attrs)), self.params,
                                 where)
                check_shard(recorded_shard(dict(handle.attrs)), self.shard, where)
                table = handle["videos"]
                ids = table["id"].asstr()[...]
                self.done.update(zip(ids, table["status"].asstr()[...]))
                self._row_of = {video_id: row for row, video_id in enumerate(ids)}
            self._base_exists = True
        for record in self._journal_videos():
            self.done[record.id] = record.status

    def _journal_header(self) -> Optional[Dict[str, Any]]:
        return journal_header(self.journal)

    def _write_journal_header(self) -> None:
        shard = None if self.shard is None else [self.shard.index, self.shard.count]
        self.journal.append({"kind": "header", "params": self.params.to_attrs(),
                             "replaces_output": self.overwrite, "shard": shard,
                             "token": uuid.uuid4().hex}, {})
        self.journal.sync()

    def _journal_holds_videos(self) -> bool:
        return any(meta.get("kind") != "header" for meta, _ in self.journal.records())

    def _journal_videos(self) -> Iterator[VideoRecord]:
        for meta, arrays in self.journal.records():
            if meta.get("kind") != "header":
                yield VideoRecord.from_parts(meta, arrays)

    def _remove_stale_temporaries(self) -> None:
        remove_stale_temporaries(self.path)

    # -- writing

    def add(self, record: VideoRecord) -> None:
        """Record a finished video in the journal (durable after ``sync``)."""
        self.journal.append(record.metadata(), record.arrays())
        self.done[record.id] = record.status
        self._added_since_commit += 1

    def sync(self) -> None:
        self.journal.sync()

    def _commit_growth_bound(self) -> int:
        """More bytes than a commit adds to the output: the journal's data twice, a whole
        chunk per growing dataset and 1 MB for HDF5's own records."""
        journal = os.path.getsize(self.journal.path) if self.journal.exists() else 0
        row_bytes = sum(4 * dim for dim in self.dims.values())
        chunks = 64 * row_bytes * ((1 + self.params.crops) if self.params.per_clip else 1)
        chunks += 2 * 1024 * 8 * (len(VIDEO_COLUMNS) + len(TEXT_COLUMNS)) + 2 * 4096 * 8
        return 2 * journal + chunks + (1 << 20)

    def commit(self, *, complete: bool, n_inputs: int,
               attrs: Optional[Dict[str, Any]] = None) -> None:
        """Fold the journal into the output file atomically: a new output through a
        temporary file, an existing one in place (``inplace``). ``attrs`` are further
        file attributes, written in the same commit (never changed after it in place)."""
        self.journal.sync()
        if self._base_exists and not self.overwrite and self._added_since_commit == 0 \
                and not attrs and not self._journal_holds_videos():
            attrs = read_attributes(self.path)
            if attrs.get("complete") == complete and attrs.get("n_inputs") == n_inputs:
                return  # nothing new: leave the file as it is
        h5py = h5py_module()
        header = self._journal_header() or {}
        if self._base_exists and not self.overwrite:
            try:
                reserve_space(temporary_path(self.path) + ".space",
                              self._commit_growth_bound())
                row_of = dict(self._row_of)  # kept only if the commit succeeds
                with changed_in_place(self.path) as fileobj:
                    with h5py.File(fileobj, "r+") as handle:
                        self._fold_journal(handle, row_of, complete, n_inputs,
                                           header.get("token"), attrs)
            except (OSError, RuntimeError) as error:  # h5py reports failed writes as either
                raise StoreError(f"cannot write {self.path}: {one_line(error)}") from None
        else:
            row_of = {}
            with replaced_atomically(self.path, self._commit_growth_bound()) as temporary:
                with h5py.File(temporary, "w") as handle:
                    create_layout(handle, self.params, self.dims)
                    self._fold_journal(handle, row_of, complete, n_inputs,
                                       header.get("token"), attrs)
        self._row_of = row_of
        self._base_exists = True
        self.overwrite = False
        self.journal.remove()
        self.journal.open_for_append()
        self._write_journal_header()
        self._added_since_commit = 0

    def _fold_journal(self, handle, row_of: Dict[str, int], complete: bool, n_inputs: int,
                      token: Optional[str], attrs: Optional[Dict[str, Any]] = None) -> None:
        """Write the journal's videos and the run's attributes into an open output;
        ``row_of`` (the output's rows by id) gains the new rows."""
        videos = handle["videos"]
        for name, value in LATER_COLUMNS.items():
            if name not in videos:  # a file of an earlier version: unknown for its videos
                dtype = VIDEO_COLUMNS.get(name, h5py_module().string_dtype("utf-8"))
                videos.create_dataset(name, data=np.full(videos["id"].shape[0], value,
                                                         object if name in TEXT_COLUMNS
                                                         else dtype),
                                      dtype=dtype, maxshape=(None,), chunks=(1024,))
        if len(row_of) != videos["id"].shape[0]:
            raise StoreError(f"{self.path} changed while this run held its lock")
        pending: List[VideoRecord] = []
        for record in self._journal_videos():
            pending.append(record)
            if len(pending) >= _ROWS_PER_WRITE:
                _write_records(handle, pending, self.dims, row_of, self.params)
                pending = []
        _write_records(handle, pending, self.dims, row_of, self.params)
        handle.attrs["complete"] = complete
        handle.attrs["n_inputs"] = n_inputs
        handle.attrs["c3d_extract_version"] = __version__
        handle.attrs["weights"] = self.params.weights
        if token:
            handle.attrs["folded_journal"] = token
        if self.shard is not None:
            handle.attrs["shard_index"] = self.shard.index
            handle.attrs["shard_count"] = self.shard.count
        handle.attrs.update(attrs or {})
