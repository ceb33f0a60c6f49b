"""The models a server holds: load, poll for changes, swap versions without dropping work in flight.

Every request holds a *lease* on the version it resolved. A removed or replaced version leaves the
lookup at once (new requests go to the newest ready version), and its engines are released only
when its last lease ends: a stream always finishes on the version it started with.

Syncing runs on the server's event loop; leases are taken in the gRPC handler threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tilecast.proto.errors import DeadlineExceeded, FailedPrecondition, NotFound, Unavailable, echo
from tilecast.proto.spec import ModelSpec
from tilecast.proto.v1 import inference_pb2, manifest_pb2
from tilecast.server.backends.base import Backend
from tilecast.server.backends.choose import open_instances
from tilecast.server.batching import DynamicBatcher
from tilecast.server.metrics import Metrics
from tilecast.server.repository import ModelVersion, fingerprint, load_version, scan
from tilecast.server.settings import Settings
from tilecast.server.validation import TileCheck

log = logging.getLogger(__name__)

READY = inference_pb2.MODEL_STATE_READY
STATE_NAMES = {inference_pb2.MODEL_STATE_READY: "ready", inference_pb2.MODEL_STATE_LOADING: "loading",
               inference_pb2.MODEL_STATE_FAILED: "failed"}


@dataclass(eq=False)
class Served:
    """A ready version as served: its manifest, its typed view, the checks of its tiles and its batcher
    (all there, always), and the requests that hold it."""

    entry: ModelVersion
    manifest: manifest_pb2.ModelManifest
    spec: ModelSpec
    check: TileCheck  # the input rules every request's tiles are checked against, read once
    batcher: DynamicBatcher
    leases: int = 0
    retired: bool = False
    released: threading.Event = field(default_factory=threading.Event)  # set once its engines are freed

    def release(self) -> None:
        """Finish what is queued, then close every engine (once no request holds the version)."""
        self.batcher.close()  # nothing is queued once no request holds it: returns at once
        for backend in self.entry.backends:
            try:
                backend.close()
            except Exception:  # one engine failing to free must not keep the others
                log.exception("model %s version %d: closing its engine failed", self.entry.name, self.entry.version)
        self.entry.backends.clear()
        self.released.set()


Slot = ModelVersion | Served  # what the lookup holds for a version: ready, or not (loading, failed)


def _entry(slot: Slot) -> ModelVersion:
    return slot.entry if isinstance(slot, Served) else slot


class DaemonThreads(Executor):
    """Runs each task in a daemon thread of its own. Loading (an engine build, a file on a stalled
    mount) cannot be interrupted; a shutdown that comes meanwhile leaves it behind rather than waiting
    for it, which a pool's threads would force (they are joined at exit)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()

        def run() -> None:
            try:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args, **kwargs))
                    except BaseException as exc:
                        future.set_exception(exc)
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())

        thread = threading.Thread(target=run, name=self._name, daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()
        return future

    def busy(self) -> bool:
        with self._lock:
            return bool(self._threads)


class ModelManager:
    def __init__(self, settings: Settings, metrics: Metrics,
                 on_health: Callable[[str, bool], None] | None = None) -> None:
        self._settings = settings
        self._loaders = DaemonThreads("loader")
        # The models to serve: None = every model of the repository; a set under explicit control,
        # where "*" stands for those in the repository at start (not those added later).
        self._wanted: set[str] | None = None
        self._wants_all_found = False
        if settings.control_mode == "explicit":
            self._wanted = set(settings.load_models) - {"*"}
            self._wants_all_found = "*" in settings.load_models
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop syncs run on, for control requests
        self.loading_now = ""  # the version whose load is awaited, for the log of a shutdown meanwhile
        self._metrics = metrics
        self._on_health = on_health
        self._current: dict[tuple[str, int], Slot] = {}
        self._lock = asyncio.Lock()  # one repository sync at a time
        self._leases = threading.Lock()  # guards Served.leases and .retired

    # -- lookups ---------------------------------------------------------------------------

    @property
    def repository(self) -> Path:
        return self._settings.repository

    def statuses(self) -> list[inference_pb2.ModelStatus]:
        return [_entry(s).status() for _, s in sorted(self._current.items())]

    def names(self) -> list[str]:
        return sorted({name for name, _ in self._current})

    def resolve(self, name: str, version: int = 0) -> Served:
        """The requested version, or the newest ready one when version is 0."""
        candidates = sorted(((v, s) for (n, v), s in list(self._current.items()) if n == name), key=lambda c: c[0])
        if not candidates:
            raise NotFound(f"model {echo(name)} not found; this server has {self.names() or 'no models'}")
        if version:
            match = [s for v, s in candidates if v == version]
            if not match:
                raise NotFound(f"model {name!r} has no version {version}; versions: {[v for v, _ in candidates]}")
            chosen = match[0]
        else:
            ready = [s for _, s in candidates if isinstance(s, Served)]
            if not ready:
                reasons = "; ".join(f"v{v}: {_entry(s).reason or 'loading'}" for v, s in candidates)
                raise Unavailable(f"model {name!r} has no ready version ({reasons})")
            chosen = ready[-1]
        if not isinstance(chosen, Served):
            raise Unavailable(f"model {name!r} version {chosen.version} is not ready: {chosen.reason or 'loading'}")
        return chosen

    def ready_versions(self, name: str = "", version: int = 0) -> list[Served]:
        """Every ready version, a model's, or one: what a statistics request covers."""
        if version:
            return [self.resolve(name, version)]
        if name:
            self.resolve(name)  # NotFound for a name this server lacks, Unavailable with none ready
        return [s for (n, _), s in sorted(self._current.items())
                if (not name or n == name) and isinstance(s, Served)]

    @contextlib.contextmanager
    def lease(self, name: str, version: int = 0) -> Iterator[Served]:
        """Hold a version for the length of a request; its engines stay until the last lease ends."""
        with self._leases:
            served = self.resolve(name, version)
            served.leases += 1
        try:
            yield served
        finally:
            with self._leases:
                served.leases -= 1
                last = served.retired and served.leases == 0
            if last:
                self._release(served)

    # -- loading and unloading -------------------------------------------------------------

    def _open_backends(self, path: Path, manifest: manifest_pb2.ModelManifest) -> list[Backend]:
        instances = manifest.serving.instances or self._settings.instances
        return open_instances(path, manifest, self._settings, instances, self._max_batch(manifest))

    def _max_batch(self, manifest: manifest_pb2.ModelManifest) -> int:
        limit = manifest.serving.max_batch_size or self._settings.max_batch_size
        return max(1, min(limit, manifest.tiling.max_batch_size or limit))

    async def _load(self, name: str, version: int, path: Path) -> Slot:
        self.loading_now = f"model {name} version {version}"
        try:
            entry = await asyncio.get_running_loop().run_in_executor(
                self._loaders, load_version, name, version, path, self._open_backends)
        finally:
            self.loading_now = ""
        self._metrics.set_state(name, version, STATE_NAMES[entry.state])
        if entry.manifest is None:
            return entry
        manifest = entry.manifest
        delay = manifest.serving.max_queue_delay_ms or self._settings.max_queue_delay_ms
        batcher = DynamicBatcher(
            [b.infer for b in entry.backends], max_batch_size=self._max_batch(manifest),
            max_queue_size=self._settings.max_queue_size, max_queue_delay_s=delay / 1000, name=f"{name}/{version}",
            observer=self._metrics.observer(name))
        spec = ModelSpec.of(manifest)  # load_version checked that it can be made
        return Served(entry, manifest, spec, TileCheck.of(spec, self._settings.max_message_bytes), batcher)

    def _retire(self, served: Served) -> None:
        """Take a version out of the lookup; its engines go when no request holds it (now, or when
        the last lease ends): no thread waits for that meanwhile, however long a stream runs."""
        with self._leases:
            served.retired = True
            unheld = served.leases == 0
        if unheld:
            self._release(served)

    def _release(self, served: Served) -> None:
        """Free a retired version's engines in a loader thread, not in the request that held it last."""
        def release() -> None:
            served.release()
            log.info("model %s version %d unloaded", served.entry.name, served.entry.version)

        self._loaders.submit(release)

    def _update_health(self) -> None:
        if self._on_health is None:
            return
        for name in self.names():
            self._on_health(name, any(isinstance(s, Served) for (n, _), s in self._current.items() if n == name))

    async def sync(self, only: str = "") -> None:
        """Bring the served versions in line with the repository folder: add, replace, remove; with
        `only`, that model's versions and no other's."""
        self._loop = asyncio.get_running_loop()
        async with self._lock:
            versions = scan(self._settings.repository)
            if self._wants_all_found and self._wanted is not None:
                self._wanted.update(name for name, _, _ in versions)
                self._wants_all_found = False
            found = {(name, version): path for name, version, path in versions
                     if (not only or name == only) and (self._wanted is None or name in self._wanted)}
            for key in [k for k in self._current if k not in found and (not only or k[0] == only)]:
                gone = self._current.pop(key)
                self._metrics.forget(*key)
                if isinstance(gone, Served):
                    self._retire(gone)
                log.info("model %s version %d removed from the repository", *key)
                if self._on_health and not any(n == key[0] for n, _ in self._current):
                    self._on_health(key[0], False)
            for key, path in found.items():  # every new version shows as loading until its turn comes
                if key not in self._current:
                    self._current[key] = ModelVersion(*key, path)
                    self._metrics.set_state(*key, "loading")
            self._update_health()
            for key, path in found.items():
                old = self._current.get(key)
                if old is not None and _entry(old).fingerprint and _entry(old).fingerprint == fingerprint(path):
                    continue
                new = await self._load(*key, path)
                previous = self._current.get(key)
                self._current[key] = new
                if isinstance(previous, Served) and previous is not new:
                    log.info("model %s version %d replaced", *key)
                    self._retire(previous)
            self._update_health()

    # -- explicit control (Triton's repository extension), called from request threads ----------

    def load_model(self, name: str, timeout: float | None = None) -> None:
        """Load a model's versions from the repository, or reload those whose files changed; returns
        once they are ready, or raises with the reasons they are not."""
        self._require_explicit("load")
        self._require_known(name, self._repository_names())
        self._on_loop(self._control(name, serve=True), timeout)
        versions = [_entry(s) for (n, _), s in sorted(self._current.items()) if n == name]
        if not any(entry.state == READY for entry in versions):
            reasons = "; ".join(f"v{e.version}: {e.reason or 'not loaded'}" for e in versions)
            raise FailedPrecondition(f"model {name!r} did not load: {reasons or 'no version folders'}")

    def unload_model(self, name: str, timeout: float | None = None) -> None:
        """Stop serving a model: new requests are refused at once, those in flight finish on it."""
        self._require_explicit("unload")
        self._require_known(name, self._repository_names() | set(self.names()))
        self._on_loop(self._control(name, serve=False), timeout)

    def _require_known(self, name: str, names: set[str]) -> None:
        """NotFound for a name that is none of `names`, naming them (and the repository by its folder
        name only: a client has no business knowing where the server keeps it)."""
        if name not in names:
            raise NotFound(f"model {echo(name)} is not in the repository {self._settings.repository.name!r}; "
                           f"it has {sorted(names) or 'no models'}")

    async def _control(self, name: str, *, serve: bool) -> None:
        """Add a model to the served set or take it out, then sync it: on the loop, like every sync."""
        assert self._wanted is not None  # explicit control
        if serve:
            self._wanted.add(name)
        else:
            self._wanted.discard(name)
        await self.sync(only=name)

    def index(self) -> list[tuple[str, str, str, str]]:
        """(name, version, state, reason) of every model in the repository or served, Triton's way:
        a version's state READY, LOADING or UNAVAILABLE (with why); a model not loaded, version "" and
        UNAVAILABLE "unloaded"."""
        states = {inference_pb2.MODEL_STATE_READY: "READY", inference_pb2.MODEL_STATE_LOADING: "LOADING"}
        rows = [(n, str(v), states.get(_entry(s).state, "UNAVAILABLE"), _entry(s).reason)
                for (n, v), s in sorted(self._current.items())]
        served = {row[0] for row in rows}
        rows += [(name, "", "UNAVAILABLE", "unloaded") for name in self._repository_names() - served]
        return sorted(rows)

    def _repository_names(self) -> set[str]:
        return {name for name, _, _ in scan(self._settings.repository)}

    def _require_explicit(self, action: str) -> None:
        mode = self._settings.control_mode
        if mode != "explicit":
            raise FailedPrecondition(
                f"models are not loaded and unloaded by request on this server (model control {mode!r}: "
                + ("it rescans its repository" if mode == "poll" else "it loads its whole repository at start")
                + f"); to {action} models by request, start it with --model-control explicit")

    def _on_loop(self, work: Coroutine[Any, Any, None], timeout: float | None) -> None:
        if self._loop is None:
            work.close()
            raise Unavailable("the server has not started loading its repository yet; try again")
        try:
            waited = None if timeout is None else min(timeout, threading.TIMEOUT_MAX)  # no deadline: gRPC says ~forever
            asyncio.run_coroutine_threadsafe(work, self._loop).result(waited)
        except TimeoutError:
            raise DeadlineExceeded("the deadline passed before the repository change was done; it goes on: "
                                   "RepositoryIndex shows its progress") from None

    async def poll(self, interval: float) -> None:
        """Rescan every `interval` seconds until cancelled; a failed scan is logged and retried."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sync()
            except Exception:
                log.exception("repository poll failed; serving what is loaded")

    def threads_running(self) -> bool:
        """Whether a load or release still runs in a thread (a load a shutdown left behind)."""
        return self._loaders.busy()

    async def close(self) -> None:
        """Finish queued work and release every engine (at shutdown, after RPCs have drained); a load
        still under way is left to itself."""
        loop = asyncio.get_running_loop()
        for slot in self._current.values():
            if isinstance(slot, Served):
                await loop.run_in_executor(None, slot.release)
        self._current.clear()
