"""Bad requests get the right status code and a message naming expected and received values;
the server keeps serving afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from tests.conftest import RGB_MODEL
from tilecast.client.remote import Client
from tilecast.proto import tensors
from tilecast.proto.errors import InvalidArgument, NotFound, TilecastError
from tilecast.proto.v1 import inference_pb2, inference_pb2_grpc
from tilecast.server.app import ServerThread


def tile_message(tensor: inference_pb2.Tensor, tile_id: int = 0) -> inference_pb2.StreamPredictRequest:
    return inference_pb2.StreamPredictRequest(tile=inference_pb2.Tile(id=tile_id, tensor=tensor))


def raw_stream(server: ServerThread, messages: list[inference_pb2.StreamPredictRequest]) -> grpc.RpcError:
    """Send messages as they are (no client-side checks) and return the error the stream ends with."""
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.StreamPredict(iter(messages), timeout=30))
    return caught.value


def header(model: str = RGB_MODEL, version: int = 0) -> inference_pb2.StreamPredictRequest:
    return inference_pb2.StreamPredictRequest(header=inference_pb2.StreamHeader(model=model, version=version))


GOOD = np.zeros((64, 64, 3), np.uint8)


def bad_tensors() -> Iterator[tuple[str, inference_pb2.Tensor, list[str]]]:
    """(case, tensor, words the error message must contain)."""
    yield "dtype", tensors.encode(GOOD.astype(np.uint16)), ["uint8", "uint16"]
    yield "float dtype", tensors.encode(GOOD.astype(np.float32)), ["uint8", "float32"]
    yield "channels", tensors.encode(np.zeros((64, 64, 4), np.uint8)), ["3 channels", "received 4"]
    short = tensors.encode(GOOD)
    short.data = short.data[:-7]
    yield "byte count", short, [str(64 * 64 * 3), str(64 * 64 * 3 - 7)]
    huge = inference_pb2.Tensor(dtype=tensors.from_numpy_dtype(np.uint8), shape=[100000, 100000, 3], data=b"")
    yield "huge claimed shape", huge, ["100000", "1024"]
    yield "size multiple", tensors.encode(np.zeros((66, 64, 3), np.uint8)), ["66", "multiple of 4"]
    yield "rank", tensors.encode(np.zeros((64, 64), np.uint8)), ["rank 3", "[64, 64]"]


@pytest.mark.parametrize(("case", "tensor", "words"), list(bad_tensors()), ids=[c for c, _, _ in bad_tensors()])
def test_bad_tiles_are_invalid_argument(
    server: ServerThread, client: Client, case: str, tensor: inference_pb2.Tensor, words: list[str]
) -> None:
    error = raw_stream(server, [header(), tile_message(tensor, tile_id=7)])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, case
    for word in [*words, "tile 7"]:
        assert word in error.details(), f"{case}: {word!r} not in {error.details()!r}"
    assert len(client.list_models()) == 1  # still serving


def test_unknown_model_is_not_found(server: ServerThread, client: Client) -> None:
    error = raw_stream(server, [header("no-such-model"), tile_message(tensors.encode(GOOD))])
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-model" in error.details() and RGB_MODEL in error.details()
    with pytest.raises(NotFound, match="no version 9"):
        client.get_model(RGB_MODEL, version=9)
    with pytest.raises(NotFound):
        client.predict("no-such-model", GOOD[None])


def test_stream_must_start_with_header(server: ServerThread) -> None:
    error = raw_stream(server, [tile_message(tensors.encode(GOOD))])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "header" in error.details()


def test_client_maps_codes_back_to_typed_errors(client: Client) -> None:
    with pytest.raises(InvalidArgument, match="expects 3 channels, received 1") as caught:
        client.predict(RGB_MODEL, np.zeros((1, 64, 64, 1), np.uint8))
    assert isinstance(caught.value, TilecastError)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(InvalidArgument, match="batch of 9 tiles"):
        client.predict(RGB_MODEL, np.zeros((9, 64, 64, 3), np.uint8))


def test_server_serves_after_every_error(client: Client) -> None:
    """Runs after the error cases in this module: a normal request still works."""
    (outputs,) = client.predict(RGB_MODEL, GOOD[None])
    assert outputs.shape == (1, 64, 64, 3) and outputs.dtype == np.uint8
