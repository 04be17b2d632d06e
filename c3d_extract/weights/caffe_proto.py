"""Caffe's protobuf files read straight from the wire format (no caffe, no protobuf package).

Two dialects are understood (SPEC section 4):

* C3D-v1.0: ``NetParameter.layers`` = 2 holding ``LayerParameter`` (``name`` = 4,
  ``type`` = 5 enum, ``blobs`` = 6); ``BlobProto`` with ``num, channels, length,
  height, width`` = 1..5 and ``data`` = 6.
* C3D-v1.1 / BVLC: ``NetParameter.layer`` = 100 holding ``LayerParameter``
  (``name`` = 1, ``type`` = 2 string, ``blobs`` = 7); ``BlobProto`` with ``shape`` = 7
  (``BlobShape.dim`` = 1), legacy ``num, channels, height, width`` = 1..4 and
  ``data`` = 5. BVLC's own V1 layers (field 2) carry this newer blob form too.

Field 5 of a blob is ``width`` (a varint) in C3D-v1.0 but ``data`` (floats) in the
newer form, so each blob's dialect is told from the wire type of that field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterator, List, Tuple, Union

import numpy as np

from c3d_extract.errors import WeightsError

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5

# NetParameter / LayerParameter field numbers of both dialects.
NET_LAYERS_V1, NET_LAYER = 2, 100
V1_LAYER_NAME, V1_LAYER_TYPE, V1_LAYER_BLOBS = 4, 5, 6
LAYER_NAME, LAYER_TYPE, LAYER_BLOBS = 1, 2, 7

FieldValue = Union[int, memoryview]


class WireFormatError(ValueError):
    """Bytes that are not a well-formed protobuf message.

    Raised by the decoding functions; the file-level readers below turn it into the
    library's typed errors.
    """


def read_varint(buffer: memoryview, position: int) -> Tuple[int, int]:
    """Decode a base-128 varint at ``position``; return (value, position after it)."""
    result = shift = 0
    end = len(buffer)
    while True:
        if position >= end:
            raise WireFormatError("truncated varint")
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift >= 70:
            raise WireFormatError("varint longer than 10 bytes")


def iter_fields(buffer: Union[bytes, memoryview]) -> Iterator[Tuple[int, int, FieldValue]]:
    """Yield ``(field number, wire type, value)`` for each field of one message.

    Varints come back as ints; length-delimited, fixed32 and fixed64 fields as
    memoryviews of their bytes (no copy).
    """
    view = memoryview(buffer)
    position, end = 0, len(view)
    while position < end:
        key, position = read_varint(view, position)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise WireFormatError(f"field number 0 at byte {position}")
        if wire_type == VARINT:
            value, position = read_varint(view, position)
            yield number, wire_type, value
            continue
        if wire_type == LENGTH_DELIMITED:
            size, position = read_varint(view, position)
        elif wire_type == FIXED32:
            size = 4
        elif wire_type == FIXED64:
            size = 8
        else:  # groups (3, 4) are not used by caffe.proto; 6 and 7 do not exist
            raise WireFormatError(f"unsupported wire type {wire_type} for field {number}")
        if position + size > end:
            raise WireFormatError(f"field {number} runs {position + size - end} bytes past the end "
                                  "(truncated file?)")
        yield number, wire_type, view[position:position + size]
        position += size


def _int64(value: int) -> int:
    """Two's complement reading of a varint as int64 (negative dims would be an error)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _packed_varints(data: memoryview) -> List[int]:
    values, position = [], 0
    while position < len(data):
        value, position = read_varint(data, position)
        values.append(_int64(value))
    return values


def _float_chunks(fields: List[Tuple[int, FieldValue]]) -> np.ndarray:
    """Concatenate a repeated float field given packed (wire 2) and/or unpacked (wire 5)."""
    chunks: List[np.ndarray] = []
    for wire_type, value in fields:
        if wire_type not in (LENGTH_DELIMITED, FIXED32) or isinstance(value, int):
            raise WireFormatError(f"float data with wire type {wire_type}")
        if len(value) % 4:
            raise WireFormatError("packed float data is not a multiple of 4 bytes")
        chunks.append(np.frombuffer(value, dtype="<f4"))
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _double_chunks(fields: List[Tuple[int, FieldValue]]) -> np.ndarray:
    chunks = []
    for wire_type, value in fields:
        if wire_type not in (LENGTH_DELIMITED, FIXED64) or isinstance(value, int):
            raise WireFormatError(f"double data with wire type {wire_type}")
        if len(value) % 8:
            raise WireFormatError("packed double data is not a multiple of 8 bytes")
        chunks.append(np.frombuffer(value, dtype="<f8"))
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def decode_blob(buffer: Union[bytes, memoryview]) -> np.ndarray:
    """A ``BlobProto`` of either dialect as a float32 array of its stored shape."""
    by_number: Dict[int, List[Tuple[int, FieldValue]]] = {}
    for number, wire_type, value in iter_fields(buffer):
        by_number.setdefault(number, []).append((wire_type, value))

    def last_int(number: int, default: int = 0) -> int:
        values = [v for w, v in by_number.get(number, []) if w == VARINT]
        return _int64(values[-1]) if values else default  # type: ignore[arg-type]

    field5_types = {wire for wire, _ in by_number.get(5, [])}
    c3d_v10 = VARINT in field5_types or (not field5_types and 6 in by_number and 7 not in by_number)
    if c3d_v10:
        shape: Tuple[int, ...] = tuple(last_int(n) for n in (1, 2, 3, 4, 5))
        data = _float_chunks(by_number.get(6, []))
    else:
        if 7 in by_number:  # BlobShape
            dims: List[int] = []
            for wire_type, value in by_number[7]:
                if isinstance(value, int):
                    raise WireFormatError("blob shape is not a message")
                for number, dim_wire, dim in iter_fields(value):
                    if number != 1:
                        continue
                    if dim_wire == VARINT:
                        dims.append(_int64(dim))  # type: ignore[arg-type]
                    else:
                        dims.extend(_packed_varints(dim))  # type: ignore[arg-type]
            shape = tuple(dims)
        else:
            shape = tuple(last_int(n) for n in (1, 2, 3, 4))
        data = _float_chunks(by_number.get(5, []))
        if data.size == 0 and 8 in by_number:
            data = _double_chunks(by_number[8])
    if any(d < 0 for d in shape):
        raise WireFormatError(f"negative blob dimension in {shape}")
    if len(shape) > 8:
        raise WireFormatError(f"a blob of {len(shape)} dimensions")
    count = math.prod(shape) if shape else 0  # Python integers: a product cannot wrap
    if data.size != count:
        raise WireFormatError(f"blob of shape {shape} holds {data.size} values, expected {count} "
                              "(truncated or damaged file?)")
    return data.reshape(shape)


