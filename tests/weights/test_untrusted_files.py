"""Hostile weights, feature, PCA and model files: each is crafted here (a few KB at most) and
must be refused with one line, no signal, no traceback, little memory, and without any byte
of a local file it points at reaching an output."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

MARKER = b"LOCAL-SECRET-MARKER-0123456789"


def _run(command, *args, env_extra=None, memory_limit=None):
    """Run a CLI entry point in a fresh interpreter; ``(returncode, output, peak RSS KiB)``."""
    code = textwrap.dedent(f"""
        import resource, sys
        limit = {memory_limit!r}
        if limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        from c3d_extract.cli.{command[0]} import {(command + ("cli",))[2]} as cli
        try:
            cli.main(args={list(args)!r}, prog_name={command[1]!r}, standalone_mode=True)
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        else:
            code = 0
        # VmHWM is this interpreter's own high-water mark; ru_maxrss would also count the
        # forked parent's pages (Linux keeps it across exec), i.e. the test runner's size.
        with open("/proc/self/status") as status:
            peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
        sys.stderr.write(f"\\nPEAK_KIB={{peak}}\\n")
        sys.stderr.flush()
        import os
        os._exit(code)
    """)
    env = dict(os.environ, **(env_extra or {}))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)
    output = done.stdout + done.stderr
    peak = [int(line.split("=")[1]) for line in output.splitlines()
            if line.startswith("PEAK_KIB=")]
    return done.returncode, output, (peak[0] if peak else None)


WEIGHTS = ("weights", "c3d-weights")


def _refused(path, *, words=(), command=WEIGHTS, args=None, env_extra=None):
    """Refused by ``command`` with exit 1 or 2, one-line message, peak memory under 1 GB."""
    code, output, peak = _run(command, *(args or ["info", str(path)]), env_extra=env_extra)
    message = output.split("PEAK_KIB=")[0].strip()
    assert code in (1, 2), (code, output)
    assert "Traceback" not in output, output
    assert len(message.splitlines()) == 1, output
    for word in words:
        assert word in message, output
    assert peak is not None and peak < 1024 * 1024, peak  # under 1 GB
    return message


# ---------------------------------------------------------------- pickles

def _torch_zip(path: Path, data_pkl: bytes, records=None, method=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", sys.byteorder)
        archive.writestr("archive/version", "3\n")
        for name, data in (records or {}).items():
            archive.writestr(f"archive/data/{name}", data, compress_type=zipfile.ZIP_STORED)
    return path


def _opcodes(*parts) -> bytes:
    return b"\x80\x02" + b"".join(parts) + b"."


def _text(value: str) -> bytes:
    return b"X" + struct.pack("<I", len(value.encode())) + value.encode()


def _global(module, name) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _object_dtype_array_pickle() -> bytes:
    """``{"a": set(array)}`` where the array's dtype is a copy of dtype('O') with its flags
    cleared: numpy's own __setstate__ would take the raw bytes for object pointers."""
    return _opcodes(
        _global("collections", "OrderedDict"), b")R",
        b"X\x01\x00\x00\x00a",
        _global("builtins", "set"),
        _global("numpy._core.multiarray", "_reconstruct"),
        _global("numpy", "ndarray"), b"K\x00\x85", b"C\x01b", b"\x87R",
        b"(K\x01K\x02\x85",
        _global("numpy", "dtype"), b"X\x02\x00\x00\x00O8", b"\x89\x88\x87R",
        b"(K\x03X\x01\x00\x00\x00|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb",
        b"\x89C\x10" + b"\x41" * 16, b"tb",
        b"\x85R",  # set(array): iterating it dereferences the bytes as object pointers
        b"s")


def test_object_dtype_array_is_refused_without_a_crash(tmp_path):
    path = _torch_zip(tmp_path / "object_array.pth", _object_dtype_array_pickle())
    assert path.stat().st_size < 4096
    message = _refused(path, words=("refusing",))
    assert "dtype" in message


