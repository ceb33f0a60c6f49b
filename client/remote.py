"""The gRPC stub wrapper: NumPy arrays in and out, status codes turned back into tilecast errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import grpc
import numpy as np
import numpy.typing as npt
from grpc_health.v1 import health_pb2

from tilecast.client.channels import Security, client_options, open_channel, target_of
from tilecast.proto import tensors, wire
from tilecast.proto.errors import InvalidArgument, InvalidOption, TilecastError, error_for_status
from tilecast.proto.v1 import inference_pb2, inference_pb2_grpc, manifest_pb2

Array = npt.NDArray[Any]
T = TypeVar("T")
DEFAULT_MESSAGE_BYTES = 64 * 1024 * 1024
_STATUS_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
_SERVICE = inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name
STREAM_PREDICT, PREDICT = f"/{_SERVICE}/StreamPredict", f"/{_SERVICE}/Predict"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_POLL_S = 0.1  # while a server loads its models
StreamItem = bytes | inference_pb2.StreamPredictRequest  # a tile already encoded, or a message (the header)


@dataclass(frozen=True)
class TileReply:
    """One streamed result: the tile's id, its outputs, and where its time went in the server."""

    id: int
    outputs: list[Array]
    version: int
    queue_us: int
    compute_us: int
    batch_size: int
    error: TilecastError | None = None  # this tile alone failed (its deadline ran out); no outputs then


def reply_from(response: inference_pb2.StreamPredictResponse) -> TileReply:
    result, timing = response.result, response.result.timing
    error = error_for_status(_STATUS_BY_NUMBER.get(result.code, grpc.StatusCode.UNKNOWN), result.message) \
        if result.code else None
    return TileReply(result.id, [tensors.decode(t) for t in result.outputs], response.version,
                     timing.queue_us, timing.compute_us, timing.batch_size, error)


def status_code(exc: grpc.RpcError) -> grpc.StatusCode:
    """A failed call's status: a blocking call's error and an asyncio call's (grpc.aio.AioRpcError, which
    is not a grpc.Call) both carry it; UNKNOWN for an error without one."""
    code = getattr(exc, "code", None)
    return code() if callable(code) else grpc.StatusCode.UNKNOWN


def translate(exc: grpc.RpcError) -> TilecastError:
    """The tilecast error a failed call stands for, with the server's message."""
    code = status_code(exc)
    details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
    if code == grpc.StatusCode.UNAVAILABLE and not details:
        details = "server unavailable"
    return error_for_status(code, details or code.name)


def serving(outcome: health_pb2.HealthCheckResponse | grpc.RpcError) -> bool:
    """Whether a server's answer to an overall health check means it serves: SERVING (its models
    loaded, not shutting down), or no health service at all (then a connection is all one can know).
    Not yet: NOT_SERVING, or no answer in time. Anything else is raised as a tilecast error."""
    if isinstance(outcome, health_pb2.HealthCheckResponse):
        return bool(outcome.status == health_pb2.HealthCheckResponse.SERVING)
    code = status_code(outcome)
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return True
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return False
    raise translate(outcome)


def health_pause(outcome: health_pb2.HealthCheckResponse | grpc.RpcError, end: float, address: str,
                 timeout: float) -> float | None:
    """None once a health check's outcome says the server serves; else the seconds to wait before
    asking again. Raises Unavailable once `end` (on time.monotonic's clock) has passed."""
    if serving(outcome):
        return None
    left = end - time.monotonic()
    if left <= 0:
        raise error_for_status(grpc.StatusCode.UNAVAILABLE, f"the server at {address} answers but did not become "
                               f"ready within {timeout:g} s (still loading its models, or shutting down)")
    return min(HEALTH_POLL_S, left)


def check_window(window: int) -> None:
    """Refuse a window that would never let a tile go (0 waits forever) or makes no sense (negative)."""
    if window < 1:
        raise InvalidOption("--window", window, "give the tiles to keep in flight, 1 or more")


