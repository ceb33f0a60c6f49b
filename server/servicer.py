"""The tilecast.v1.Inference servicer: protobuf in, NumPy to the batchers, protobuf out.

Typed errors become gRPC status codes here, in one place (the two decorators below).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc
import numpy as np

from tilecast.proto import tensors
from tilecast.proto.errors import InvalidArgument, TilecastError
from tilecast.proto.v1 import inference_pb2, inference_pb2_grpc
from tilecast.server.backends.base import Array
from tilecast.server.batching import DynamicBatcher
from tilecast.server.repository import ModelVersion, Registry
from tilecast.server.settings import Settings
from tilecast.server.validation import check_image_tensor, parameter_feeds

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
# grpc ships no type information; this names what the handlers receive.
Context: TypeAlias = Any  # grpc.aio.ServicerContext


async def _abort(context: Context, exc: BaseException) -> None:
    if isinstance(exc, TilecastError):
        await context.abort(exc.code, str(exc))
    log.exception("unexpected error in a request", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal server error: {type(exc).__name__}: {exc}")


def unary_errors(
    handler: Callable[[Any, Req, Context], Awaitable[Resp]],
) -> Callable[[Any, Req, Context], Awaitable[Resp]]:
    @functools.wraps(handler)
    async def wrapper(self: Any, request: Req, context: Context) -> Resp:
        try:
            return await handler(self, request, context)
        except (TilecastError, Exception) as exc:
            await _abort(context, exc)
            raise  # unreachable: abort raises

    return wrapper


def stream_errors(
    handler: Callable[[Any, Req, Context], AsyncIterator[Resp]],
) -> Callable[[Any, Req, Context], AsyncIterator[Resp]]:
    @functools.wraps(handler)
    async def wrapper(self: Any, requests: Req, context: Context) -> AsyncIterator[Resp]:
        try:
            async for item in handler(self, requests, context):
                yield item
        except (TilecastError, Exception) as exc:
            await _abort(context, exc)

    return wrapper


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    def __init__(self, registry: Registry, batchers: dict[tuple[str, int], DynamicBatcher],
                 settings: Settings) -> None:
        self._registry = registry
        self._batchers = batchers
        self._settings = settings

    def _resolve(self, name: str, version: int) -> tuple[ModelVersion, DynamicBatcher]:
        entry = self._registry.get(name, version)
        return entry, self._batchers[(entry.name, entry.version)]

    @unary_errors
    async def ListModels(
        self, request: inference_pb2.ListModelsRequest, context: Context
    ) -> inference_pb2.ListModelsResponse:
        return inference_pb2.ListModelsResponse(models=self._registry.statuses())

    @unary_errors
    async def GetModel(
        self, request: inference_pb2.GetModelRequest, context: Context
    ) -> inference_pb2.GetModelResponse:
        entry = self._registry.get(request.name, request.version)
        return inference_pb2.GetModelResponse(manifest=entry.manifest)

    @unary_errors
    async def Predict(
        self, request: inference_pb2.PredictRequest, context: Context
    ) -> inference_pb2.PredictResponse:
        entry, batcher = self._resolve(request.model, request.version)
        assert entry.manifest is not None  # a ready version always has one
        batch = check_image_tensor(entry.manifest, request.tiles, batched=True)
        extra = parameter_feeds(entry.manifest, request.parameters)
        name = entry.manifest.inputs[0].name
        results = await asyncio.gather(*(batcher.submit({name: tile, **extra}) for tile in batch))
        outputs = [tensors.encode(np.stack([r[i] for r in results])) for i in range(len(results[0]))]
        return inference_pb2.PredictResponse(model=entry.name, version=entry.version, outputs=outputs)

    @stream_errors
    async def StreamPredict(
        self, requests: AsyncIterator[inference_pb2.StreamPredictRequest], context: Context
    ) -> AsyncIterator[inference_pb2.StreamPredictResponse]:
        first = await anext(aiter(requests), None)
        if first is None:
            return
        if first.WhichOneof("item") != "header":
            raise InvalidArgument("the first message of a stream must be a header naming the model")
        entry, batcher = self._resolve(first.header.model, first.header.version)
        assert entry.manifest is not None
        extra = parameter_feeds(entry.manifest, first.header.parameters)
        tile_stream = _TileStream(entry, batcher, extra, self._settings.max_tiles_in_flight_per_stream)
        async for response in tile_stream.run(requests):
            yield response


_DONE = object()


class _TileStream:
    """One StreamPredict call: read tiles, submit each to the batcher, send results as they finish.

    At most `window` tiles are in flight; beyond that the reader stops reading, and gRPC's flow
    control holds the client back.
    """

    def __init__(self, entry: ModelVersion, batcher: DynamicBatcher, extra: dict[str, Array],
                 window: int) -> None:
        assert entry.manifest is not None
        self._manifest = entry.manifest
        self._input = entry.manifest.inputs[0].name
        self._batcher = batcher
        self._extra = extra
        self._slots = asyncio.Semaphore(window)
        self._results: asyncio.Queue[object] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()

    async def _one(self, tile_id: int, tile: Array) -> None:
        try:
            outputs = await self._batcher.submit({self._input: tile, **self._extra})
            result = inference_pb2.TileResult(id=tile_id, outputs=[tensors.encode(o) for o in outputs])
            await self._results.put(inference_pb2.StreamPredictResponse(result=result))
        except Exception as exc:
            await self._results.put(exc)
        finally:
            self._slots.release()

    async def _read(self, requests: AsyncIterator[inference_pb2.StreamPredictRequest]) -> None:
        try:
            async for request in requests:
                if request.WhichOneof("item") != "tile":
                    raise InvalidArgument("a stream carries one header, then only tiles")
                try:
                    tile = check_image_tensor(self._manifest, request.tile.tensor, batched=False)
                except InvalidArgument as exc:
                    raise InvalidArgument(f"tile {request.tile.id}: {exc}") from exc
                await self._slots.acquire()
                task = asyncio.create_task(self._one(request.tile.id, tile))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            await asyncio.gather(*self._tasks)
            await self._results.put(_DONE)
        except Exception as exc:
            await self._results.put(exc)

    async def run(
        self, requests: AsyncIterator[inference_pb2.StreamPredictRequest]
    ) -> AsyncIterator[inference_pb2.StreamPredictResponse]:
        reader = asyncio.create_task(self._read(requests))
        try:
            while True:
                item = await self._results.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, inference_pb2.StreamPredictResponse)
                yield item
        finally:
            # On error or cancellation, drop this stream's queued work; other streams are untouched.
            reader.cancel()
            for task in list(self._tasks):
                task.cancel()