def test_build_on_a_numpy_dtype_with_object_flags_is_refused(tmp_path):
    """A numeric dtype string but a state carrying fields: never handed to numpy."""
    data = _opcodes(
        _global("numpy", "dtype"), b"X\x02\x00\x00\x00f8", b"\x89\x88\x87R",
        b"(K\x03X\x01\x00\x00\x00<N}NJ\xff\xff\xff\xffJ\xff\xff\xff\xffK?tb")
    path = _torch_zip(tmp_path / "dtype_state.pth", data)
    _refused(path, words=("refusing",))


def test_deeply_nested_tuple_is_refused(tmp_path):
    data = _opcodes(b"N" + b"\x85" * 400_000)  # a tuple nested 400,000 deep
    path = _torch_zip(tmp_path / "nested.pth", data, method=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 4096
    _refused(path, words=("nested",))


def test_huge_bytearray_is_refused(tmp_path):
    data = _opcodes(_global("builtins", "bytearray"), b"\x8a\x05\x00\x5e\xd0\xb2\x01\x85R")
    path = _torch_zip(tmp_path / "bytearray.pth", data)
    _refused(path, words=("refusing",))


def test_legacy_pickle_with_a_bzip2_zip_appended_is_not_inflated(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_BZIP2) as archive:
        archive.writestr("archive/data.pkl", b"\x00" * 5_000_000)
    path = tmp_path / "appended.pth"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2) + buffer.getvalue())
    assert path.stat().st_size < 4096
    _refused(path)


def test_bzip2_member_in_a_zip_checkpoint_is_refused(tmp_path):
    path = _torch_zip(tmp_path / "bzip2.pth", b"\x80\x02N.", method=zipfile.ZIP_BZIP2)
    _refused(path, words=("method",))


def _tensor_pickle(size, stride, metadata=b"N", numel=4, dtype="FloatStorage") -> bytes:
    def ints(values):
        return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"

    return _opcodes(
        _global("collections", "OrderedDict"), b")R",
        _text("conv1a.bias"),
        _global("torch._utils", "_rebuild_tensor_v2"),
        b"((X\x07\x00\x00\x00storage", _global("torch", dtype),
        b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuJ" + struct.pack("<i", numel) + b"tQ",
        b"K\x00", ints(size), ints(stride), b"\x89", _global("collections", "OrderedDict"),
        b")R", metadata, b"tR", b"s")


def test_stride_zero_huge_tensor_is_refused(tmp_path):
    data = _tensor_pickle((40000, 40000), (0, 0))
    path = _torch_zip(tmp_path / "stride0.pth", data, {"0": b"\x00" * 16})
    _refused(path, words=("refusing",))


def test_non_dict_tensor_metadata_is_one_line(tmp_path):
    from c3d_extract.errors import WeightsError
    from c3d_extract.weights.unpickle import load_tensors_only

    data = _tensor_pickle((4,), (1,), metadata=b"K\x07")
    path = _torch_zip(tmp_path / "metadata.pth", data, {"0": b"\x00" * 16})
    _refused(path)
    with pytest.raises(WeightsError, match="metadata"):  # and in the restricted reader
        load_tensors_only(str(path))


def test_stride_zero_tensor_in_the_restricted_reader(tmp_path):
    """The same tensor next to an object torch.load refuses: read by our own reader."""
    from c3d_extract.errors import WeightsError
    from c3d_extract.weights.unpickle import load_tensors_only

    data = _tensor_pickle((40000, 40000), (0, 0))
    data = data[:-1] + _text("b") + _global("mmengine", "HistoryBuffer") + b")\x81s."
    path = _torch_zip(tmp_path / "stride0_mm.pth", data, {"0": b"\x00" * 16})
    with pytest.raises(WeightsError, match=r"size \(40000, 40000\)"):
        load_tensors_only(str(path))


def test_numeric_numpy_arrays_are_rebuilt_by_the_restricted_reader(tmp_path):
    """A checkpoint mixing tensors, a state dict with its metadata and numpy arrays loads."""
    from c3d_extract.weights.unpickle import load_tensors_only

    path = tmp_path / "mixed.pth"
    state_dict = torch.nn.Linear(3, 2).state_dict()  # an OrderedDict with _metadata
    payload = {"state_dict": {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)},
               "model": state_dict,
               "meta": {"arr": np.arange(4, dtype=">f8"), "scalar": np.float32(2.5)}}
    torch.save(payload, path)
    loaded = load_tensors_only(str(path))
    assert torch.equal(loaded["state_dict"]["w"], payload["state_dict"]["w"])
    assert torch.equal(loaded["model"]["weight"], state_dict["weight"])
    assert loaded["model"]._metadata == state_dict._metadata
    assert np.array_equal(loaded["meta"]["arr"], np.arange(4.0))
    assert loaded["meta"]["scalar"] == np.float32(2.5)