def _call(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except grpc.RpcError as exc:
        raise translate(exc) from exc


class Client:
    """A connection to one or more tilecast servers.

    Several addresses are spread over with gRPC's round_robin policy (host names resolved into one
    `ipv4:a:p1,b:p2` or `ipv6:` target: `tilecast.client.addresses`).
    """

    def __init__(self, address: str | Sequence[str], *, max_message_bytes: int = DEFAULT_MESSAGE_BYTES,
                 timeout: float | None = 60.0, security: Security | None = None, token: str | None = None) -> None:
        """`security`: TLS and mutual TLS (`tilecast.client.channels`; a grpcs:// address turns TLS on);
        `token`: the bearer token a server started with --auth-tokens asks for."""
        self.address, security = target_of(address, security, token)
        self.security = security
        self.timeout = timeout
        self._channel = open_channel(address, client_options(max_message_bytes), security)
        self._stub = inference_pb2_grpc.InferenceStub(self._channel)  # type: ignore[no-untyped-call]
        # Tiles travel pre-encoded (`wire.stream_tile`): one copy of the pixels instead of four.
        self._stream_predict = self._channel.stream_stream(
            STREAM_PREDICT, request_serializer=wire.serialize,
            response_deserializer=inference_pb2.StreamPredictResponse.FromString)
        self._predict = self._channel.unary_unary(
            PREDICT, request_serializer=wire.serialize, response_deserializer=inference_pb2.PredictResponse.FromString)
        self._health = self._channel.unary_unary(
            HEALTH_CHECK, request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def wait_ready(self, timeout: float, *, until_serving: bool = True, connect_timeout: float | None = None) -> None:
        """Block until the server serves: connected, and its health SERVING (a server answers health
        checks while it loads its models), or only connected with `until_serving=False` (to ask what
        it is loading). Raises Unavailable when no server answers within `connect_timeout` seconds
        (default: `timeout`), or it does not serve within `timeout`.

        The first health check waits for the connection (wait_for_ready): grpc's channel_ready_future
        leaves a thread polling the channel that fails once it is closed, when used twice on one channel."""
        end = time.monotonic() + timeout
        connect = timeout if connect_timeout is None else min(timeout, connect_timeout)
        request = health_pb2.HealthCheckRequest()
        try:
            outcome = self._health(request, timeout=connect, wait_for_ready=True)
        except grpc.RpcError as exc:
            if status_code(exc) == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise error_for_status(grpc.StatusCode.UNAVAILABLE, f"no tilecast server answered at {self.address} "
                                       f"within {connect:g} s{self.security.hint()}") from None
            outcome = exc
        while until_serving:
            pause = health_pause(outcome, end, self.address, timeout)
            if pause is None:
                return
            time.sleep(pause)
            try:
                outcome = self._health(request, timeout=max(0.01, end - time.monotonic()))
            except grpc.RpcError as exc:
                outcome = exc

    def list_models(self) -> list[inference_pb2.ModelStatus]:
        response = _call(lambda: self._stub.ListModels(inference_pb2.ListModelsRequest(), timeout=self.timeout))
        return list(response.models)

    def get_model(self, name: str, version: int = 0) -> manifest_pb2.ModelManifest:
        request = inference_pb2.GetModelRequest(name=name, version=version)
        response: inference_pb2.GetModelResponse = _call(lambda: self._stub.GetModel(request, timeout=self.timeout))
        return response.manifest

    def predict(self, model: str, batch: Array, *, version: int = 0,
                parameters: inference_pb2.ImageParameters | None = None) -> list[Array]:
        """Run an NHWC batch in one call; returns each output with the batch axis first."""
        request = wire.predict_request(model, version, batch, parameters)
        response = _call(lambda: self._predict(request, timeout=self.timeout))
        return [np.array(tensors.decode(t)) for t in response.outputs]

    def stream(
        self,
        model: str,
        tiles: Iterable[tuple[int, Array]],
        *,
        version: int = 0,
        parameters: inference_pb2.ImageParameters | None = None,
        window: int = 32,
        timeout: float | None = None,
        tile_deadline_ms: int = 0,
    ) -> Generator[TileReply, None, None]:
        """Stream (id, HWC tile) pairs; yield a TileReply for each as results arrive, in any order.

        At most `window` tiles are in flight: the next tile is read only when a result comes back,
        so memory is bounded by the window whatever the number of tiles. With `tile_deadline_ms`, a
        tile the server has not started within that budget comes back with `error` set (DeadlineExceeded).
        """
        if tile_deadline_ms < 0:
            raise InvalidArgument(f"a per-tile deadline must be 0 (none) or a positive number of ms, "
                                  f"not {tile_deadline_ms}")
        check_window(window)
        slots = threading.Semaphore(window)
        finished = threading.Event()
        source_errors: list[BaseException] = []

        def requests() -> Iterator[StreamItem]:
            header = inference_pb2.StreamHeader(model=model, version=version, parameters=parameters)
            yield inference_pb2.StreamPredictRequest(header=header)
            try:
                for tile_id, tile in tiles:
                    while not slots.acquire(timeout=0.1):
                        if finished.is_set():
                            return
                    if finished.is_set():
                        return
                    yield wire.stream_tile(tile_id, tile, tile_deadline_ms)
            except Exception as exc:  # reading a tile failed: end the stream, re-raise in the caller
                source_errors.append(exc)

        try:
            for reply in self.stream_raw(requests(), timeout=timeout):
                slots.release()
                yield reply
        finally:
            finished.set()
        if source_errors:
            raise source_errors[0]

    def stream_raw(self, requests: Iterator[StreamItem],
                   timeout: float | None = None) -> Generator[TileReply, None, None]:
        """StreamPredict over ready-made messages (the header first); replies as they arrive."""
        call = self._stream_predict(requests, timeout=timeout)
        try:
            for response in call:
                yield reply_from(response)
        except grpc.RpcError as exc:
            raise translate(exc) from exc
        finally:
            call.cancel()
