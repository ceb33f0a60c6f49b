"""Model repository control from the client: what a server's repository holds, and loading and
unloading models on a server started with `--model-control explicit`.

The requests travel as the KServe v2 protocol's repository extension (Triton's RepositoryIndex,
RepositoryModelLoad and RepositoryModelUnload), which a tilecast server serves beside its own
protocol, so the same commands drive a Triton server. (Not imported by `tilecast.client`: the KServe
stubs must not meet tritonclient's own copy of those messages in one process.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

import grpc

from tilecast.client.channels import Security, open_channel, target_of
from tilecast.client.remote import status_code, translate
from tilecast.proto.errors import FailedPrecondition, TilecastError, Unavailable
from tilecast.proto.v1 import kserve_v2_pb2 as v2
from tilecast.proto.v1 import kserve_v2_pb2_grpc

T = TypeVar("T")


@dataclass(frozen=True)
class IndexEntry:
    """One row of a repository's index: a model version and its state (READY, LOADING or UNAVAILABLE,
    with the reason), or a model that is not loaded (version "", reason "unloaded")."""

    name: str
    version: str
    state: str
    reason: str


class RepositoryControl:
    """Repository requests to one server (a repository is per server: with several, control each)."""

    def __init__(self, address: str, *, connect_timeout: float = 10.0, security: Security | None = None,
                 token: str | None = None) -> None:
        """`security` and `token` as `Client`'s (an admin token for load and unload)."""
        self._address = address
        self._connect_timeout = connect_timeout
        self._connected = False
        self._security = target_of(address, security, token)[1]
        self._channel = open_channel(address, (), self._security)
        self._stub = kserve_v2_pb2_grpc.GRPCInferenceServiceStub(self._channel)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RepositoryControl:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def index(self, *, ready_only: bool = False, timeout: float = 30.0) -> list[IndexEntry]:
        request = v2.RepositoryIndexRequest(ready=ready_only)
        response = self._call(lambda: self._stub.RepositoryIndex(request, timeout=timeout))
        return [IndexEntry(m.name, m.version, m.state, m.reason) for m in response.models]

    def load(self, name: str, *, timeout: float | None = None) -> None:
        """Load a model (or reload the versions whose files changed); returns once it serves, raises
        FailedPrecondition with each version's reason if it cannot. `timeout` None waits as long as
        the load takes (an engine build may take minutes)."""
        request = v2.RepositoryModelLoadRequest(model_name=name)
        self._call(lambda: self._stub.RepositoryModelLoad(request, timeout=timeout))

    def unload(self, name: str, *, timeout: float = 60.0) -> None:
        """Stop serving a model: new requests are refused at once, those in flight finish."""
        request = v2.RepositoryModelUnloadRequest(model_name=name)
        self._call(lambda: self._stub.RepositoryModelUnload(request, timeout=timeout))

    def _call(self, fn: Callable[[], T]) -> T:
        if not self._connected:  # so that no server at all reads as such, not as a failed request
            try:
                grpc.channel_ready_future(self._channel).result(timeout=self._connect_timeout)
            except grpc.FutureTimeoutError:
                raise Unavailable(f"no server answered at {self._address} within {self._connect_timeout:g} s"
                                  f"{self._security.hint()}") from None
            self._connected = True
        try:
            return fn()
        except grpc.RpcError as exc:
            raise self._explain(exc) from exc

    def _explain(self, exc: grpc.RpcError) -> TilecastError:
        if status_code(exc) == grpc.StatusCode.UNIMPLEMENTED:
            return FailedPrecondition(
                f"the server at {self._address} does not serve the KServe v2 protocol, which carries repository "
                "control: start it with --kserve (the default)")
        return translate(exc)