def test_int8_and_nan_weights_are_refused(tmp_path):
    from c3d_extract.errors import WeightsError
    from c3d_extract.weights.formats import torch_stored
    from c3d_extract.weights.loading import check_tensor_values

    with pytest.raises(WeightsError, match="int8"):
        torch_stored({"conv1a.weight": torch.zeros(4, dtype=torch.int8)}, "q.pth")
    with pytest.raises(WeightsError, match="1 NaN"):
        check_tensor_values({"fc6.bias": torch.tensor([0.0, float("nan")])}, "nan.pth")


# ---------------------------------------------------------------- Caffe

def test_caffe_blob_dims_whose_product_wraps_are_one_line(tmp_path):
    def varint(value):
        out = b""
        while True:
            byte = value & 0x7F
            value >>= 7
            if value:
                out += bytes([byte | 0x80])
            else:
                return out + bytes([byte])

    def field(number, payload):
        return varint(number << 3 | 2) + varint(len(payload)) + payload

    dims = b"".join(varint(1 << 3) + varint(d) for d in (1 << 32, 1 << 32))
    blob = field(7, dims) + field(5, b"")
    layer = field(1, b"conv1a") + field(2, b"Convolution") + field(7, blob) + field(7, blob)
    path = tmp_path / "wrap.caffemodel"
    path.write_bytes(field(100, layer))
    _refused(path, words=("Caffe",))


# ---------------------------------------------------------------- HDF5

def _marker_file(tmp_path) -> Path:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(MARKER * 4)
    return secret


def test_keras_bias_with_external_storage_is_refused_and_leaks_nothing(tmp_path):
    secret = _marker_file(tmp_path)
    path = tmp_path / "keras.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"conv1"]
        group = f.create_group("conv1")
        group.attrs["weight_names"] = [b"conv1/kernel:0", b"conv1/bias:0"]
        group.create_dataset("conv1/kernel:0", data=np.zeros((3, 3, 3, 3, 64), np.float32))
        group.create_dataset("conv1/bias:0", shape=(16,), dtype="u1",
                             external=[(str(secret), 0, 16)])
    cache = tmp_path / "cache"
    out = tmp_path / "out.safetensors"
    message = _refused(path, words=("external storage", "conv1/bias"),
                       args=["convert", str(path), "-o", str(out)],
                       env_extra={"C3D_EXTRACT_CACHE": str(cache)})
    assert "conv1" in message
    assert not out.exists()
    for written in [p for p in tmp_path.rglob("*") if p.is_file() and p != secret]:
        assert MARKER[:16] not in written.read_bytes(), written


def test_keras_kernel_declared_huge_is_refused(tmp_path):
    path = tmp_path / "huge.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"conv1"]
        group = f.create_group("conv1")
        group.attrs["weight_names"] = [b"conv1/kernel:0", b"conv1/bias:0"]
        group.create_dataset("conv1/kernel:0", shape=(3, 3, 3, 3, 20_000_000), dtype="f4",
                             chunks=(1, 1, 1, 1, 1024))
        group.create_dataset("conv1/bias:0", data=np.zeros(64, np.float32))
    assert path.stat().st_size < 16384
    _refused(path)


def test_soft_and_external_links_and_virtual_datasets_are_refused(tmp_path):
    from c3d_extract.errors import StoreError
    from c3d_extract.hdf5_checks import check_hdf5

    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("x", data=np.arange(4.0))
    for kind in ("soft", "external", "virtual"):
        path = tmp_path / f"{kind}.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("real", data=np.arange(4.0))
            if kind == "soft":
                f["features/fc6"] = h5py.SoftLink("/real")
            elif kind == "external":
                f["features/fc6"] = h5py.ExternalLink(str(other), "/x")
            else:
                layout = h5py.VirtualLayout(shape=(4,), dtype="f8")
                layout[:] = h5py.VirtualSource(str(other), "x", shape=(4,))
                f.create_virtual_dataset("features/fc6", layout)
        with h5py.File(path, "r") as f, pytest.raises(StoreError, match="features/fc6"):
            check_hdf5(f, str(path), StoreError)


