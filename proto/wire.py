"""Protocol Buffers wire encoding, by hand, for the messages that carry pixels on the hot path.

Building a `StreamPredictResponse` through the generated classes copies the tensor bytes once per
nesting level and serialising copies them again: for a 256x256 RGB tile, about 0.1 ms of the event
loop's time per tile. Here a message is a list of small headers and the arrays' own buffers, joined
once. The bytes are ordinary protobuf (field numbers from `v1/inference.proto`): any client parses
them with the generated classes, and tests check the bytes equal the generated classes' own.

Wire format: https://protobuf.dev/programming-guides/encoding/ — a field is a varint key
(field number << 3 | wire type) then a varint (type 0) or a varint length and that many bytes (type 2).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from google.protobuf.message import Message

from tilecast.proto import tensors
from tilecast.proto.v1 import inference_pb2

Part = bytes | memoryview  # a memoryview here is always 1-D of bytes, so len() is its size
Encoded = list[Part]  # the pieces of one message, in order, to be joined or nested

_VARINT, _LENGTH = 0, 2


def varint(value: int) -> bytes:
    """Unsigned LEB128; negative int64 values take ten bytes, as protobuf writes them."""
    if value < 0:
        value += 1 << 64
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@functools.cache
def _key(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def _int_field(field: int, value: int) -> Encoded:
    """A scalar integer field; proto3 leaves zeros out."""
    return [_key(field, _VARINT) + varint(value)] if value else []


def _nested(field: int, parts: Encoded) -> Encoded:
    """A length-delimited field around already-encoded parts (a sub-message or bytes)."""
    return [_key(field, _LENGTH) + varint(sum(map(len, parts))), *parts]


def _string_field(field: int, text: str) -> Encoded:
    """A string field (UTF-8); proto3 leaves the empty string out."""
    return _nested(field, [text.encode()]) if text else []


def tensor(array: npt.NDArray[np.generic]) -> Encoded:
    """A `Tensor` message viewing the array's memory (C order, little-endian), as `tensors.encode` packs it."""
    head = _tensor_head(array.dtype, array.shape) if array.flags.c_contiguous else None
    if head is None:  # not in C order or not little-endian: packed as it travels (a copy)
        array = tensors.packed(array)[1]
        head = _tensor_head(array.dtype, array.shape)
        assert head is not None
    return [head, array.data.cast("B")] if array.size else [head]


@functools.lru_cache(maxsize=256)
def _tensor_head(dtype: np.dtype[np.generic], shape: tuple[int, ...]) -> bytes | None:
    """A Tensor's fields up to its data (dtype, shape, the data's key and length), or None for a
    byte order that must be converted first.

    A stream's results share them; cached, a result's encoding (which runs cold, right after an
    engine call) is a few calls and one copy of the pixels.
    """
    code = tensors.from_numpy_dtype(dtype)
    if dtype != tensors.to_numpy_dtype(code):
        return None
    nbytes = math.prod(shape) * dtype.itemsize
    packed_shape = b"".join(varint(s) for s in shape)
    head = _int_field(1, code)
    if packed_shape:
        head += [_key(2, _LENGTH) + varint(len(packed_shape)) + packed_shape]
    if nbytes:
        head += [_key(3, _LENGTH) + varint(nbytes)]
    return b"".join(head)


Timing = tuple[int, int, int]  # a `ServerTiming`: queue_us, compute_us, batch_size


def _timing(timing: Timing) -> Encoded:
    queue_us, compute_us, batch_size = timing
    return _int_field(1, queue_us) + _int_field(2, compute_us) + _int_field(3, batch_size)


def stream_result(tile_id: int, outputs: Sequence[npt.NDArray[np.generic]], timing: Timing, version: int) -> bytes:
    """A serialised `StreamPredictResponse` with one successful `TileResult`."""
    result = _int_field(1, tile_id)
    for array in outputs:
        result += _nested(2, tensor(array))
    result += _nested(3, _timing(timing))
    return b"".join(_nested(1, result) + _int_field(2, version))


def predict_response(model: str, version: int, outputs: Sequence[npt.NDArray[np.generic]], timing: Timing) -> bytes:
    """A serialised `PredictResponse`: each output with the batch axis first."""
    parts = _string_field(1, model) + _int_field(2, version)
    for array in outputs:
        parts += _nested(3, tensor(array))
    return b"".join(parts + _nested(4, _timing(timing)))


def predict_request(model: str, version: int, batch: npt.NDArray[np.generic],
                    parameters: inference_pb2.ImageParameters | None = None) -> bytes:
    """A serialised `PredictRequest` for an NHWC batch."""
    parts = _string_field(1, model) + _int_field(2, version)
    if parameters is not None:
        parts += _nested(3, [parameters.SerializeToString()])
    return b"".join(parts + _nested(4, tensor(batch)))


def stream_tile(tile_id: int, array: npt.NDArray[np.generic], deadline_ms: int = 0) -> bytes:
    """A serialised `StreamPredictRequest` carrying one `Tile`."""
    tile = _int_field(1, tile_id) + _nested(2, tensor(array)) + _int_field(3, deadline_ms)
    return b"".join(_nested(2, tile))


def serialize(message: bytes | Message) -> bytes:
    """gRPC serializer for calls that carry both pre-encoded bytes and generated messages."""
    return message if isinstance(message, bytes) else message.SerializeToString()
