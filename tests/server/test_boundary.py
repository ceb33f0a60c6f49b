"""The gRPC boundary: messages that are not protobuf are INVALID_ARGUMENT on every method of both
services, cost no memory, and leave a server that still stops on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from tests.conftest import RGB_MODEL
from tilecast.client.remote import Client
from tilecast.local import free_port
from tilecast.proto.v1 import inference_pb2, kserve_v2_pb2
from tilecast.server.app import ServerThread

GARBAGE = b"\xff\xff\xff\xff\x0f not protobuf"  # an invalid field key: no parser takes it


def _methods() -> list[tuple[str, bool]]:
    """Every method of both services, by path, and whether it streams."""
    return [(f"/{service.full_name}/{method.name}", method.client_streaming)
            for service in (inference_pb2.DESCRIPTOR.services_by_name["Inference"],
                            kserve_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"])
            for method in service.methods]


def _send_garbage(channel: grpc.Channel, path: str, streaming: bool, count: int = 1) -> grpc.RpcError:
    """Send bytes that do not parse; the error the call ends with."""
    with pytest.raises(grpc.RpcError) as caught:
        if streaming:
            list(channel.stream_stream(path)(iter([GARBAGE] * count), timeout=30))
        else:
            channel.unary_unary(path)(GARBAGE, timeout=30)
    return caught.value


@pytest.mark.parametrize(("path", "streaming"), _methods())
def test_unparsable_messages_are_invalid_argument(server: ServerThread, path: str, streaming: bool) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        error = _send_garbage(channel, path, streaming)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert "not a valid request" in str(error.details())
    with Client(f"127.0.0.1:{server.port}") as client:
        assert client.list_models()


def _serve(repository: Path) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tilecast", "serve", "--repository", str(repository), "--port", str(port),
         "--metrics-port", "-1", "--grace-period-s", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    Client(f"127.0.0.1:{port}").wait_ready(timeout=120)
    return process, port


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _garbage_calls(channel: grpc.Channel, count: int) -> set[grpc.StatusCode]:
    """The codes `count` unparsable ListModels requests end with, 100 in flight at a time; it stops at
    the first batch that is not all INVALID_ARGUMENT (a server that stops answering must not take long)."""
    call = channel.unary_unary("/tilecast.v1.Inference/ListModels")
    codes: set[grpc.StatusCode] = set()
    for start in range(0, count, 100):
        futures = [call.future(GARBAGE, timeout=10) for _ in range(min(100, count - start))]
        codes |= {future.exception().code() for future in futures}
        if codes != {grpc.StatusCode.INVALID_ARGUMENT}:
            break
    return codes


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's RSS from /proc")
def test_unparsable_requests_cost_no_memory(model_repository: Path) -> None:
    process, port = _serve(model_repository)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            codes = _garbage_calls(channel, 1000)  # warm up
            before = _rss_mb(process.pid)
            codes |= _garbage_calls(channel, 10_000)
            grown = _rss_mb(process.pid) - before
        assert grown < 20, f"the server's RSS grew {grown:.0f} MB over 10,000 unparsable requests"
        assert codes == {grpc.StatusCode.INVALID_ARGUMENT}
    finally:
        process.kill()
        process.communicate()


def test_sigterm_stops_the_server_after_garbage_on_a_stream(model_repository: Path) -> None:
    process, port = _serve(model_repository)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            errors = [_send_garbage(channel, path, streaming=True, count=2)
                      for path in ("/tilecast.v1.Inference/StreamPredict",
                                   "/inference.GRPCInferenceService/ModelStreamInfer") for _ in range(2)]
            header = inference_pb2.StreamPredictRequest(header=inference_pb2.StreamHeader(model=RGB_MODEL))
            errors.append(_send_garbage_after(channel, header.SerializeToString()))
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            raise AssertionError("the server did not stop within 20 s of SIGTERM") from None
        assert process.returncode == 0, output
        assert time.monotonic() - signalled < 15
        assert {e.code() for e in errors} == {grpc.StatusCode.INVALID_ARGUMENT}
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def _send_garbage_after(channel: grpc.Channel, header: bytes) -> grpc.RpcError:
    """A valid header, then two messages that do not parse."""
    with pytest.raises(grpc.RpcError) as caught:
        list(channel.stream_stream("/tilecast.v1.Inference/StreamPredict")(iter([header, GARBAGE, GARBAGE]),
                                                                          timeout=30))
    return caught.value