def _feature_file(tmp_path, name, fc6_kwargs) -> Path:
    """A tiny feature file whose features/fc6 is made by ``fc6_kwargs``."""
    from c3d_extract.store.layout import FORMAT, FORMAT_VERSION

    path = tmp_path / name
    with h5py.File(path, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        videos = f.create_group("videos")
        text = h5py.string_dtype()
        videos.create_dataset("id", data=["a.mp4", "b.mp4"], dtype=text)
        videos.create_dataset("status", data=["ok", "ok"], dtype=text)
        videos.create_dataset("error", data=["", ""], dtype=text)
        for column in ("n_frames", "n_clips", "fps", "width", "height", "zero_descriptor"):
            videos.create_dataset(column, data=np.ones(2))
        f.create_group("features").create_dataset("fc6", **fc6_kwargs)
    return path


def test_feature_file_with_external_storage_is_refused(tmp_path):
    from c3d_extract.errors import StoreError
    from c3d_extract.store.read import read_features

    secret = _marker_file(tmp_path)
    path = _feature_file(tmp_path, "ext.h5", dict(shape=(2, 8), dtype="f4",
                                                  external=[(str(secret), 0, 64)]))
    with pytest.raises(StoreError, match="features/fc6 has external storage"):
        read_features(str(path))
    labels = tmp_path / "labels.csv"
    labels.write_text("video,label\na.mp4,x\nb.mp4,y\n")
    model = tmp_path / "model.skops"
    _refused(path, words=("external storage",), command=("svm", "c3d-svm", "main"),
             args=["train", str(path), str(labels), "-o", str(model)])
    assert not model.exists()


def test_feature_file_declaring_huge_rows_is_refused(tmp_path):
    from c3d_extract.errors import StoreError
    from c3d_extract.store.read import read_features

    path = _feature_file(tmp_path, "rows.h5", dict(shape=(700_000_000, 4096), dtype="f4",
                                                   chunks=(1, 4096)))
    assert path.stat().st_size < 16384
    with pytest.raises(StoreError, match="declares shape"):
        read_features(str(path))


def test_pca_file_with_more_components_than_dimensions_is_refused(tmp_path):
    from c3d_extract.errors import StoreError
    from c3d_extract.evaluation.pca import load_pca

    path = tmp_path / "pca.h5"
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.create_dataset("x_mean", data=np.zeros(4096, np.float32))
        data.create_dataset("U", shape=(4096, 90000), dtype="f4", chunks=(1, 1024))
        data.create_dataset("S", data=np.ones(90000, np.float32))
    with pytest.raises(StoreError):
        load_pca(str(path))
    with h5py.File(path, "r+") as f:  # and a written U of impossible shape
        del f["data/U"]
        f["data"].create_dataset("U", data=np.zeros((16, 32), np.float32))
        del f["data/x_mean"]
        f["data"].create_dataset("x_mean", data=np.zeros(16, np.float32))
    with pytest.raises(StoreError, match="k <= D"):
        load_pca(str(path))


# ---------------------------------------------------------------- skops, safetensors metadata

def test_skops_file_with_a_bzip2_schema_is_refused(tmp_path):
    from c3d_extract.errors import StoreError
    from c3d_extract.evaluation.svm import load_model

    path = tmp_path / "model.skops"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_BZIP2) as archive:
        archive.writestr("schema.json", b" " * 1_000_000)
    assert path.stat().st_size < 4096
    with pytest.raises(StoreError, match="method"):
        load_model(str(path))


