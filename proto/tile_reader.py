"""Reading received tiles without copying their pixels.

The generated parsers copy a tile's bytes into the message, and reading `tensor.data` copies them
again; after an engine call that code runs cold, and for a 256x256 RGB tile the two copies and the
accessors cost about 0.1 ms of a tile's latency (a unary batch of many tiles pays two copies of all
of them). `read_stream_request` parses the plain encoding that protobuf libraries write for a
`StreamPredictRequest` carrying a `Tile` (each field once, the shape packed) into a `TileView`, and
`read_predict_request` a `PredictRequest` into a `PredictView`; their `data` views the received
bytes. Anything else (the header, unknown or repeated fields, unpacked shapes, malformed bytes)
goes to the generated parser, so every message means what protobuf says it means.

Wire format: https://protobuf.dev/programming-guides/encoding/ (field numbers from `v1/inference.proto`).
"""

from __future__ import annotations

from dataclasses import dataclass

from tilecast.proto.v1 import inference_pb2

# Keys (field number << 3 | wire type) of the fields read here.
_TILE = 2 << 3 | 2  # StreamPredictRequest.tile
_TILE_ID, _TILE_TENSOR, _TILE_DEADLINE = 1 << 3, 2 << 3 | 2, 3 << 3
_DTYPE, _SHAPE, _DATA = 1 << 3, 2 << 3 | 2, 3 << 3 | 2
_MODEL, _VERSION, _PARAMETERS, _TILES = 1 << 3 | 2, 2 << 3, 3 << 3 | 2, 4 << 3 | 2  # PredictRequest
_INT32_MIN, _INT32_MAX, _UINT32_MAX = -(2**31), 2**31 - 1, 2**32 - 1


@dataclass(slots=True)
class TileView:
    """One streamed tile; `data` is a view of the received message, not a copy."""

    id: int
    dtype: int
    shape: tuple[int, ...]
    data: memoryview | bytes
    deadline_ms: int

    @staticmethod
    def of(tile: inference_pb2.Tile) -> TileView:
        tensor = tile.tensor
        return TileView(tile.id, tensor.dtype, tuple(tensor.shape), tensor.data, tile.deadline_ms)


@dataclass(slots=True)
class PredictView:
    """One unary request: an NHWC batch whose `data` is a view of the received message, not a copy."""

    model: str
    version: int
    parameters: inference_pb2.ImageParameters
    dtype: int
    shape: tuple[int, ...]
    data: memoryview | bytes

    @staticmethod
    def of(request: inference_pb2.PredictRequest) -> PredictView:
        tiles = request.tiles
        return PredictView(request.model, request.version, request.parameters, tiles.dtype, tuple(tiles.shape),
                           tiles.data)


class _Unusual(Exception):
    """The bytes are not in the plain encoding read here; the generated parser decides."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]  # IndexError past the end: malformed, left to the generated parser
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value >> 64:
                raise _Unusual  # bits past 64: truncated by protobuf
            return value, pos
        shift += 7
        if shift >= 70:
            raise _Unusual  # longer than ten bytes


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _read_tensor(data: bytes, pos: int, end: int) -> tuple[int, tuple[int, ...], memoryview | bytes]:
    shape: tuple[int, ...] = ()
    pixels: memoryview | bytes = b""
    dtype = 0  # proto3 defaults, for absent fields
    seen: set[int] = set()
    while pos < end:
        key = data[pos]
        pos += 1
        if key in seen:
            raise _Unusual  # a repeated field: protobuf merges or appends, the generated parser knows how
        seen.add(key)
        if key == _DTYPE:
            value, pos = _varint(data, pos)
            dtype = _signed64(value)  # an enum is an int32, written sign-extended to 64 bits
            if not _INT32_MIN <= dtype <= _INT32_MAX:
                raise _Unusual
        elif key == _SHAPE:
            size, pos = _varint(data, pos)
            stop, dims = pos + size, []
            while pos < stop:
                dim, pos = _varint(data, pos)
                dims.append(_signed64(dim))
            if pos != stop:
                raise _Unusual
            shape = tuple(dims)
        elif key == _DATA:
            size, pos = _varint(data, pos)
            pixels = memoryview(data)[pos:pos + size]
            pos += size
        else:
            raise _Unusual
    if pos != end:
        raise _Unusual
    return dtype, shape, pixels


def _read_tile(data: bytes) -> TileView:
    if not data or data[0] != _TILE:
        raise _Unusual
    size, pos = _varint(data, 1)
    end = pos + size
    if end != len(data):
        raise _Unusual  # more fields follow the tile, or it is cut short
    shape: tuple[int, ...] = ()
    pixels: memoryview | bytes = b""
    tile_id = deadline_ms = dtype = 0
    seen: set[int] = set()
    while pos < end:
        key = data[pos]
        pos += 1
        if key in seen:
            raise _Unusual
        seen.add(key)
        if key == _TILE_ID:
            tile_id, pos = _varint(data, pos)
        elif key == _TILE_TENSOR:
            size, pos = _varint(data, pos)
            dtype, shape, pixels = _read_tensor(data, pos, pos + size)
            pos += size
        elif key == _TILE_DEADLINE:
            deadline_ms, pos = _varint(data, pos)
            if deadline_ms > _UINT32_MAX:
                raise _Unusual
        else:
            raise _Unusual
    if pos != end:
        raise _Unusual
    return TileView(tile_id, dtype, shape, pixels, deadline_ms)


def read_stream_request(data: bytes) -> TileView | inference_pb2.StreamPredictRequest:
    """gRPC request deserializer for StreamPredict: a tile as a `TileView`, other messages as parsed."""
    try:
        return _read_tile(data)
    except (_Unusual, IndexError):
        return inference_pb2.StreamPredictRequest.FromString(data)


def _read_predict(data: bytes) -> PredictView:
    model, version, parameters = "", 0, inference_pb2.ImageParameters()
    shape: tuple[int, ...] = ()
    pixels: memoryview | bytes = b""
    dtype = pos = 0
    seen: set[int] = set()
    while pos < len(data):
        key = data[pos]
        pos += 1
        if key in seen:
            raise _Unusual
        seen.add(key)
        if key == _VERSION:
            value, pos = _varint(data, pos)
            version = _signed64(value)
            continue
        if key not in (_MODEL, _PARAMETERS, _TILES):
            raise _Unusual
        size, pos = _varint(data, pos)
        end = pos + size
        if end > len(data):
            raise _Unusual  # cut short
        if key == _MODEL:
            model = data[pos:end].decode()  # not UTF-8: the generated parser refuses it as protobuf says
        elif key == _PARAMETERS:
            parameters = inference_pb2.ImageParameters.FromString(data[pos:end])  # a few numbers
        else:
            dtype, shape, pixels = _read_tensor(data, pos, end)
        pos = end
    return PredictView(model, version, parameters, dtype, shape, pixels)


def read_predict_request(data: bytes) -> PredictView:
    """gRPC request deserializer for Predict: the request as a `PredictView`, however it was encoded."""
    try:
        return _read_predict(data)
    except (_Unusual, IndexError, UnicodeDecodeError):
        return PredictView.of(inference_pb2.PredictRequest.FromString(data))
