"""The tilecast.v1.Inference servicer: protobuf in, NumPy to the batchers, protobuf out.

Typed errors become gRPC status codes here, in one place (`_handle_errors` and the two decorators).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import grpc
import numpy as np

from tilecast.proto import wire
from tilecast.proto.errors import DeadlineExceeded, InvalidArgument, TilecastError
from tilecast.proto.v1 import inference_pb2, inference_pb2_grpc
from tilecast.server.backends.base import Array
from tilecast.server.batching import Ticket, TileOutputs
from tilecast.server.metrics import Metrics
from tilecast.server.models import ModelManager, Served
from tilecast.server.settings import Settings
from tilecast.server.validation import parameter_feeds

log = logging.getLogger(__name__)

# A stream's results go out pre-encoded (`tilecast.proto.wire`); other answers as messages.
StreamReply: TypeAlias = bytes | inference_pb2.StreamPredictResponse
Req = TypeVar("Req")
Resp = TypeVar("Resp")
# grpc ships no type information; this names what the handlers receive.
Context: TypeAlias = Any  # grpc.aio.ServicerContext


async def _abort(context: Context, exc: BaseException) -> None:
    if isinstance(exc, TilecastError):
        await context.abort(exc.code, str(exc))
    log.exception("unexpected error in a request", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal server error: {type(exc).__name__}: {exc}")


def _model_of(request: object) -> str:
    return getattr(request, "model", "") or getattr(request, "name", "")


def unary_errors(
    handler: Callable[[Any, Req, Context], Awaitable[Resp]],
) -> Callable[[Any, Req, Context], Awaitable[Resp]]:
    @functools.wraps(handler)
    async def wrapper(self: InferenceServicer, request: Req, context: Context) -> Resp:
        code = "OK"
        try:
            return await handler(self, request, context)
        except Exception as exc:
            code = exc.code.name if isinstance(exc, TilecastError) else "INTERNAL"
            await _abort(context, exc)
            raise  # unreachable: abort raises
        finally:
            self.count(_model_of(request), handler.__name__, code)

    return wrapper


@dataclass
class CallRecord:
    """What a streaming handler learns as it goes, for the request counter."""

    model: str = ""
    code: str = "OK"


def stream_errors(
    handler: Callable[[Any, Req, Context, CallRecord], AsyncIterator[Resp]],
) -> Callable[[Any, Req, Context], AsyncIterator[Resp]]:
    @functools.wraps(handler)
    async def wrapper(self: InferenceServicer, requests: Req, context: Context) -> AsyncIterator[Resp]:
        record = CallRecord()
        try:
            async for item in handler(self, requests, context, record):
                yield item
        except asyncio.CancelledError:
            record.code = "CANCELLED"
            raise
        except Exception as exc:
            record.code = exc.code.name if isinstance(exc, TilecastError) else "INTERNAL"
            await _abort(context, exc)
        finally:
            self.count(record.model, handler.__name__, record.code)

    return wrapper


def _deadline(context: Context) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _timing(result: TileOutputs) -> wire.Encoded:
    return wire.server_timing(int(result.queue_seconds * 1e6), int(result.compute_seconds * 1e6), result.batch_size)


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    def __init__(self, models: ModelManager, metrics: Metrics, settings: Settings) -> None:
        self._models = models
        self._metrics = metrics
        self._settings = settings

    def count(self, model: str, method: str, code: str) -> None:
        self._metrics.requests.labels(model or "-", method, code).inc()

    @unary_errors
    async def ListModels(
        self, request: inference_pb2.ListModelsRequest, context: Context
    ) -> inference_pb2.ListModelsResponse:
        return inference_pb2.ListModelsResponse(models=self._models.statuses())

    @unary_errors
    async def GetModel(
        self, request: inference_pb2.GetModelRequest, context: Context
    ) -> inference_pb2.GetModelResponse:
        return inference_pb2.GetModelResponse(manifest=self._models.resolve(request.name, request.version).manifest)

    @unary_errors
    async def Predict(self, request: inference_pb2.PredictRequest, context: Context) -> bytes:
        async with self._models.lease(request.model, request.version) as served:
            manifest = served.manifest
            batch = served.check(request.tiles, batched=True)
            extra = parameter_feeds(manifest, request.parameters)
            name, deadline = served.check.input_name, _deadline(context)
            assert served.batcher is not None  # a resolved version is ready
            in_flight = self._metrics.in_flight.labels(request.model)
            in_flight.inc(len(batch))
            try:
                results = await served.batcher.run_all([{name: t, **extra} for t in batch], deadline)
            finally:
                in_flight.dec(len(batch))
            outputs = [results[0].outputs[i][None] if len(results) == 1 else np.stack([r.outputs[i] for r in results])
                       for i in range(len(results[0].outputs))]
            slowest = max(results, key=lambda r: r.queue_seconds + r.compute_seconds)
            return wire.predict_response(served.entry.name, served.entry.version, outputs, _timing(slowest))

    @stream_errors
    async def StreamPredict(
        self, requests: AsyncIterator[inference_pb2.StreamPredictRequest], context: Context, record: CallRecord
    ) -> AsyncIterator[StreamReply]:
        first = await anext(aiter(requests), None)
        if first is None:
            return
        if first.WhichOneof("item") != "header":
            raise InvalidArgument("the first message of a stream must be a header naming the model")
        record.model = first.header.model
        async with self._models.lease(first.header.model, first.header.version) as served:
            extra = parameter_feeds(served.manifest, first.header.parameters)
            stream = _TileStream(served, extra, self._settings.max_tiles_in_flight_per_stream,
                                 _deadline(context), self._metrics)
            async for response in stream.run(requests):
                yield response


_DONE = object()


class _TileStream:
    """One StreamPredict call: read tiles, queue each in the batcher, send results as they finish.

    At most `window` tiles are in flight; beyond that the reader stops reading, and gRPC's flow
    control holds the client back. A result is encoded in the batcher's delivery callback, in the
    loop turn the engine finishes, and written in the next one.
    """

    def __init__(self, served: Served, extra: dict[str, Array], window: int, deadline: float | None,
                 metrics: Metrics) -> None:
        assert served.batcher is not None
        self._manifest = served.manifest
        self._version = served.entry.version
        self._check = served.check
        self._input = self._check.input_name
        self._batcher = served.batcher
        self._extra = extra
        self._deadline = deadline
        self._in_flight = metrics.in_flight.labels(self._manifest.name)
        self._slots = asyncio.Semaphore(window)
        self._results: asyncio.Queue[object] = asyncio.Queue()
        self._waiting: dict[int, Ticket] = {}  # by arrival number: a client may reuse tile ids
        self._arrivals = itertools.count()
        self._reading_done = False

    def _done(self, arrival: int, tile_id: int, own_deadline: bool, outcome: TileOutputs | TilecastError) -> None:
        del self._waiting[arrival]
        self._slots.release()
        self._in_flight.dec()
        if isinstance(outcome, TileOutputs):
            self._results.put_nowait(
                wire.stream_result(tile_id, outcome.outputs, _timing(outcome), self._version))
        elif isinstance(outcome, DeadlineExceeded) and own_deadline:  # this tile's budget ran out: answer, go on
            message = inference_pb2.TileResult(id=tile_id, code=outcome.code.value[0], message=str(outcome))
            self._results.put_nowait(inference_pb2.StreamPredictResponse(result=message, version=self._version))
        else:
            self._results.put_nowait(outcome)
        if self._reading_done and not self._waiting:
            self._results.put_nowait(_DONE)

    async def _read(self, requests: AsyncIterator[inference_pb2.StreamPredictRequest]) -> None:
        try:
            async for request in requests:
                if request.WhichOneof("item") != "tile":
                    raise InvalidArgument("a stream carries one header, then only tiles")
                message = request.tile
                try:
                    tile = self._check(message.tensor, batched=False)
                except InvalidArgument as exc:
                    raise InvalidArgument(f"tile {message.id}: {exc}") from exc
                deadline, budget_ms = self._deadline, message.deadline_ms
                if budget_ms:
                    own = time.monotonic() + budget_ms / 1000
                    deadline = own if deadline is None else min(deadline, own)
                await self._slots.acquire()
                arrival = next(self._arrivals)
                deliver = functools.partial(self._done, arrival, message.id, bool(budget_ms))
                try:
                    ticket = self._batcher.enqueue({self._input: tile, **self._extra}, deliver, deadline)
                except BaseException:
                    self._slots.release()
                    raise
                self._in_flight.inc()
                self._waiting[arrival] = ticket
            self._reading_done = True
            if not self._waiting:
                self._results.put_nowait(_DONE)
        except Exception as exc:
            self._results.put_nowait(exc)

    async def run(self, requests: AsyncIterator[inference_pb2.StreamPredictRequest]) -> AsyncIterator[StreamReply]:
        reader = asyncio.create_task(self._read(requests))
        try:
            while True:
                item = await self._results.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, bytes | inference_pb2.StreamPredictResponse)
                yield item
        finally:
            # On error or cancellation, drop this stream's queued work; other streams are untouched.
            reader.cancel()
            for ticket in self._waiting.values():
                ticket.cancel()
                self._in_flight.dec()
            self._waiting.clear()
            await asyncio.gather(reader, return_exceptions=True)