def _model_file(tmp_path, **metadata_changes) -> Path:
    from safetensors.torch import save_file

    from c3d_extract.video.preprocess import SPORTS1M

    metadata = {"format": "c3d-extract.model", "format_version": "1", "arch": "c3d",
                "num_classes": "2", "class_names": json.dumps(["a", "b"]), "clip_len": "16",
                "crop_size": "112", "preprocessing": SPORTS1M.to_json()}
    metadata.update(metadata_changes)
    path = tmp_path / "model.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize("changes, words", [
    ({"clip_len": "5000000"}, "clip_len"),
    ({"preprocessing": json.dumps({"resize": [30000, 30000], "crop": 112})}, "resize"),
    ({"preprocessing": json.dumps({"mean": [float("nan"), 1, 2]})}, "mean"),
    ({"class_names": "[" * 100_000 + "]" * 100_000}, "nested"),
    ({"num_classes": "100000000"}, "class"),
])
def test_model_file_metadata_out_of_bounds_is_one_line(tmp_path, changes, words):
    path = _model_file(tmp_path, **changes)
    _refused(path, words=(words,))


def test_legacy_storage_declaring_more_elements_than_the_file_is_refused(tmp_path):
    from c3d_extract.errors import WeightsError
    from c3d_extract.weights.pickle_scan import scan_pickle

    pid = (b"(X\x07\x00\x00\x00storage" + _global("torch", "FloatStorage")
           + b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuJ" + struct.pack("<i", 10**9) + b"NtQ")
    with pytest.raises(WeightsError, match="storage of 1000000000 elements"):
        scan_pickle(_opcodes(pid), "legacy.pth", file_size=2000)
    # The same pickle declaring what the file holds passes.
    small = pid.replace(b"J" + struct.pack("<i", 10**9), b"K\x04")
    scan_pickle(_opcodes(small), "legacy.pth", file_size=2000)


def test_a_real_legacy_and_zip_checkpoint_pass_the_scan(tmp_path):
    from c3d_extract.weights.formats import read_torch_file

    state = {"conv1.weight": torch.randn(4, 3), "conv1.bias": torch.zeros(4)}
    for legacy in (True, False):
        path = tmp_path / f"state{legacy}.pth"
        torch.save(state, path, _use_new_zipfile_serialization=not legacy)
        loaded = read_torch_file(str(path))
        assert torch.equal(loaded["conv1.weight"], state["conv1.weight"])


def test_memory_and_recursion_errors_are_one_line():
    import click
    from click.testing import CliRunner

    from c3d_extract.cli.common import library_errors

    for error in (MemoryError(), RecursionError("deep"),
                  RuntimeError("DefaultCPUAllocator: can't allocate memory")):
        @click.command()
        @library_errors
        def command(error=error):
            raise error

        result = CliRunner().invoke(command, [])
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_constant_weights_warn_and_info_flags_them():
    from c3d_extract.weights.loading import tensor_stats

    stats = tensor_stats("fc6.weight", torch.full((4, 4), 0.5))
    assert stats.constant and stats.nonfinite == 0 and stats.dtype == "float32"
    stats = tensor_stats("fc6.bias", torch.tensor([1.0, float("nan"), float("inf")]))
    assert not stats.constant and stats.nonfinite == 2


def test_constant_weights_load_with_a_warning():
    from dataclasses import replace

    from c3d_extract.weights.loading import _checked, random_weights

    weights = random_weights(0)
    state = dict(weights.state_dict)
    state["fc7.weight"] = torch.full_like(state["fc7.weight"], 0.5)
    with pytest.warns(UserWarning, match="fc7.weight hold one value"):
        checked = _checked(replace(weights, state_dict=state), "constant.pth")
    assert torch.equal(checked.state_dict["fc7.weight"], state["fc7.weight"])


def test_an_ordinary_hdf5_file_with_hard_link_cycles_and_named_types_passes(tmp_path):
    from c3d_extract.errors import StoreError
    from c3d_extract.hdf5_checks import check_hdf5

    path = tmp_path / "ordinary.h5"
    with h5py.File(path, "w") as f:
        group = f.create_group("a")
        group["again"] = group  # a hard link back to itself
        group.create_dataset("x", data=np.arange(10.0), compression="gzip")
        f["kind"] = np.dtype("f4")
        f.create_dataset("empty", shape=(0, 4096), dtype="f4", maxshape=(None, 4096),
                         chunks=(64, 4096))
    with h5py.File(path, "r") as f:
        check_hdf5(f, str(path), StoreError, written=True)
