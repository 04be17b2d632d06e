"""Reading a feature file: every failure of a damaged file becomes one ``StoreError``."""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from c3d_extract.atomic_files import one_line
from c3d_extract.device.sharding import Shard
from c3d_extract.errors import StoreError
from c3d_extract.hdf5_checks import check_hdf5
from c3d_extract.store.inplace import open_fileobj
from c3d_extract.store.layout import (FORMAT, LATER_COLUMNS, TEXT_COLUMNS, VIDEO_COLUMNS,
                                      h5py_module, plain_value)
from c3d_extract.store.records import WITH_FEATURES

#: What h5py raises on a damaged file, besides ``OSError``: the file is then not usable.
_DAMAGED = (OSError, KeyError, ValueError, TypeError, IndexError, RuntimeError, AttributeError,
            UnicodeDecodeError)


@contextlib.contextmanager
def open_for_reading(path: str) -> Iterator[Any]:
    """An open feature file; any failure while reading it becomes a ``StoreError``."""
    h5py = h5py_module()
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
        raise StoreError(f"cannot read {path} as HDF5: {one_line(error)}") from None
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
            raise StoreError(f"{path} is damaged or incomplete: {one_line(error)}") from None
        try:
            yield handle
        except _DAMAGED as error:
            raise StoreError(f"{path} is damaged or incomplete: {one_line(error)}") from None
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
        return {k: plain_value(v) for k, v in handle.attrs.items()}


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
    table = {name: videos[name].asstr()[...] for name in TEXT_COLUMNS if name in videos}
    table.update({name: videos[name][...] for name in VIDEO_COLUMNS if name in videos})
    for name, value in LATER_COLUMNS.items():
        if name not in table:
            dtype = VIDEO_COLUMNS.get(name, object)
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
