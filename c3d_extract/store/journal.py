"""An append-only, checksummed log of finished videos next to the output.

Each record is ``magic | length | crc32 | payload`` with a payload of a JSON
header followed by raw little-endian arrays (no pickle). A run appends and
fsyncs records as videos finish; a killed run leaves at most one torn record
at the end, which the next open detects by its checksum and cuts off.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np

from c3d_extract.atomic_files import fsync_parent
from c3d_extract.errors import StoreError

MAGIC = b"C3DJ"
_FRAME = struct.Struct("<4sQI")
_JSON_LEN = struct.Struct("<I")


def encode_record(meta: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> bytes:
    specs = []
    blobs = []
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        specs.append({"name": name, "dtype": little.dtype.str, "shape": list(array.shape)})
        blobs.append(little.tobytes())
    header = json.dumps({"meta": meta, "arrays": specs}, ensure_ascii=False).encode("utf-8")
    payload = _JSON_LEN.pack(len(header)) + header + b"".join(blobs)
    return _FRAME.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def decode_payload(payload: bytes) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    (json_len,) = _JSON_LEN.unpack_from(payload)
    header = json.loads(payload[_JSON_LEN.size:_JSON_LEN.size + json_len].decode("utf-8"))
    offset = _JSON_LEN.size + json_len
    arrays: Dict[str, np.ndarray] = {}
    for spec in header["arrays"]:
        dtype = np.dtype(spec["dtype"])
        count = int(np.prod(spec["shape"], dtype=np.int64))
        arrays[spec["name"]] = np.frombuffer(payload, dtype, count, offset).reshape(spec["shape"])
        offset += count * dtype.itemsize
    return header["meta"], arrays


def _intact_payloads(path: str) -> Iterator[Tuple[int, bytes]]:
    """``(end_offset, payload)`` of each intact record, stopping at the first damaged one."""
    with open(path, "rb") as handle:
        end = 0
        while True:
            frame = handle.read(_FRAME.size)
            if len(frame) < _FRAME.size:
                return
            magic, length, crc = _FRAME.unpack(frame)
            if magic != MAGIC:
                return
            payload = handle.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                return
            end += _FRAME.size + length
            yield end, payload


def intact_length(path: str) -> int:
    """Byte length of the journal's intact prefix."""
    end = 0
    for end, _ in _intact_payloads(path):
        pass
    return end


class Journal:
    """Append records durably; ``records()`` replays the intact ones."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._handle: Optional[Any] = None

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def records(self) -> Iterator[Tuple[Dict[str, Any], Dict[str, np.ndarray]]]:
        if not self.exists():
            return
        try:
            for _, payload in _intact_payloads(self.path):
                yield decode_payload(payload)
        except OSError as error:
            raise StoreError(f"cannot read the journal {self.path}: {error.strerror}") from None

    def open_for_append(self) -> None:
        """Open for appending, first cutting off a torn record left by a killed run."""
        try:
            existed = self.exists()
            valid = intact_length(self.path) if existed else 0
            self._handle = open(self.path, "ab")
            if self._handle.tell() != valid:
                self._handle.truncate(valid)
                self._handle.seek(valid)
            if not existed:  # its name, too, must survive a power cut
                fsync_parent(self.path)
        except OSError as error:
            raise StoreError(f"cannot open the journal {self.path}: {error.strerror}") from None

    def append(self, meta: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> None:
        """Append one record; it survives the process being killed once this returns."""
        assert self._handle is not None, "open_for_append first"
        try:
            self._handle.write(encode_record(meta, arrays))
            # Into the OS at once: a killed process loses nothing; ``sync`` adds power loss.
            self._handle.flush()
        except OSError as error:
            raise StoreError(f"cannot write the journal {self.path}: {error.strerror}") from None

    def sync(self) -> None:
        """Make everything appended so far survive a crash or power loss."""
        if self._handle is None:
            return
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as error:
            raise StoreError(f"cannot write the journal {self.path}: {error.strerror}") from None

    def close(self) -> None:
        """Close without raising: what could not be written is a torn record, cut off
        by the next open (the error that stopped the run has been raised already)."""
        if self._handle is not None:
            handle, self._handle = self._handle, None
            try:
                handle.close()
            except OSError:
                pass

    def remove(self) -> None:
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
