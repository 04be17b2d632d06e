"""The HDF5 feature file: how runs write it without ever losing work, and how it is read.

Layout (other commands read these names)::

    /                attrs: format, format_version, c3d_extract_version, the run
                     parameters (layers, clip_len, stride, short_policy, weights,
                     weights_sha256, preprocessing JSON, precision, per_clip; crops
                     and crop_order only with --crops 5 or 10, target_fps only with
                     --fps),
                     complete, n_inputs; shard files (``--shard I/N``) also
                     shard_index, shard_count (see ``sharding``); merged files
                     merged_shard_count, missing_shards, incomplete_shards
                     (see ``merge``)
    videos/id        variable-length UTF-8, one row per video
    videos/status    ok | padded | looped | skipped | error
    videos/error     message, empty unless status is error (or damage let through by
                     --allow-damaged)
    videos/n_frames, n_clips, fps, width, height  (fps: the source's frame rate; with
                     --fps, n_frames counts the resampled frames the clips are cut from)
    videos/codec, decoder   the stream's codec; the backend that decoded it
    videos/declared_frames  the frame count the container declares (0: none)
    videos/notes     warnings and decoder notes, one per line
    videos/zero_descriptor  1 where every clip feature was zero (the row stays zero)
    features/<layer> float32 (n_videos, dim), L2-normalised; zeros without features
    clips/<layer>    float32 (n_clips, dim), raw per-clip features (--per-clip); with
                     --crops 5 or 10 (n_clips, crops, dim), crops in the order of the
                     root attribute crop_order (attribute crops)
    clips/video      row in videos/id of each clip; clips/start_frame

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

import contextlib
import os
import uuid
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence,
                    Tuple)

import numpy as np

from c3d_extract import __version__
from c3d_extract.errors import ParameterMismatchError, StoreError
from c3d_extract.hdf5_checks import check_hdf5
from c3d_extract.store.inplace import changed_in_place, open_fileobj, recover
from c3d_extract.store.journal import Journal
from c3d_extract.store.locking import OutputLock
from c3d_extract.store.records import WITH_FEATURES, RunParameters, VideoRecord
from c3d_extract.device.sharding import Shard

FORMAT = "c3d-features"
FORMAT_VERSION = 1
_VIDEO_COLUMNS: Dict[str, Any] = {
    "n_frames": np.int64, "n_clips": np.int64, "fps": np.float64,
    "width": np.int32, "height": np.int32, "zero_descriptor": np.uint8,
    "declared_frames": np.int64,
}
#: Text columns of ``videos/``.
_TEXT_COLUMNS = ("id", "status", "error", "codec", "decoder", "notes")
#: Columns absent from files of earlier versions, and their value for those files' videos.
_LATER_COLUMNS: Dict[str, Any] = {"codec": "", "decoder": "", "notes": "",
                                  "declared_frames": 0}
_ROWS_PER_WRITE = 256


def _h5py():
    import h5py
    return h5py


# ---------------------------------------------------------------- reading

#: What h5py raises on a damaged file, besides ``OSError``: the file is then not usable.
_DAMAGED = (OSError, KeyError, ValueError, TypeError, IndexError, RuntimeError, AttributeError,
            UnicodeDecodeError)


@contextlib.contextmanager
def open_for_reading(path: str) -> Iterator[Any]:
    """An open feature file; any failure while reading it becomes a ``StoreError``."""
    h5py = _h5py()
    view = None
    try:
        # A commit killed after its commit point is read as committed (see ``inplace``).
        view = open_fileobj(path)
        handle = h5py.File(view if view is not None else path, "r")
    except FileNotFoundError:
        raise StoreError(f"no such feature file: {path}") from None
    except _DAMAGED as error:
        if view is not None:
            view.close()
        raise StoreError(f"cannot read {path} as HDF5: {_one_line(error)}") from None
    try:
        try:
            is_ours = handle.attrs.get("format") == FORMAT
        except _DAMAGED:
            is_ours = False
        if not is_ours:
            raise StoreError(f"{path} is not a c3d-extract feature file "
                             f"(no format = {FORMAT!r})")
        try:
            check_hdf5(handle, path, StoreError)
        except _DAMAGED as error:
            raise StoreError(f"{path} is damaged or incomplete: {_one_line(error)}") from None
        try:
            yield handle
        except _DAMAGED as error:
            raise StoreError(f"{path} is damaged or incomplete: {_one_line(error)}") from None
    finally:
        try:
            handle.close()
        except _DAMAGED:
            pass
        if view is not None:
            view.close()


def read_attributes(path: str) -> Dict[str, Any]:
    """The root attributes of a feature file, as plain Python values."""
    with open_for_reading(path) as handle:
        return {k: _plain(v) for k, v in handle.attrs.items()}


def read_video_table(path: str) -> Dict[str, np.ndarray]:
    """Every ``videos/*`` column; ``id``, ``status`` and ``error`` as arrays of str."""
    with open_for_reading(path) as handle:
        return _video_table(handle)


def read_features(path: str, layer: str = "fc6", *,
                  only_with_features: bool = False) -> Tuple[List[str], np.ndarray]:
    """``(ids, matrix)``: video ids and their L2-normalised descriptors (float32).

    With ``only_with_features`` the rows of skipped and failed videos are left out.
    """
    with open_for_reading(path) as handle:
        dataset = _layer_dataset(handle, "features", layer, path)
        ids = list(handle["videos/id"].asstr()[...])
        _check_rows(path, f"features/{layer}", dataset, len(ids))
        if not only_with_features:
            return ids, dataset[...].astype(np.float32, copy=False)
        status = handle["videos/status"].asstr()[...]
        keep = np.flatnonzero(np.isin(status, WITH_FEATURES))
        matrix = dataset[...][keep] if len(keep) else np.zeros((0, dataset.shape[1]), np.float32)
        return [ids[i] for i in keep], matrix.astype(np.float32, copy=False)


def iter_feature_chunks(path: str, layer: str = "fc6",
                        rows: int = 4096) -> Iterator[Tuple[List[str], np.ndarray]]:
    """The descriptors in chunks of ``rows``, for data larger than memory."""
    with open_for_reading(path) as handle:
        dataset = _layer_dataset(handle, "features", layer, path)
        ids = handle["videos/id"].asstr()
        for start in range(0, dataset.shape[0], rows):
            stop = min(start + rows, dataset.shape[0])
            yield list(ids[start:stop]), dataset[start:stop].astype(np.float32, copy=False)


def read_clip_features(path: str, layer: str = "fc6") -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(video_row, start_frame, matrix)`` of the per-clip features (``--per-clip`` runs)."""
    with open_for_reading(path) as handle:
        dataset = _layer_dataset(handle, "clips", layer, path)
        return (handle["clips/video"][...], handle["clips/start_frame"][...],
                dataset[...].astype(np.float32, copy=False))


def _layer_dataset(handle, group: str, layer: str, path: str):
    if group not in handle or layer not in handle[group]:
        present = sorted(handle[group].keys()) if group in handle else []
        what = "per-clip features" if group == "clips" else "features"
        raise StoreError(f"{path} has no {what} for layer {layer!r}"
                         f" (it has: {', '.join(present) or 'none'})")
    return handle[group][layer]


def _video_table(handle) -> Dict[str, np.ndarray]:
    videos = handle["videos"]
    table = {name: videos[name].asstr()[...] for name in _TEXT_COLUMNS if name in videos}
    table.update({name: videos[name][...] for name in _VIDEO_COLUMNS if name in videos})
    for name, value in _LATER_COLUMNS.items():
        if name not in table:
            dtype = _VIDEO_COLUMNS.get(name, object)
            table[name] = np.full(len(table["id"]), value, dtype=dtype)
    for name, column in table.items():
        _check_rows(handle.filename, f"videos/{name}", column, len(table["id"]))
    return table


def _check_rows(path: str, name: str, dataset, n_videos: int) -> None:
    """A column must have one row per video: a damaged file may not."""
    expected_ndim = 2 if name.startswith("features/") else 1
    if len(dataset.shape) != expected_ndim or dataset.shape[0] != n_videos:
        raise StoreError(f"{path} is damaged: {name} has shape {tuple(dataset.shape)} for "
                         f"{n_videos} videos")


def recorded_shard(attrs: Dict[str, Any]) -> Optional[Shard]:
    """The shard a file's root attributes say it holds, or None for a whole run."""
    if "shard_index" not in attrs or "shard_count" not in attrs:
        return None
    return Shard(int(attrs["shard_index"]), int(attrs["shard_count"]))


def _describe_shard(shard: Optional[Shard]) -> str:
    return "all videos" if shard is None else f"shard {shard}"


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


# ---------------------------------------------------------------- writing

def _create_layout(handle, params: RunParameters, dims: Dict[str, int]) -> None:
    h5py = _h5py()
    text = h5py.string_dtype("utf-8")
    videos = handle.create_group("videos")
    for name in _TEXT_COLUMNS:
        videos.create_dataset(name, (0,), dtype=text, maxshape=(None,), chunks=(1024,))
    for name, dtype in _VIDEO_COLUMNS.items():
        videos.create_dataset(name, (0,), dtype=dtype, maxshape=(None,), chunks=(1024,))
    features = handle.create_group("features")
    for layer in params.layers:
        features.create_dataset(layer, (0, dims[layer]), dtype=np.float32,
                                maxshape=(None, dims[layer]), chunks=(64, dims[layer]))
    if params.per_clip:
        clips = handle.create_group("clips")
        for layer in params.layers:
            row = (dims[layer],) if params.crops == 1 else (params.crops, dims[layer])
            clips.create_dataset(layer, (0,) + row, dtype=np.float32, maxshape=(None,) + row,
                                 chunks=(max(1, 64 // params.crops),) + row)
        for name in ("video", "start_frame"):
            clips.create_dataset(name, (0,), dtype=np.int64, maxshape=(None,), chunks=(4096,))
    handle.attrs["format"] = FORMAT
    handle.attrs["format_version"] = FORMAT_VERSION
    handle.attrs["encoding-type"] = FORMAT
    handle.attrs["encoding-version"] = str(FORMAT_VERSION)
    for key, value in params.to_attrs().items():
        handle.attrs[key] = value
    for key, value in params.preprocessing_rules().items():
        handle.attrs[key] = value  # descriptive: derived from the preprocessing JSON
    handle.attrs["complete"] = False
    handle.attrs["n_inputs"] = 0


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
        for name, dtype in _VIDEO_COLUMNS.items():
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


def fsync_path(path: str, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_output_location(path: str) -> None:
    """Raise ``StoreError`` unless ``path``'s folder exists and is writable (cheap: runs
    before the network is built, so a mistyped output fails at once)."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise StoreError(f"{directory} is not a directory, so {path} cannot be written in it")
    if not os.path.isdir(directory):
        raise StoreError(f"the output directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise StoreError(f"the output directory {directory} is not writable")


def check_parameters(recorded: RunParameters, requested: RunParameters, where: str) -> None:
    """Raise ``ParameterMismatchError`` naming every field in which ``requested`` differs
    from the parameters ``where`` (a file or journal) was made with."""
    differences = recorded.differences(requested)
    if differences:
        raise ParameterMismatchError(
            f"{where} was made with other parameters ({'; '.join(differences)}); "
            "rerun with the same options, choose another output, or pass --overwrite "
            "to replace it")


def check_shard(recorded: Optional[Shard], requested: Optional[Shard], where: str) -> None:
    if recorded != requested:
        raise ParameterMismatchError(
            f"{where} holds {_describe_shard(recorded)}, this run "
            f"{_describe_shard(requested)}; rerun with the same --shard, choose another "
            "output, or pass --overwrite to replace it")


def _journal_header(journal: Journal) -> Optional[Dict[str, Any]]:
    for meta, _ in journal.records():
        if meta.get("kind") == "header":
            return meta
    return None


def _header_shard(header: Dict[str, Any]) -> Optional[Shard]:
    shard = header.get("shard")
    return Shard(*shard) if shard else None


def _journal_folded(path: str, header: Optional[Dict[str, Any]]) -> bool:
    """Whether the journal with ``header`` was already folded into the output (its commit
    finished; the process died before removing it)."""
    return header is not None and bool(header.get("token")) and os.path.exists(path) \
        and read_attributes(path).get("folded_journal") == header["token"]


def check_rerun(path: str, requested: Callable[[RunParameters], RunParameters],
                shard: Optional[Shard] = None) -> None:
    """Refuse at once a run that the existing output ``path`` (or its unfinished run's
    journal) would refuse, before the run loads weights or converts a network.

    ``requested(recorded)`` gives the parameters of this run as far as they are known
    before the network is loaded, the others copied from ``recorded``. The message is
    the one ``FeatureStore`` gives. Read without the lock and only as a first look:
    anything unreadable is left for ``FeatureStore``, which checks again when it opens.
    """
    path = os.path.abspath(path)
    try:
        header = _journal_header(Journal(path + ".journal"))
        folded = _journal_folded(path, header)
    except (StoreError, OSError, KeyError, ValueError):
        return
    replaces_output = False
    if header is not None and not folded:
        try:
            recorded = RunParameters.from_attrs(header["params"])
        except (KeyError, TypeError, ValueError):
            return
        where = f"the unfinished run's journal {path}.journal"
        check_parameters(recorded, requested(recorded), where)
        check_shard(_header_shard(header), shard, where)
        replaces_output = bool(header.get("replaces_output", False))
    if os.path.exists(path) and not replaces_output:
        try:
            attrs = read_attributes(path)
            recorded = RunParameters.from_attrs(attrs)
        except (StoreError, OSError, KeyError, TypeError, ValueError):
            return
        where = f"the existing output {path}"
        check_parameters(recorded, requested(recorded), where)
        check_shard(recorded_shard(attrs), shard, where)


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
        if _journal_folded(self.path, header):
            self.journal.remove()  # its commit finished; the process died before removing it
            header = None
        if header is not None:
            where = f"the unfinished run's journal {self.journal.path}"
            recorded = RunParameters.from_attrs(header["params"])
            check_parameters(recorded, self.params, where)
            check_shard(_header_shard(header), self.shard, where)
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
        return _journal_header(self.journal)

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
        chunks += 2 * 1024 * 8 * (len(_VIDEO_COLUMNS) + len(_TEXT_COLUMNS)) + 2 * 4096 * 8
        return 2 * journal + chunks + (1 << 20)

    def commit(self, *, complete: bool, n_inputs: int) -> None:
        """Fold the journal into the output file atomically: a new output through a
        temporary file, an existing one in place (``inplace``)."""
        self.journal.sync()
        if self._base_exists and not self.overwrite and self._added_since_commit == 0 \
                and not self._journal_holds_videos():
            attrs = read_attributes(self.path)
            if attrs.get("complete") == complete and attrs.get("n_inputs") == n_inputs:
                return  # nothing new: leave the file as it is
        h5py = _h5py()
        header = self._journal_header() or {}
        if self._base_exists and not self.overwrite:
            try:
                reserve_space(temporary_path(self.path) + ".space",
                              self._commit_growth_bound())
                row_of = dict(self._row_of)  # kept only if the commit succeeds
                with changed_in_place(self.path) as fileobj:
                    with h5py.File(fileobj, "r+") as handle:
                        self._fold_journal(handle, row_of, complete, n_inputs,
                                           header.get("token"))
            except (OSError, RuntimeError) as error:  # h5py reports failed writes as either
                raise StoreError(f"cannot write {self.path}: {_one_line(error)}") from None
        else:
            row_of = {}
            with replaced_atomically(self.path, self._commit_growth_bound()) as temporary:
                with h5py.File(temporary, "w") as handle:
                    _create_layout(handle, self.params, self.dims)
                    self._fold_journal(handle, row_of, complete, n_inputs,
                                       header.get("token"))
        self._row_of = row_of
        self._base_exists = True
        self.overwrite = False
        self.journal.remove()
        self.journal.open_for_append()
        self._write_journal_header()
        self._added_since_commit = 0

    def _fold_journal(self, handle, row_of: Dict[str, int], complete: bool, n_inputs: int,
                      token: Optional[str]) -> None:
        """Write the journal's videos and the run's attributes into an open output;
        ``row_of`` (the output's rows by id) gains the new rows."""
        videos = handle["videos"]
        for name, value in _LATER_COLUMNS.items():
            if name not in videos:  # a file of an earlier version: unknown for its videos
                dtype = _VIDEO_COLUMNS.get(name, _h5py().string_dtype("utf-8"))
                videos.create_dataset(name, data=np.full(videos["id"].shape[0], value,
                                                         object if name in _TEXT_COLUMNS
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


def reserve_space(path: str, nbytes: int) -> None:
    """Raise ``OSError`` (ENOSPC, EFBIG...) unless a file of ``nbytes`` can be written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.posix_fallocate(fd, 0, max(nbytes, 1))
    finally:
        os.close(fd)
        remove_quietly(path)


@contextlib.contextmanager
def replaced_atomically(path: str, growth_bound: int) -> Iterator[str]:
    """Yield a temporary file beside ``path`` to write; when the block succeeds, fsync it
    and rename it over ``path``.

    On any failure ``path`` is left as it was and the temporary file is removed; write
    errors become one-line ``StoreError``. HDF5 cannot recover from a write that fails
    for want of space (h5py then crashes the process), so the room for ``growth_bound``
    bytes is reserved first, where failing is clean.
    """
    temporary = temporary_path(path)
    try:
        reserve_space(temporary + ".space", growth_bound)
        yield temporary
        fsync_path(temporary)
        os.replace(temporary, path)
        fsync_path(os.path.dirname(os.path.abspath(path)), directory=True)
    except (OSError, RuntimeError) as error:  # h5py reports failed writes as either
        remove_quietly(temporary)
        raise StoreError(f"cannot write {path}: {_one_line(error)}") from None
    except BaseException:
        remove_quietly(temporary)
        raise


def _one_line(error: BaseException) -> str:
    """An OS or HDF5 error on one line, its errno text first when it has one."""
    text = " ".join(str(error).split())
    reason = getattr(error, "strerror", None)
    if reason and reason not in text:
        text = f"{reason} ({text})"
    return text[:400]


def temporary_path(path: str) -> str:
    """Where a new version of ``path`` is written before it is renamed over it."""
    return f"{path}.tmp-{os.getpid()}"


def remove_stale_temporaries(path: str) -> None:
    """Remove the temporaries of ``path`` left by killed writers; call with its lock held."""
    directory, name = os.path.split(path)
    for entry in os.listdir(directory):
        if entry.startswith(name + ".tmp-"):
            remove_quietly(os.path.join(directory, entry))


def remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def feature_dims(layers: Iterable[str], dim_of) -> Dict[str, int]:
    """``{layer: dim}`` using ``dim_of(layer)`` (e.g. ``C3D.feature_dim``)."""
    return {layer: int(dim_of(layer)) for layer in layers}


def check_resumable(path: str, params: RunParameters, fields: Sequence[str]) -> None:
    """Raise ``ParameterMismatchError`` if the existing output ``path`` was made with other
    values of ``fields`` than ``params``: a cheap look before the network is built. The
    store checks every field again when it opens."""
    if not os.path.exists(path):
        return
    try:
        recorded = RunParameters.from_attrs(read_attributes(path))
    except (StoreError, KeyError, ValueError):
        return  # not readable now: the store, under its lock, says why
    differences = [text for text in recorded.differences(params)
                   if text.split(":", 1)[0] in fields]
    if differences:
        raise ParameterMismatchError(
            f"the existing output {path} was made with other parameters "
            f"({'; '.join(differences)}); rerun with the same options, choose another "
            "output, or pass --overwrite to replace it")


def describe(path: str) -> Optional[str]:
    """One line about an existing feature file, or None if there is none."""
    if not os.path.exists(path):
        return None
    attrs = read_attributes(path)
    table = read_video_table(path)
    errors = int(np.sum(table["status"] == "error"))
    return (f"{len(table['id'])} videos ({errors} errors), layers {attrs.get('layers')}, "
            f"weights {attrs.get('weights')}")
