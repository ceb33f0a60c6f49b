"""Every channel the client opens is made here (`open_channel`, `open_aio_channel`): plain or TLS,
with or without a bearer token.

A `grpcs://host:port` address means TLS with the system's trusted roots (or `Security.ca` when given);
`Security.ca` alone also turns TLS on. A client certificate and key (mutual TLS) go with TLS only. The
token travels as `authorization: Bearer <token>` metadata on every call (tilecast servers started with
`--auth-tokens` ask for it); with TLS as call credentials, on a plain channel by an interceptor (asyncio
channels: by the caller, with each call).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from tilecast.client.addresses import channel_target
from tilecast.proto.errors import InvalidOption

TLS_SCHEME = "grpcs://"
TOKEN_ENV = "TILECAST_TOKEN"
Options = Sequence[tuple[str, Any]]


@dataclass(frozen=True)
class Security:
    """How to reach a server: TLS (`tls`, or implied by `ca` or a grpcs:// address), its CA, a client
    certificate for mutual TLS, a bearer token. The default: plain, no token."""

    tls: bool = False
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    token: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise InvalidOption("--tls-cert", str(self.cert or self.key), "a client certificate needs both "
                                "--tls-cert and --tls-key")
        if self.token is not None and (not self.token or any(c in self.token for c in "\r\n ")):
            raise InvalidOption("--token-file", "(the token)", "a token is one word without spaces")

    def __repr__(self) -> str:  # never shows the token
        return f"Security(tls={self.uses_tls}, ca={self.ca}, cert={self.cert}, token={'set' if self.token else None})"

    @property
    def uses_tls(self) -> bool:
        return self.tls or self.ca is not None or self.cert is not None

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: Path | None, flag: str) -> bytes | None:
            if path is None:
                return None
            try:
                return path.read_bytes()
            except OSError as exc:
                raise InvalidOption(flag, str(path), f"cannot read it ({exc.strerror})") from None
        return grpc.ssl_channel_credentials(read(self.ca, "--tls-ca"), read(self.key, "--tls-key"),
                                            read(self.cert, "--tls-cert"))

    def hint(self) -> str:
        """What to check when no connection could be made: TLS on one side only, or certificates."""
        if self.uses_tls:
            return ("; with TLS, check that it serves TLS, that --tls-ca signed its certificate and, for mutual "
                    "TLS, --tls-cert and --tls-key")
        return "; a server with TLS refuses plain connections: give --tls-ca or a grpcs:// address"

    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")] if self.token else []


def read_token(path: Path | None) -> str | None:
    """The token in `path` (its first line, stripped), else TILECAST_TOKEN, else None."""
    if path is None:
        return os.environ.get(TOKEN_ENV, "").strip() or None
    try:
        lines = path.read_text().split()
    except OSError as exc:
        raise InvalidOption("--token-file", str(path), f"cannot read it ({exc.strerror})") from None
    if not lines:
        raise InvalidOption("--token-file", str(path), "the file is empty: put the token on its first line")
    return lines[0]


def client_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    """The channel options of `Client` and `AsyncClient`: message limits, tiles spread over servers."""
    return [("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.lb_policy_name", "round_robin")]


def target_of(address: str | Sequence[str], security: Security | None,
              token: str | None = None) -> tuple[str, Security]:
    """The gRPC target of one or several addresses (`tilecast.client.addresses`) and how to reach it:
    a `grpcs://` address turns TLS on; `token`, when given, is the one sent."""
    addresses = [address] if isinstance(address, str) else list(address)
    security = security or Security()
    if token is not None:
        security = dataclasses.replace(security, token=token)
    if any(a.startswith(TLS_SCHEME) for a in addresses):
        security = dataclasses.replace(security, tls=True)
    return channel_target([a.removeprefix(TLS_SCHEME) for a in addresses]), security


class _Token(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
             grpc.UnaryStreamClientInterceptor, grpc.StreamUnaryClientInterceptor):  # type: ignore[misc]
    """Adds the token's metadata to each call of a plain channel (TLS channels use call credentials)."""

    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self._metadata = metadata

    def _details(self, details: Any) -> Any:
        return details._replace(metadata=list(details.metadata or ()) + self._metadata)

    def _call(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    intercept_unary_unary = intercept_stream_stream = intercept_unary_stream = intercept_stream_unary = _call


def _secure(security: Security) -> grpc.ChannelCredentials:
    credentials = security.credentials()
    if security.token:
        credentials = grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(security.token))
    return credentials


def open_channel(address: str | Sequence[str], options: Options = (),
                 security: Security | None = None, token: str | None = None) -> grpc.Channel:
    """A blocking channel to one or several addresses (a grpcs:// address turns TLS on)."""
    target, security = target_of(address, security, token)
    if security.uses_tls:
        return grpc.secure_channel(target, _secure(security), options=options)
    channel = grpc.insecure_channel(target, options=options)
    return grpc.intercept_channel(channel, _Token(security.metadata())) if security.token else channel


def open_aio_channel(address: str | Sequence[str], options: Options = (),
                     security: Security | None = None) -> grpc.aio.Channel:
    """An asyncio channel, as `open_channel` but without the token: its caller sends `security.metadata()`
    with each call (grpc.aio's stream interceptors do not reach calls driven by write())."""
    target, security = target_of(address, security)
    if security.uses_tls:
        return grpc.aio.secure_channel(target, security.credentials(), options=options)
    return grpc.aio.insecure_channel(target, options=options)
