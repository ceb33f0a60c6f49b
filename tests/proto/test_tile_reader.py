"""The tile reader means what the generated parser means, for plain encodings and odd ones alike."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from tilecast.proto import wire
from tilecast.proto.tile_reader import TileView, read_stream_request
from tilecast.proto.v1 import inference_pb2, manifest_pb2

uint64 = st.integers(0, 2**64 - 1)
int64 = st.integers(-(2**63), 2**63 - 1)
tiles = st.builds(
    inference_pb2.Tile,
    id=uint64,
    tensor=st.builds(inference_pb2.Tensor, dtype=st.integers(-(2**31), 2**31 - 1),
                     shape=st.lists(int64, max_size=5), data=st.binary(max_size=64)),
    deadline_ms=st.integers(0, 2**32 - 1),
)


def as_view(message: inference_pb2.StreamPredictRequest) -> TileView:
    return TileView.of(message.tile)


def same(read: TileView | inference_pb2.StreamPredictRequest, expected: inference_pb2.StreamPredictRequest) -> None:
    if isinstance(read, TileView):
        assert expected.WhichOneof("item") == "tile"
        want = as_view(expected)
        assert (read.id, read.dtype, read.shape, bytes(read.data), read.deadline_ms) == (
            want.id, want.dtype, want.shape, bytes(want.data), want.deadline_ms)
    else:
        assert read == expected


@given(tiles)
def test_plain_tiles_are_read_without_the_generated_parser(tile: inference_pb2.Tile) -> None:
    data = inference_pb2.StreamPredictRequest(tile=tile).SerializeToString()
    read = read_stream_request(data)
    assert isinstance(read, TileView)
    same(read, inference_pb2.StreamPredictRequest.FromString(data))


def test_pixels_are_a_view_of_the_received_bytes() -> None:
    array = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    data = wire.stream_tile(9, array, deadline_ms=50)
    read = read_stream_request(data)
    assert isinstance(read, TileView)
    assert isinstance(read.data, memoryview) and read.data.obj is data
    assert (read.id, read.shape, read.deadline_ms) == (9, (4, 4, 3), 50)
    np.testing.assert_array_equal(np.frombuffer(read.data, np.uint8).reshape(read.shape), array)


@given(st.lists(tiles, min_size=1, max_size=3), st.booleans())
def test_odd_encodings_mean_what_protobuf_says(parts: list[inference_pb2.Tile], header: bool) -> None:
    """Concatenated messages merge (repeated fields, a later tile over an earlier one); the header
    and any other field go through the generated parser."""
    messages = [inference_pb2.StreamPredictRequest(tile=t) for t in parts]
    if header:
        messages.insert(0, inference_pb2.StreamPredictRequest(header=inference_pb2.StreamHeader(model="m")))
    data = b"".join(m.SerializeToString() for m in messages)
    same(read_stream_request(data), inference_pb2.StreamPredictRequest.FromString(data))


def test_unpacked_shape_and_unknown_fields_are_understood() -> None:
    tensor = inference_pb2.Tensor(dtype=manifest_pb2.DTYPE_UINT8, shape=[2, 2, 1], data=b"abcd")
    tile = inference_pb2.Tile(id=3, tensor=tensor)
    plain = inference_pb2.StreamPredictRequest(tile=tile).SerializeToString()
    # the shape as three unpacked varints (field 2, wire type 0), which parsers must accept too
    tensor_fields = bytes([0x08, manifest_pb2.DTYPE_UINT8]) + b"\x10\x02\x10\x02\x10\x01" + b"\x1a\x04abcd"
    unpacked = b"\x12" + bytes([2 + 2 + len(tensor_fields)]) + b"\x08\x03\x12" + bytes([len(tensor_fields)])
    unpacked += tensor_fields
    unknown = plain + b"\xf8\x01\x05"  # field 31, varint 5
    for data in (unpacked, unknown):
        read = read_stream_request(data)
        same(read, inference_pb2.StreamPredictRequest.FromString(data))
        view = read if isinstance(read, TileView) else as_view(read)
        assert view.shape == (2, 2, 1) and bytes(view.data) == b"abcd"


@given(st.binary(max_size=40))
def test_malformed_bytes_fail_as_the_generated_parser_fails(data: bytes) -> None:
    try:
        expected = inference_pb2.StreamPredictRequest.FromString(data)
    except DecodeError:
        with pytest.raises(DecodeError):
            read_stream_request(data)
        return
    same(read_stream_request(data), expected)
