"""The hand-written encodings are the generated classes' own bytes, for every dtype, shape and value."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tilecast.proto import tensors, wire
from tilecast.proto.errors import InvalidArgument
from tilecast.proto.v1 import inference_pb2

dtypes = st.sampled_from(["<u1", "<u2", "<f4", "<f2", "<i4", "<i8", ">u2", ">f4", ">i8"])
arrays = dtypes.flatmap(lambda d: hnp.arrays(np.dtype(d), hnp.array_shapes(min_dims=0, max_dims=4, min_side=0,
                                                                            max_side=5)))
uint64 = st.integers(0, 2**64 - 1)
int64 = st.integers(-(2**63), 2**63 - 1)
int32 = st.integers(-(2**31), 2**31 - 1)


@given(arrays, st.booleans())
def test_tensor_is_byte_identical(array: np.ndarray, strided: bool) -> None:
    if strided and array.ndim:
        array = array[..., ::2]  # not contiguous: packed in C order, as tensors.encode does
    assert b"".join(wire.tensor(array)) == tensors.encode(array).SerializeToString()


@given(uint64, st.lists(arrays, max_size=3), int64, int64, int32, int64)
def test_stream_result_parses_as_the_message(tile_id: int, outputs: list[np.ndarray], queue_us: int,
                                              compute_us: int, batch: int, version: int) -> None:
    encoded = wire.stream_result(tile_id, outputs, (queue_us, compute_us, batch), version)
    expected = inference_pb2.StreamPredictResponse(
        result=inference_pb2.TileResult(
            id=tile_id, outputs=[tensors.encode(a) for a in outputs],
            timing=inference_pb2.ServerTiming(queue_us=queue_us, compute_us=compute_us, batch_size=batch)),
        version=version)
    assert inference_pb2.StreamPredictResponse.FromString(encoded) == expected
    assert encoded == expected.SerializeToString()


@given(uint64, arrays, st.integers(0, 2**32 - 1))
def test_stream_tile_parses_as_the_message(tile_id: int, array: np.ndarray, deadline_ms: int) -> None:
    expected = inference_pb2.StreamPredictRequest(
        tile=inference_pb2.Tile(id=tile_id, tensor=tensors.encode(array), deadline_ms=deadline_ms))
    assert wire.stream_tile(tile_id, array, deadline_ms) == expected.SerializeToString()


@given(st.text(max_size=20), int64, st.lists(arrays, max_size=2),
       st.lists(st.floats(-1e6, 1e6, width=32), max_size=3))
def test_predict_messages(model: str, version: int, outputs: list[np.ndarray], low: list[float]) -> None:
    timing = inference_pb2.ServerTiming(queue_us=5, compute_us=7, batch_size=len(outputs))
    response = inference_pb2.PredictResponse(model=model, version=version,
                                             outputs=[tensors.encode(a) for a in outputs], timing=timing)
    encoded = wire.predict_response(model, version, outputs, (5, 7, len(outputs)))
    assert encoded == response.SerializeToString()

    batch = np.zeros((1, 4, 4, 3), np.uint8)
    parameters = inference_pb2.ImageParameters(channel_low=low, channel_high=low)
    request = inference_pb2.PredictRequest(model=model, version=version, parameters=parameters,
                                           tiles=tensors.encode(batch))
    assert inference_pb2.PredictRequest.FromString(
        wire.predict_request(model, version, batch, parameters)) == request


def test_unsupported_dtype_is_refused_before_encoding() -> None:
    with pytest.raises(InvalidArgument, match="float64"):
        wire.stream_tile(1, np.zeros((4, 4, 3)))


def test_serialize_passes_encoded_bytes_through() -> None:
    header = inference_pb2.StreamPredictRequest(header=inference_pb2.StreamHeader(model="m"))
    tile = wire.stream_tile(3, np.ones((2, 2, 1), np.uint8))
    assert wire.serialize(tile) is tile
    assert wire.serialize(header) == header.SerializeToString()
