"""The stream runner under load and abuse: fair windows for streams that send ahead, idle streams ended,
a call limit that leaves health answering."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import RGB_MODEL, local_settings
from tilecast.client.remote import Client
from tilecast.proto.v1 import inference_pb2, inference_pb2_grpc
from tilecast.server.app import ServerThread

STREAMS, SECONDS, WINDOW = 12, 6.0, 8


def test_streams_sending_ahead_each_get_their_window(model_repository: Path) -> None:
    """Every stream that keeps `WINDOW` tiles in flight gets a like share of the engine: none is judged to
    wait for each answer (and served one tile at a time) because reads are slow on a busy CPU."""
    tile = np.random.default_rng(50).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    start = threading.Barrier(STREAMS)

    def stream(client: Client) -> int:
        start.wait(timeout=60)
        until = time.monotonic() + SECONDS

        def source() -> Iterator[tuple[int, np.ndarray]]:
            i = 0
            while time.monotonic() < until:
                yield i, tile
                i += 1

        return sum(1 for _ in client.stream(RGB_MODEL, source(), window=WINDOW, timeout=120))

    with ServerThread(local_settings(model_repository, max_tiles_in_flight_per_stream=WINDOW)) as server, \
            Client(f"127.0.0.1:{server.port}") as client, ThreadPoolExecutor(STREAMS) as pool:
        counts = list(pool.map(stream, [client] * STREAMS))
    assert min(counts) >= 0.5 * max(counts), f"tiles answered per stream: {sorted(counts)}"


def _quiet(hold: threading.Event) -> Iterator[bytes]:
    """A stream's requests that never come: the client opened the call and sends nothing."""
    hold.wait(timeout=60)
    yield from ()


def test_idle_streams_are_ended_and_health_answers_at_the_call_limit(model_repository: Path) -> None:
    """Clients that open streams and send nothing take every call slot for a while: further calls of the
    inference services are refused, health checks are answered, and the quiet streams are ended after
    the idle timeout (with a message saying so), after which calls are served again."""
    settings = local_settings(model_repository, max_concurrent_calls=4, stream_idle_timeout_s=1.5)
    hold = threading.Event()
    with ServerThread(settings) as server, grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        quiet = [channel.stream_stream(path)(_quiet(hold), timeout=60)
                 for path in ["/tilecast.v1.Inference/StreamPredict"] * 2
                 + ["/inference.GRPCInferenceService/ModelStreamInfer"] * 2]
        stub = inference_pb2_grpc.InferenceStub(channel)  # type: ignore[no-untyped-call]
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(100):  # bounded: the four calls start within moments
            try:
                stub.ListModels(inference_pb2.ListModelsRequest(), timeout=10)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-calls" in str(exc.details())
                break
            time.sleep(0.02)
        else:
            raise AssertionError("the quiet streams never took the call slots")
        for _ in range(3):  # health keeps answering whatever the call count
            answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        started = time.monotonic()
        for call in quiet:
            with pytest.raises(grpc.RpcError) as ended:
                list(call)
            assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, ended.value
            assert "sent nothing for 1.5 s" in str(ended.value.details())
        assert time.monotonic() - started < 10
        hold.set()
        assert stub.ListModels(inference_pb2.ListModelsRequest(), timeout=10).models