@dataclass(frozen=True)
class CaffeLayer:
    """One layer of a Caffe net: its name, type (enum number or string) and blobs."""

    name: str
    type: Union[int, str]
    blobs: Tuple[np.ndarray, ...]


def _decode_layer(buffer: memoryview, v1: bool) -> CaffeLayer:
    name_field, type_field, blobs_field = ((V1_LAYER_NAME, V1_LAYER_TYPE, V1_LAYER_BLOBS) if v1
                                           else (LAYER_NAME, LAYER_TYPE, LAYER_BLOBS))
    name, layer_type, blobs = "", "", []  # type: ignore[var-annotated]
    for number, wire_type, value in iter_fields(buffer):
        if number == name_field and wire_type == LENGTH_DELIMITED:
            name = bytes(value).decode("utf-8", errors="replace")  # type: ignore[arg-type]
        elif number == type_field:
            layer_type = (value if wire_type == VARINT
                          else bytes(value).decode("utf-8", errors="replace"))  # type: ignore
        elif number == blobs_field and wire_type == LENGTH_DELIMITED:
            blobs.append(decode_blob(value))  # type: ignore[arg-type]
    return CaffeLayer(name=name, type=layer_type, blobs=tuple(blobs))


def read_net(data: Union[bytes, memoryview]) -> List[CaffeLayer]:
    """Every layer of a serialized ``NetParameter`` (both dialects), in file order."""
    layers = []
    for number, wire_type, value in iter_fields(data):
        if wire_type != LENGTH_DELIMITED:
            continue
        if number == NET_LAYERS_V1:
            layers.append(_decode_layer(value, v1=True))  # type: ignore[arg-type]
        elif number == NET_LAYER:
            layers.append(_decode_layer(value, v1=False))  # type: ignore[arg-type]
    return layers


def read_net_file(path: str) -> List[CaffeLayer]:
    """Layers of a ``.caffemodel`` / C3D binary; ``WeightsError`` if it is not one."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise WeightsError(f"cannot read {path}: {error}") from None
    try:
        layers = read_net(data)
    except WireFormatError as error:
        raise WeightsError(f"{path} is not a readable Caffe model: {error}") from None
    if not layers:
        raise WeightsError(f"{path} holds no Caffe layers")
    return layers


def looks_like_net(head: bytes) -> bool:
    """Whether the first bytes of a file start a ``NetParameter`` that has layers.

    Walks the leading short fields (name, inputs, ...) until the first layer (field 2
    or 100); anything else, or running past ``head``, means no.
    """
    view = memoryview(head)
    position = 0
    try:
        while position < len(view):
            key, position = read_varint(view, position)
            number, wire_type = key >> 3, key & 7
            if number in (NET_LAYERS_V1, NET_LAYER):
                return wire_type == LENGTH_DELIMITED
            if number not in (1, 3, 4, 5, 6, 7, 8, 9) or number == 0:
                return False
            if wire_type == VARINT:
                _, position = read_varint(view, position)
            elif wire_type == LENGTH_DELIMITED:
                size, position = read_varint(view, position)
                position += size
            elif wire_type in (FIXED32, FIXED64):
                position += 4 if wire_type == FIXED32 else 8
            else:
                return False
    except WireFormatError:
        return False
    return False


def read_mean_binaryproto(path: str) -> np.ndarray:
    """A Caffe mean file (one ``BlobProto``) as float32, in its stored shape.

    C3D's ``train01_16_128_171_mean.binaryproto`` is (1, 3, 16, 128, 171):
    num, channels (BGR), length, height, width.
    """
    from c3d_extract.errors import UsageError

    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise UsageError(f"cannot read the mean file {path}: {error}") from None
    try:
        mean = decode_blob(data)
    except WireFormatError as error:
        raise UsageError(f"{path} is not a Caffe mean blob: {error}") from None
    if mean.size == 0:
        raise UsageError(f"{path} is not a Caffe mean blob: it holds no values")
    return mean
