"""Dynamic batching: one queue per model, one future per tile, flushed whenever an engine is free.

The batcher never sees protobuf: requests are dicts of per-sample NumPy arrays. Tiles whose arrays
have the same shapes and dtypes are stacked into one engine call of up to `max_batch_size`.
With `max_queue_delay` = 0 an idle engine starts at once on whatever is waiting; under load the
tiles that arrived during the previous call form the next batch. A positive delay lets a batch
that is not full wait that long for more tiles.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from tilecast.proto.errors import Internal, ResourceExhausted, TilecastError, Unavailable
from tilecast.server.backends.base import Array

log = logging.getLogger(__name__)

Feeds = dict[str, Array]
RunBatch = Callable[[Feeds], list[Array]]


def _batch_key(sample: Feeds) -> tuple[tuple[str, tuple[int, ...], str], ...]:
    return tuple((name, a.shape, a.dtype.str) for name, a in sorted(sample.items()))


@dataclass
class _Request:
    sample: Feeds
    future: asyncio.Future[list[Array]]
    key: tuple[tuple[str, tuple[int, ...], str], ...] = field(init=False)

    def __post_init__(self) -> None:
        self.key = _batch_key(self.sample)


@dataclass
class BatchStats:
    """Counters a metrics exporter or a test can read."""

    batches: int = 0
    tiles: int = 0
    largest_batch: int = 0
    batch_sizes: collections.Counter[int] = field(default_factory=collections.Counter)
    compute_seconds: float = 0.0


class DynamicBatcher:
    def __init__(
        self,
        run: RunBatch,
        executor: Executor,
        *,
        max_batch_size: int,
        max_queue_size: int,
        max_queue_delay_s: float = 0.0,
        instances: int = 1,
        name: str = "model",
    ) -> None:
        self._run = run
        self._executor = executor
        self._max_batch = max_batch_size
        self._max_queue = max_queue_size
        self._delay = max_queue_delay_s
        self._instances = instances
        self._name = name
        self._pending: collections.deque[_Request] = collections.deque()
        self._wakeup = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._closed = False
        self.stats = BatchStats()

    def start(self) -> None:
        self._workers = [asyncio.create_task(self._work(), name=f"batcher-{self._name}-{i}")
                         for i in range(self._instances)]

    async def close(self) -> None:
        """Stop taking tiles, fail what still waits, and stop the workers after their current call."""
        self._closed = True
        while self._pending:
            request = self._pending.popleft()
            if not request.future.done():
                request.future.set_exception(Unavailable(f"model {self._name} is being unloaded"))
        self._wakeup.set()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    @property
    def queued(self) -> int:
        return len(self._pending)

    async def submit(self, sample: Feeds) -> list[Array]:
        """Queue one tile's arrays and wait for its outputs (without the batch axis)."""
        if self._closed:
            raise Unavailable(f"model {self._name} is being unloaded; retry")
        if len(self._pending) >= self._max_queue:
            raise ResourceExhausted(
                f"model {self._name}: queue is full ({self._max_queue} tiles waiting); "
                "send fewer tiles at once or retry later"
            )
        request = _Request(sample, asyncio.get_running_loop().create_future())
        self._pending.append(request)
        self._wakeup.set()
        return await request.future  # cancelling this marks the request, the worker skips it

    def _take_batch(self) -> list[_Request]:
        """Pop up to max_batch live requests with the first one's key; others keep their place."""
        batch: list[_Request] = []
        kept: collections.deque[_Request] = collections.deque()
        while self._pending and len(batch) < self._max_batch:
            request = self._pending.popleft()
            if request.future.done():  # cancelled by its stream
                continue
            if batch and request.key != batch[0].key:
                kept.append(request)
                continue
            batch.append(request)
        kept.extend(self._pending)
        self._pending = kept
        return batch

    async def _work(self) -> None:
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            if self._delay and len(self._pending) < self._max_batch:
                deadline = time.monotonic() + self._delay
                while len(self._pending) < self._max_batch and time.monotonic() < deadline:
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), deadline - time.monotonic())
                    except TimeoutError:
                        break
            batch = self._take_batch()
            if batch:
                await self._execute(batch)

    async def _execute(self, batch: list[_Request]) -> None:
        feeds = {name: np.stack([r.sample[name] for r in batch]) for name in batch[0].sample}
        started = time.perf_counter()
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self._run, feeds)
        except TilecastError as exc:
            error: Exception = exc
        except Exception as exc:  # an engine failure must fail these tiles, not the worker
            log.exception("model %s: engine call failed", self._name)
            error = Internal(f"model {self._name}: engine failed on a batch of {len(batch)}: {exc}")
        else:
            self._record(len(batch), time.perf_counter() - started)
            for i, request in enumerate(batch):
                if not request.future.done():
                    request.future.set_result([out[i] for out in outputs])
            return
        for request in batch:
            if not request.future.done():
                request.future.set_exception(error)

    def _record(self, size: int, seconds: float) -> None:
        s = self.stats
        s.batches += 1
        s.tiles += size
        s.largest_batch = max(s.largest_batch, size)
        s.batch_sizes[size] += 1
        s.compute_seconds += seconds
