"""The tile readers mean what the generated parsers mean, for plain encodings and odd ones alike."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from tilecast.proto import wire
from tilecast.proto.tile_reader import PredictView, TileView, read_predict_request, read_stream_request
from tilecast.proto.v1 import inference_pb2, manifest_pb2

uint64 = st.integers(0, 2**64 - 1)
int64 = st.integers(-(2**63), 2**63 - 1)
tensors = st.builds(inference_pb2.Tensor, dtype=st.integers(-(2**31), 2**31 - 1),
                    shape=st.lists(int64, max_size=5), data=st.binary(max_size=64))
tiles = st.builds(inference_pb2.Tile, id=uint64, tensor=tensors, deadline_ms=st.integers(0, 2**32 - 1))
predict_requests = st.builds(
    inference_pb2.PredictRequest,
    model=st.text(max_size=12),
    version=int64,
    parameters=st.one_of(st.none(), st.builds(inference_pb2.ImageParameters,
                                              channel_low=st.lists(st.floats(width=32, allow_nan=False), max_size=3))),
    tiles=st.one_of(st.none(), tensors),
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


def predict_fields(view: PredictView) -> tuple[object, ...]:
    return view.model, view.version, view.parameters, view.dtype, view.shape, bytes(view.data)


@given(predict_requests)
def test_predict_requests_read_as_the_generated_parser_reads_them(request: inference_pb2.PredictRequest) -> None:
    data = request.SerializeToString()
    read = read_predict_request(data)
    assert predict_fields(read) == predict_fields(PredictView.of(inference_pb2.PredictRequest.FromString(data)))
    if request.tiles.data:
        assert isinstance(read.data, memoryview), "a plain encoding went through the generated parser"


def test_a_predict_batch_is_a_view_of_the_received_bytes() -> None:
    batch = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    parameters = inference_pb2.ImageParameters(channel_low=[1, 2, 3], channel_high=[9, 9, 9])
    data = wire.predict_request("m", 4, batch, parameters)
    read = read_predict_request(data)
    assert isinstance(read.data, memoryview) and read.data.obj is data
    assert (read.model, read.version, read.parameters, read.shape) == ("m", 4, parameters, (2, 4, 4, 3))
    np.testing.assert_array_equal(np.frombuffer(read.data, np.uint8).reshape(read.shape), batch)


@given(st.lists(predict_requests, min_size=2, max_size=3))
def test_merged_predict_requests_mean_what_protobuf_says(parts: list[inference_pb2.PredictRequest]) -> None:
    data = b"".join(p.SerializeToString() for p in parts) + b"\xf8\x01\x05"  # and an unknown field
    assert predict_fields(read_predict_request(data)) == predict_fields(
        PredictView.of(inference_pb2.PredictRequest.FromString(data)))


@given(st.binary(max_size=40))
def test_malformed_predict_bytes_fail_as_the_generated_parser_fails(data: bytes) -> None:
    try:
        expected = inference_pb2.PredictRequest.FromString(data)
    except DecodeError:
        with pytest.raises(DecodeError):
            read_predict_request(data)
        return
    assert predict_fields(read_predict_request(data)) == predict_fields(PredictView.of(expected))
