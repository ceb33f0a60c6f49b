"""Streams for acquisition software: send tiles as the microscope produces them, read results as they finish.

    with Client("127.0.0.1:8500") as client, LiveStream(client, "ihc-colorize") as live:
        live.send(0, tile)                 # returns at once unless `window` tiles are waiting
        reply = live.receive(timeout=1.0)  # TileReply: id, outputs, server queue/compute time, latency

    async with AsyncClient("127.0.0.1:8500") as client, client.live("ihc-colorize") as live:
        await live.send(0, tile)
        reply = await live.receive()

Each reply carries `latency_s`, the time from `send` to its result.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from tilecast.client.channels import Security, client_options, open_aio_channel, target_of
from tilecast.client.remote import (
    DEFAULT_MESSAGE_BYTES,
    HEALTH_CHECK,
    STREAM_PREDICT,
    Array,
    Client,
    StreamItem,
    TileReply,
    check_window,
    health_pause,
    reply_from,
    translate,
)
from tilecast.proto import wire
from tilecast.proto.errors import Unavailable
from tilecast.proto.v1 import inference_pb2, inference_pb2_grpc, manifest_pb2

_END = object()


@dataclass(frozen=True)
class LiveReply(TileReply):
    latency_s: float = 0.0  # send() to result, as the caller sees it


class LiveStream:
    """A StreamPredict call kept open; `send` and `receive` may be called from different threads."""

    def __init__(self, client: Client, model: str, *, version: int = 0, window: int = 32,
                 parameters: inference_pb2.ImageParameters | None = None) -> None:
        check_window(window)
        self._outgoing: queue.Queue[Any] = queue.Queue()
        self._incoming: queue.Queue[Any] = queue.Queue()
        self._slots = threading.Semaphore(window)
        self._sent_at: dict[int, float] = {}
        header = inference_pb2.StreamHeader(model=model, version=version, parameters=parameters)

        def requests() -> Iterator[StreamItem]:
            yield inference_pb2.StreamPredictRequest(header=header)
            while (item := self._outgoing.get()) is not _END:
                yield item

        self._replies = client.stream_raw(requests())
        self._reader = threading.Thread(target=self._read, name="tilecast-live", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for reply in self._replies:
                self._slots.release()
                self._incoming.put(reply)
        except Exception as exc:  # delivered to the caller by receive()
            self._incoming.put(exc)
        self._incoming.put(_END)

    def send(self, tile_id: int, tile: Array, timeout: float | None = None, deadline_ms: int = 0) -> None:
        """Queue a tile; blocks only while `window` tiles await their results. With `deadline_ms`, a tile
        the server cannot start within that budget is answered with `error` set instead of outputs."""
        if not self._slots.acquire(timeout=timeout):
            raise TimeoutError(f"{timeout} s passed with the window full; receive results first")
        self._sent_at[tile_id] = time.perf_counter()
        self._outgoing.put(wire.stream_tile(tile_id, tile, deadline_ms))

    def receive(self, timeout: float | None = None) -> LiveReply | None:
        """The next finished tile, or None once the stream has ended."""
        item = self._incoming.get(timeout=timeout)
        if item is _END:
            self._incoming.put(_END)
            return None
        if isinstance(item, BaseException):
            raise item
        return LiveReply(**vars(item), latency_s=time.perf_counter() - self._sent_at.pop(item.id, time.perf_counter()))

    def results(self) -> Iterator[LiveReply]:
        while (reply := self.receive()) is not None:
            yield reply

    def close(self) -> None:
        """No more tiles; results already on their way can still be received."""
        self._outgoing.put(_END)

    def __enter__(self) -> LiveStream:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
        if exc is not None:
            self._replies.close()


class AsyncClient:
    """The asyncio counterpart of `Client` for applications that already run an event loop."""

    def __init__(self, address: str | Sequence[str], *, max_message_bytes: int = DEFAULT_MESSAGE_BYTES,
                 security: Security | None = None, token: str | None = None) -> None:
        """`security` and `token` as `Client`'s."""
        self.address, security = target_of(address, security, token)
        self._channel = open_aio_channel(address, client_options(max_message_bytes), security)
        self._metadata = tuple(security.metadata())  # the token, sent with each call
        self._stub = inference_pb2_grpc.InferenceStub(self._channel)  # type: ignore[no-untyped-call]
        self._stream_predict = self._channel.stream_stream(
            STREAM_PREDICT, request_serializer=wire.serialize,
            response_deserializer=inference_pb2.StreamPredictResponse.FromString)
        self._health = self._channel.unary_unary(
            HEALTH_CHECK, request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._channel.close()

    async def wait_ready(self, timeout: float) -> None:
        """Wait until the server serves (as `Client.wait_ready`); Unavailable after `timeout` seconds."""
        end = time.monotonic() + timeout
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout)
        except TimeoutError:
            raise Unavailable(f"no tilecast server answered at {self.address} within {timeout:g} s") from None
        while True:
            try:
                outcome = await self._health(health_pb2.HealthCheckRequest(),
                                             timeout=max(0.01, end - time.monotonic()))
            except grpc.RpcError as exc:
                outcome = exc
            pause = health_pause(outcome, end, self.address, timeout)
            if pause is None:
                return
            await asyncio.sleep(pause)

    async def get_model(self, name: str, version: int = 0) -> manifest_pb2.ModelManifest:
        try:
            response = await self._stub.GetModel(inference_pb2.GetModelRequest(name=name, version=version),
                                                 metadata=self._metadata)
        except grpc.RpcError as exc:
            raise translate(exc) from exc
        manifest: manifest_pb2.ModelManifest = response.manifest
        return manifest

    def live(self, model: str, *, version: int = 0, window: int = 32) -> AsyncLiveStream:
        check_window(window)  # before the call opens
        return AsyncLiveStream(self._stream_predict(metadata=self._metadata), model, version, window)


class AsyncLiveStream:
    def __init__(self, call: Any, model: str, version: int, window: int) -> None:
        self._call = call
        self._header = inference_pb2.StreamHeader(model=model, version=version)
        self._slots = asyncio.Semaphore(window)
        self._sent_at: dict[int, float] = {}
        self._closed = False

    async def __aenter__(self) -> AsyncLiveStream:
        await self._call.write(inference_pb2.StreamPredictRequest(header=self._header))
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            await self.close()
        else:
            self._call.cancel()

    async def send(self, tile_id: int, tile: Array, deadline_ms: int = 0) -> None:
        """As `LiveStream.send`: waits while `window` tiles are in flight; `deadline_ms` as there."""
        await self._slots.acquire()
        self._sent_at[tile_id] = time.perf_counter()
        try:
            await self._call.write(wire.stream_tile(tile_id, tile, deadline_ms))
        except grpc.RpcError as exc:
            raise translate(exc) from exc

    async def receive(self) -> LiveReply | None:
        try:
            response = await self._call.read()
        except grpc.RpcError as exc:
            raise translate(exc) from exc
        if response is grpc.aio.EOF:
            return None
        self._slots.release()
        reply = reply_from(response)
        return LiveReply(**vars(reply), latency_s=time.perf_counter() - self._sent_at.pop(reply.id, 0.0))

    async def results(self) -> AsyncIterator[LiveReply]:
        while (reply := await self.receive()) is not None:
            yield reply

    async def close(self) -> None:
        """No more tiles; results already on their way can still be received."""
        if not self._closed:
            self._closed = True
            await self._call.done_writing()


__all__ = ["AsyncClient", "AsyncLiveStream", "LiveReply", "LiveStream"]
