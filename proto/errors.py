"""One exception hierarchy for the whole project; every error carries its gRPC status code.

The server maps these to status codes in one place (tilecast.server.servicer) and the client maps
status codes back to the same classes (tilecast.client.remote), so callers catch one set of types.
"""

from __future__ import annotations

import grpc


class TilecastError(Exception):
    """Base class. `code` is the gRPC status this error travels as."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN


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
    code = grpc.StatusCode.UNAUTHENTICATED


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
        Cancelled, Unauthenticated, FailedPrecondition, Internal,
    )
}


def error_for_status(code: grpc.StatusCode, message: str) -> TilecastError:
    """The exception that a status code travelling back from the server stands for."""
    return _BY_CODE.get(code, TilecastError)(message)
