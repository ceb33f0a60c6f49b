"""Assemble and run the gRPC server: repository -> engines -> batchers -> servicer, health, reflection."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from tilecast.proto.v1 import inference_pb2, inference_pb2_grpc
from tilecast.server.backends.base import Backend
from tilecast.server.backends.ort import OnnxRuntimeBackend
from tilecast.server.batching import DynamicBatcher
from tilecast.server.repository import Registry, load_version, scan
from tilecast.server.servicer import InferenceServicer
from tilecast.server.settings import Settings

log = logging.getLogger(__name__)

SERVICE_NAME = inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name


class TilecastServer:
    """A running server. `start()` binds and loads; `stop()` drains in-flight work within the grace period."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = 0
        self.registry = Registry([])
        self.batchers: dict[tuple[str, int], DynamicBatcher] = {}
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="engine")
        self._server: grpc.aio.Server | None = None
        self._health = HealthServicer()

    def _open_backend(self, path: Path) -> Backend:
        return OnnxRuntimeBackend(path, threads=self.settings.threads)

    async def _load_models(self) -> None:
        loop = asyncio.get_running_loop()
        versions = []
        for name, version, path in scan(self.settings.repository):
            # Session creation compiles graphs; keep it off the event loop.
            versions.append(await loop.run_in_executor(
                self._executor, load_version, name, version, path, self._open_backend))
        self.registry = Registry(versions)
        for entry in versions:
            if entry.backend is None or entry.manifest is None:
                continue
            backend = entry.backend
            batcher = DynamicBatcher(
                backend.infer, self._executor,
                max_batch_size=min(self.settings.max_batch_size, entry.manifest.tiling.max_batch_size),
                max_queue_size=self.settings.max_queue_size,
                max_queue_delay_s=self.settings.max_queue_delay_ms / 1000,
                instances=self.settings.instances,
                name=f"{entry.name}/{entry.version}",
            )
            batcher.start()
            self.batchers[(entry.name, entry.version)] = batcher
        for name in sorted({v.name for v in versions}):
            ready = any(v.backend is not None for v in versions if v.name == name)
            status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
            await self._health.set(name, status)

    async def start(self) -> int:
        """Load the repository, bind, and start serving; returns the bound port."""
        await self._load_models()
        limit = self.settings.max_message_bytes
        server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ])
        inference_pb2_grpc.add_InferenceServicer_to_server(  # type: ignore[no-untyped-call]
            InferenceServicer(self.registry, self.batchers, self.settings), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME], server)
        address = f"{self.settings.host}:{self.settings.port}"
        self.port = server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot listen on {address}: address in use or not available")
        await server.start()
        self._server = server
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self._health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        ready = sum(v.backend is not None for v in self.registry.versions)
        log.info("serving %d model version(s) on %s:%d", ready, self.settings.host, self.port)
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let in-flight calls finish within the grace period, then release engines."""
        await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(self.settings.grace_period_s if grace is None else grace)
        for batcher in self.batchers.values():
            await batcher.close()
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


async def serve_until_signalled(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully (the `tilecast serve` main loop)."""
    server = TilecastServer(settings)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: finishing work in flight (up to %.0f s)", settings.grace_period_s)
    await server.stop()


class ServerThread:
    """A server on its own event loop in a background thread: for embedding and for tests.

        with ServerThread(Settings(repository=path, port=0)) as server:
            client = Client(f"127.0.0.1:{server.port}")
    """

    def __init__(self, settings: Settings) -> None:
        self.server = TilecastServer(settings)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tilecast-server", daemon=True)

    @property
    def port(self) -> int:
        return self.server.port

    def __enter__(self) -> ServerThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(timeout=120)
        return self

    def stop(self, grace: float | None = 0.0) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.server.stop(grace), self._loop).result(timeout=120)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
