"""Prometheus metrics on their own HTTP port, in a registry owned by the server (no process globals)."""

from __future__ import annotations

import hashlib
import hmac
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app, start_http_server
from prometheus_client.exposition import ThreadingWSGIServer

BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
TIME_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
STATES = ("ready", "loading", "failed", "unloading")


class InFlight(Protocol):
    @property
    def in_flight(self) -> int: ...


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("tilecast_requests", "RPCs by model, method and status code",
                                ["model", "method", "code"], registry=r)
        self.tiles = Counter("tilecast_tiles", "Tiles computed, by model", ["model"], registry=r)
        self.failed_tiles = Counter("tilecast_failed_tiles", "Tiles whose engine call failed", ["model"], registry=r)
        self.expired_tiles = Counter("tilecast_expired_tiles", "Tiles dropped: their deadline passed in the queue",
                                     ["model"], registry=r)
        self.queue_seconds = Histogram("tilecast_queue_seconds", "Time a tile waited for a batch and an engine",
                                       ["model"], buckets=TIME_BUCKETS, registry=r)
        self.compute_seconds = Histogram("tilecast_compute_seconds", "Duration of engine calls",
                                         ["model"], buckets=TIME_BUCKETS, registry=r)
        self.batch_size = Histogram("tilecast_batch_size", "Tiles per engine call", ["model"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.in_flight = Gauge("tilecast_tiles_in_flight", "Tiles queued for or in an engine call", ["model"],
                               registry=r)
        self.model_state = Gauge("tilecast_model_state", "1 for the state each model version is in",
                                 ["model", "version", "state"], registry=r)
        self._http: WSGIServer | None = None
        # Read when scraped, so counting tiles in flight costs the hot path nothing.
        self._in_flight_sources: dict[str, weakref.WeakSet[InFlight]] = {}

    def serve_http(self, host: str, port: int, token: str | None = None) -> int:
        """Expose /metrics; returns the bound port (0 picks a free one). With `token`, a scrape must send
        `Authorization: Bearer <token>` (else 401)."""
        if token is None:
            server, _thread = start_http_server(port, addr=host, registry=self.registry)
        else:
            server = make_server(host, port, _bearer_only(make_wsgi_app(self.registry), token), ThreadingWSGIServer,
                                 handler_class=_Quiet)
            threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        self._http = server
        return int(server.server_port)

    def stop_http(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    def set_state(self, model: str, version: int, state: str) -> None:
        for candidate in STATES:
            self.model_state.labels(model, str(version), candidate).set(1 if candidate == state else 0)

    def forget(self, model: str, version: int) -> None:
        for candidate in STATES:
            self.model_state.remove(model, str(version), candidate)

    def observer(self, model: str) -> ModelObserver:
        return ModelObserver(self, model)

    def count_in_flight(self, model: str, source: InFlight) -> None:
        """Add a batcher's tiles to the model's in-flight gauge (until the batcher is gone)."""
        if model not in self._in_flight_sources:
            sources: weakref.WeakSet[InFlight] = weakref.WeakSet()
            self._in_flight_sources[model] = sources
            self.in_flight.labels(model).set_function(lambda: sum(s.in_flight for s in list(sources)))
        self._in_flight_sources[model].add(source)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged (the base class writes each to stderr)."""


Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _bearer_only(app: Wsgi, token: str) -> Wsgi:
    """`app` for requests whose Authorization header carries `token` (compared in constant time)."""
    expected = hashlib.sha256(f"Bearer {token}".encode()).digest()

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        given = hashlib.sha256(str(environ.get("HTTP_AUTHORIZATION", "")).encode()).digest()
        if not hmac.compare_digest(given, expected):
            start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")])
            return [b"a bearer token is needed for /metrics\n"]
        return app(environ, start_response)

    return guarded


class ModelObserver:
    """The batcher's view of the metrics for one model."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self._metrics = metrics
        self._model = model
        self._queue = metrics.queue_seconds.labels(model)
        self._compute = metrics.compute_seconds.labels(model)
        self._batch = metrics.batch_size.labels(model)
        self._tiles = metrics.tiles.labels(model)
        self._failed = metrics.failed_tiles.labels(model)
        self._expired = metrics.expired_tiles.labels(model)

    def track(self, batcher: InFlight) -> None:
        self._metrics.count_in_flight(self._model, batcher)

    def batch_done(self, size: int, queue_seconds: Sequence[float], compute_seconds: float) -> None:
        self._batch.observe(size)
        self._compute.observe(compute_seconds)
        self._tiles.inc(size)
        for wait in queue_seconds:
            self._queue.observe(wait)

    def batch_failed(self, size: int) -> None:
        self._failed.inc(size)

    def tiles_expired(self, count: int) -> None:
        self._expired.inc(count)
