"""A batcher's counts: tiles, batches and where their time went (Triton's statistics extension reads
them; `DynamicBatcher.keep_books()` brings them up to date outside the engine path)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Duration:
    """How many, and the seconds they took together."""

    count: int = 0
    seconds: float = 0.0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.seconds += seconds


@dataclass
class SizeStats:
    """Engine calls of one batch size: how many, and their stacking and engine seconds."""

    batches: int = 0
    prepare_seconds: float = 0.0
    compute_seconds: float = 0.0


@dataclass
class BatchStats:
    """Counters a test, a log line or a statistics request reads, brought up to date by `keep_books()`.

    The per-tile durations count each tile once, with its own wait and its batch's whole engine call
    (as Triton counts the requests of a batch)."""

    batches: int = 0
    tiles: int = 0
    largest_batch: int = 0
    expired: int = 0
    succeeded: Duration = field(default_factory=Duration)  # per tile: from queueing to result
    failed: Duration = field(default_factory=Duration)  # per tile: engine failed, or deadline passed queued
    queued: Duration = field(default_factory=Duration)  # per tile: waiting for a batch and an engine
    prepared: Duration = field(default_factory=Duration)  # per tile: stacking its batch
    computed: Duration = field(default_factory=Duration)  # per tile: its batch's engine call
    by_size: dict[int, SizeStats] = field(default_factory=dict)
    last_batch_at: float = 0.0  # time.time() when the last batch was counted; 0 before the first

    def count(self, done: Done) -> None:
        waited = sum(done.waits)  # each wait runs to the engine call, so it holds the stacking too
        if done.failed:
            self.failed.add(waited + done.compute * done.size, done.size)
            return
        self.batches += 1
        self.tiles += done.size
        self.largest_batch = max(self.largest_batch, done.size)
        self.succeeded.add(waited + done.compute * done.size, done.size)
        self.queued.add(waited - done.prepare * done.size, done.size)
        self.prepared.add(done.prepare * done.size, done.size)
        self.computed.add(done.compute * done.size, done.size)
        size = self.by_size.setdefault(done.size, SizeStats())
        size.batches += 1
        size.prepare_seconds += done.prepare
        size.compute_seconds += done.compute
        self.last_batch_at = time.time()

    def expire(self, waited: float) -> None:
        self.expired += 1
        self.failed.add(waited)


@dataclass(slots=True)
class Done:
    """What one engine call did, for `stats` and the observer: counted by `keep_books()`."""

    size: int
    waits: list[float]
    prepare: float  # stacking the batch
    compute: float
    failed: bool
