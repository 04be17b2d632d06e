"""The HDF5 feature file's layout, shared by its writer and its readers.

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
"""

from __future__ import annotations

from typing import Any, Dict, Iterable

import numpy as np

from c3d_extract.store.records import RunParameters

FORMAT = "c3d-features"


FORMAT_VERSION = 1


VIDEO_COLUMNS: Dict[str, Any] = {
    "n_frames": np.int64, "n_clips": np.int64, "fps": np.float64,
    "width": np.int32, "height": np.int32, "zero_descriptor": np.uint8,
    "declared_frames": np.int64,
}


#: Text columns of ``videos/``.
TEXT_COLUMNS = ("id", "status", "error", "codec", "decoder", "notes")


#: Columns absent from files of earlier versions, and their value for those files' videos.
LATER_COLUMNS: Dict[str, Any] = {"codec": "", "decoder": "", "notes": "",
                                 "declared_frames": 0}


def h5py_module():
    import h5py
    return h5py


def plain_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def create_layout(handle, params: RunParameters, dims: Dict[str, int]) -> None:
    h5py = h5py_module()
    text = h5py.string_dtype("utf-8")
    videos = handle.create_group("videos")
    for name in TEXT_COLUMNS:
        videos.create_dataset(name, (0,), dtype=text, maxshape=(None,), chunks=(1024,))
    for name, dtype in VIDEO_COLUMNS.items():
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


def feature_dims(layers: Iterable[str], dim_of) -> Dict[str, int]:
    """``{layer: dim}`` using ``dim_of(layer)`` (e.g. ``C3D.feature_dim``)."""
    return {layer: int(dim_of(layer)) for layer in layers}
