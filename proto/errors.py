"""One exception hierarchy for the whole project; every error carries its gRPC status code.

The server maps these to status codes in one place (tilecast.server.servicer) and the client maps
status codes back to the same classes (tilecast.client.remote), so callers catch one set of types.
"""

from __future__ import annotations

import grpc

# A status message travels in the reply's trailer, which gRPC caps (8 KB by default on the client):
# a longer one reaches the client as RESOURCE_EXHAUSTED "received metadata size exceeds hard limit".
MAX_MESSAGE_CHARS = 2000
ECHO_CHARS = 120  # of one value a client sent, when a message quotes it


class TilecastError(Exception):
    """Base class. `code` is the gRPC status this error travels as. A message longer than
    MAX_MESSAGE_CHARS is cut in its middle, so that it always fits a status trailer."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str) and len(args[0]) > MAX_MESSAGE_CHARS:
            args = (_cut(args[0], MAX_MESSAGE_CHARS),)
        super().__init__(*args)


def _cut(text: str, limit: int) -> str:
    half = (limit - 30) // 2
    return f"{text[:half]} ... ({len(text) - 2 * half} characters cut) ... {text[-half:]}"


def echo(value: object, limit: int = ECHO_CHARS) -> str:
    """A client's value as an error message quotes it: repr() (a list's items, a string quoted), cut
    to `limit` characters with how long it was, so a 20,000-character name or a shape of rank 5,000
    does not become a message larger than the reply may carry."""
    if isinstance(value, tuple | list) and len(value) > 8:
        items = ", ".join(map(repr, list(value)[:6]))
        return f"[{items}, ... ({len(value)} items)]"
    text = repr(list(value) if isinstance(value, tuple) else value)
    if len(text) <= limit:
        return text
    return f"{text[:limit - 1]}…' ({len(text) - 2} characters)" if isinstance(value, str) else f"{text[:limit]}…"


class InvalidArgument(TilecastError):
    """The request or input is malformed: wrong dtype, shape, size multiple or byte count."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class InvalidOption(InvalidArgument):
    """A value a person gave (a command-line option, or the API field behind it) is out of range or not one
    of its choices. `option` names it as the user spells it (`--tile-size`); the message says what is valid.
    The command line exits with status 2 (a usage error) for these."""

    def __init__(self, option: str, value: object, valid: str) -> None:
        super().__init__(f"{option} {shown(value)}: {valid}")
        self.option = option


def shown(value: object) -> str:
    """A value as a person typed it: strings quoted, whole floats without '.0'."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class NotFound(TilecastError):
    """No such model, version or file."""

    code = grpc.StatusCode.NOT_FOUND


class ResourceExhausted(TilecastError):
    """A queue is full or a message is too large; retry later or send less."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(TilecastError):
    """The server or model is not ready (loading, failed, shutting down)."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(TilecastError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(TilecastError):
    code = grpc.StatusCode.CANCELLED


class Unauthenticated(TilecastError):
    """No token, or one the server does not know."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(TilecastError):
    """A known token whose role does not allow this call (e.g. an `infer` token unloading a model)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class FailedPrecondition(TilecastError):
    """The system is not in a state to do this, e.g. a model repository that does not validate."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ManifestError(FailedPrecondition):
    """A model version's manifest does not match its files or its ONNX graph."""


class Internal(TilecastError):
    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[TilecastError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument, NotFound, ResourceExhausted, Unavailable, DeadlineExceeded,
        Cancelled, Unauthenticated, PermissionDenied, FailedPrecondition, Internal,
    )
}


def error_for_status(code: grpc.StatusCode, message: str) -> TilecastError:
    """The exception that a status code travelling back from the server stands for."""
    return _BY_CODE.get(code, TilecastError)(message)
