"""Assemble and run the gRPC server: models -> batchers -> servicers (tilecast.v1 and KServe v2), health,
reflection, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import HealthServicer
from grpc_reflection.v1alpha import reflection

from tilecast.proto import tile_reader, wire
from tilecast.proto.v1 import inference_pb2
from tilecast.server.access import Access, read_secret, read_tokens
from tilecast.server.boundary import CallSlots, add_service
from tilecast.server.metrics import Metrics
from tilecast.server.models import ModelManager
from tilecast.server.repository import require_repository
from tilecast.server.servicer import InferenceServicer
from tilecast.server.settings import Settings
from tilecast.server.streams import IdleWatch
from tilecast.server.tls import server_credentials

log = logging.getLogger(__name__)

SERVICE_NAME = inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name
HEALTH_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


# Threads beyond the call limit, for health checks, reflection and refusing calls over the limit: these
# are never counted, so a server whose calls are all taken still answers its probes.
_SPARE_THREADS = 16


def add_inference_service(servicer: InferenceServicer, server: grpc.Server, slots: CallSlots,
                          access: Access | None = None) -> None:
    """Register the Inference methods with a serializer that also passes through responses the servicer
    has already encoded (`tilecast.proto.wire`), and tiles read without copying their pixels
    (`tilecast.proto.tile_reader`)."""
    service = inference_pb2.DESCRIPTOR.services_by_name["Inference"]
    add_service(server, service, servicer, slots, wire.serialize, {
        "StreamPredict": tile_reader.read_stream_request, "Predict": tile_reader.read_predict_request}, access)


class TilecastServer:
    """A running server. `start()` loads and binds; `stop()` drains in-flight work within the grace period.

    Model management runs on an event loop; calls are served by a threaded gRPC server, one thread
    per call, so that the thread that sends a tile's result can also compute it (see `batching`).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = 0
        self.metrics_port = 0
        self.metrics = Metrics()
        self._health = HealthServicer()
        self.models = ModelManager(settings, self.metrics, self._set_model_health)
        self._server: grpc.Server | None = None
        self._poller: asyncio.Task[None] | None = None
        self._accepting = False  # between start and the beginning of a shutdown
        self._slots = CallSlots(settings.max_concurrent_calls)
        self._idle = IdleWatch(settings.stream_idle_timeout_s)
        self._access = Access(read_tokens(settings.auth_tokens) if settings.auth_tokens else [],
                              settings.max_calls_per_peer)
        self._scrape_token = self._metrics_token()  # read once, before binding: a missing file is said first

    def _set_model_health(self, name: str, ready: bool) -> None:
        self._health.set(name, SERVING if ready else NOT_SERVING)

    async def start(self) -> int:
        """Bind both ports, serve, then load the repository; returns the bound port once every version
        has loaded or failed.

        Binding comes first so that a port in use is reported at once, not after minutes of engine
        builds, and serving starts before loading so that health checks and liveness probes are
        answered meanwhile: health is NOT_SERVING, KServe's ServerReady false, `ListModels` shows the
        versions loading, and requests for them get UNAVAILABLE until they are ready.
        """
        require_repository(self.settings.repository)  # a typo in the path is the first thing to report
        limit = self.settings.max_message_bytes
        calls = self.settings.max_concurrent_calls
        # The inference services' calls are limited by `self._slots` (RESOURCE_EXHAUSTED beyond it, not
        # a call stuck waiting for a thread); gRPC's own limit, which counts every call, health checks
        # included, only bounds the spare threads' queue.
        server = grpc.server(
            ThreadPoolExecutor(max_workers=calls + _SPARE_THREADS, thread_name_prefix="call"),
            # so_reuseport 0: grpc's default lets a second server bind the same port and share its clients
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
                     ("grpc.so_reuseport", 0)],
            maximum_concurrent_rpcs=calls + _SPARE_THREADS,
        )
        add_inference_service(InferenceServicer(self.models, self.metrics, self.settings, self._idle), server,
                              self._slots, self._access)
        services = [SERVICE_NAME, HEALTH_NAME, reflection.SERVICE_NAME]
        if self.settings.kserve:
            services.append(self._add_kserve(server))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(services, server)
        self._health.set("", NOT_SERVING)
        self._health.set(SERVICE_NAME, NOT_SERVING)
        host = self.settings.host
        self.port = self._bind(server)
        if self.settings.metrics_port >= 0:
            metrics_host = self.settings.metrics_host
            try:
                self.metrics_port = self.metrics.serve_http(metrics_host, self.settings.metrics_port,
                                                            self._scrape_token)
            except OSError as exc:
                server.stop(None)
                raise OSError(f"cannot serve metrics on {metrics_host}:{self.settings.metrics_port} "
                              f"({exc.strerror}): choose another --metrics-port (0 picks a free one, -1 turns "
                              "metrics off)") from exc
        server.start()
        self._server = server
        log.info("listening on %s:%d%s%s (metrics on %s:%s); loading %s", host, self.port,
                 " with TLS" if self.settings.tls_cert else "", " and tokens" if self.settings.auth_tokens else "",
                 self.settings.metrics_host, self.metrics_port if self.settings.metrics_port >= 0 else "off",
                 self.settings.repository)
        await self.models.sync()
        if self.settings.control_mode == "poll":
            self._poller = asyncio.create_task(self.models.poll(self.settings.repository_poll_s))
        self._health.set("", SERVING)
        self._health.set(SERVICE_NAME, SERVING)
        self._accepting = True
        ready = sum(s.state == inference_pb2.MODEL_STATE_READY for s in self.models.statuses())
        log.info("serving %d model version(s) on %s:%d", ready, host, self.port)
        return self.port

    def _metrics_token(self) -> str | None:
        path = self.settings.metrics_token_file
        if path is None:
            return None
        words = read_secret(path, "--metrics-token-file").split()
        if not words:
            raise ValueError(f"--metrics-token-file {path} is empty: put the token on its first line")
        return words[0]

    def _bind(self, server: grpc.Server) -> int:
        """Listen on --host:--port, with TLS when --tls-cert is given; returns the bound port."""
        settings = self.settings
        address = f"{settings.host}:{settings.port}"
        try:
            if settings.tls_cert is not None and settings.tls_key is not None:
                credentials = server_credentials(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
                return int(server.add_secure_port(address, credentials))
            return int(server.add_insecure_port(address))
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {address} for gRPC ({exc}); another process may "
                          "hold the port: choose another --port (0 picks a free one)") from exc

    def _add_kserve(self, server: grpc.Server) -> str:
        """Serve the KServe v2 protocol too; returns its service name. Imported only when wanted: its
        messages (package `inference`) would clash with a Triton client's in the same process."""
        from tilecast.proto import wire
        from tilecast.proto.v1 import kserve_v2_pb2
        from tilecast.server import kserve

        servicer = kserve.KServeServicer(self.models, self.metrics, lambda: self._accepting,
                                         self.settings.max_tiles_in_flight_per_stream, self._idle)
        add_service(server, kserve_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"], servicer,
                    self._slots, wire.serialize, access=self._access)
        return kserve.SERVICE_NAME

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let in-flight calls finish within the grace period, then release engines."""
        self._accepting = False
        self._health.enter_graceful_shutdown()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._server is not None:
            stopped = self._server.stop(self.settings.grace_period_s if grace is None else grace)
            await asyncio.get_running_loop().run_in_executor(None, stopped.wait)
        self._idle.close()
        await self.models.close()
        self.metrics.stop_http()


async def serve_until_signalled(settings: Settings) -> bool:
    """Run until SIGTERM or SIGINT, then shut down gracefully (the `tilecast serve` main loop).
    True when a load was left running in its thread: the process should leave without waiting for it."""
    server = TilecastServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    starting, signalled = asyncio.create_task(server.start()), asyncio.create_task(stop.wait())
    try:
        await asyncio.wait((starting, signalled), return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # a port in use, a missing repository: raised here
            await signalled
        else:  # told to stop while loading: no other version starts, the one loading is left behind
            log.info("stopping before the repository finished loading%s",
                     f" ({server.models.loading_now} was loading: not waiting for it)"
                     if server.models.loading_now else "")
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
        log.info("shutting down: finishing work in flight (up to %.0f s)", settings.grace_period_s)
    finally:
        signalled.cancel()
        await server.stop()
    log.info("stopped")
    return server.models.threads_running()


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

    def call(self, coroutine: object, timeout: float = 120) -> object:
        """Run a coroutine on the server's loop and wait for it (e.g. `server.models.sync()`)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)  # type: ignore[arg-type]

    def __enter__(self) -> ServerThread:
        self._thread.start()
        try:
            self.call(self.server.start())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace: float | None = 0.0) -> None:
        if not self._thread.is_alive():
            return
        self.call(self.server.stop(grace))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
