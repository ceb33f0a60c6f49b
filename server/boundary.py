"""The gRPC boundary of both services: bytes in, typed errors out as status codes.

Every method of tilecast.v1.Inference and of KServe's service is registered here (`add_service`) with a
request deserializer that never raises: grpcio answers a message it cannot parse with INTERNAL, leaks
memory for each such unary call and, after unparsable messages on a stream, no longer stops on SIGTERM.
The bytes are parsed in the handler instead, where a bad message is INVALID_ARGUMENT like any other bad
request. The same wrapper enforces the server's limit on calls (`CallSlots`), which counts the calls of
these services only: health checks and reflection are answered whatever the load, and with no token.
Tokens, roles and the per-client cap are checked here too, before a handler runs (`tilecast.server.access`).

Typed errors become status codes in one place (`abort`, used by `unary_errors` and `stream_errors`),
with messages bounded in length so that an echoed input cannot overflow the reply's trailer.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, TypeAlias, TypeVar

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from tilecast.proto.errors import InvalidArgument, ResourceExhausted, TilecastError
from tilecast.server.access import Access
from tilecast.server.metrics import Metrics

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
# grpc ships no type information; this names what the handlers receive.
Context: TypeAlias = Any  # grpc.ServicerContext
Parse: TypeAlias = Callable[[bytes], Any]

# A status message travels in the reply's trailer, which gRPC caps (8 KB by default): longer ones turn
# into RESOURCE_EXHAUSTED "received metadata size exceeds hard limit" on the client.
MESSAGE_CHARS = 2000


def bounded(text: str, limit: int = MESSAGE_CHARS) -> str:
    """`text` cut to about `limit` characters, keeping its start and its end (where the advice is)."""
    if len(text) <= limit:
        return text
    keep = (limit - 40) // 2
    return f"{text[:keep]} [... {len(text) - 2 * keep} characters left out ...] {text[-keep:]}"


def status_name(exc: BaseException) -> str:
    """The status code an exception is answered with, by name (as the request counter labels it)."""
    return exc.code.name if isinstance(exc, TilecastError) else "INTERNAL"


def abort(context: Context, exc: BaseException) -> NoReturn:
    """End the call with the status `exc` carries (INTERNAL, logged, for an unexpected error)."""
    if isinstance(exc, TilecastError):
        context.abort(exc.code, bounded(str(exc)))
    log.exception("unexpected error in a request", exc_info=exc)
    context.abort(grpc.StatusCode.INTERNAL, bounded(f"internal server error: {type(exc).__name__}: {exc}"))
    raise AssertionError("context.abort returned")  # it raises, but grpc does not say so


def end_call(context: Context, exc: TilecastError) -> None:
    """End a call from another thread than its handler's (which may be blocked reading), with the status
    and message `exc` carries; the handler's next read then fails. Public grpc can only cancel, which
    tells the client nothing; where its internals differ, cancelling is what is left."""
    call = getattr(getattr(context, "_rpc_event", None), "call", None)
    try:
        call.cancel(exc.code.value[0], bounded(str(exc)))  # type: ignore[union-attr]
    except (AttributeError, TypeError):
        context.cancel()


class RequestCounter:
    """What `unary_errors` and `stream_errors` need of a servicer: the finished-calls counter."""

    _metrics: Metrics

    def count(self, model: str, method: str, code: str) -> None:
        self._metrics.requests.labels(model or "-", method, code).inc()


def _model_of(request: object) -> str:
    return getattr(request, "model", "") or getattr(request, "name", "") or getattr(request, "model_name", "")


def unary_errors(
    handler: Callable[[Any, Req, Context], Resp],
) -> Callable[[Any, Req, Context], Resp]:
    """A unary handler whose typed errors become its call's status, counted by the servicer."""
    @functools.wraps(handler)
    def wrapper(self: Any, request: Req, context: Context) -> Resp:  # a RequestCounter
        code = "OK"
        try:
            return handler(self, request, context)
        except Exception as exc:
            code = status_name(exc)
            abort(context, exc)
        finally:
            # Counted once the answer is out (the callback runs after the status is sent), unless
            # the call has already ended.
            count = functools.partial(self.count, _model_of(request), handler.__name__, code)
            if not context.add_callback(count):
                count()

    return wrapper


@dataclass
class CallRecord:
    """What a streaming handler learns as it goes, for the request counter."""

    model: str = ""
    code: str = "OK"
    # The handler counts each request of the stream itself (KServe's ModelStreamInfer, as Triton counts
    # a stream's requests); the call is then counted only if it fails as a whole.
    counts_requests: bool = False


def stream_errors(
    handler: Callable[[Any, Req, Context, CallRecord], Iterator[Resp]],
) -> Callable[[Any, Req, Context], Iterator[Resp]]:
    """A streaming handler whose typed errors become its call's status, counted by the servicer."""
    @functools.wraps(handler)
    def wrapper(self: RequestCounter, requests: Req, context: Context) -> Iterator[Resp]:
        record = CallRecord()
        try:
            yield from handler(self, requests, context, record)
            if not context.is_active():
                record.code = "CANCELLED"
        except GeneratorExit:  # gRPC dropped the response iterator: the client went away
            record.code = "CANCELLED"
            raise
        except Exception as exc:
            record.code = status_name(exc)
            abort(context, exc)
        finally:
            if not record.counts_requests or record.code != "OK":
                self.count(record.model, handler.__name__, record.code)

    return wrapper


class CallSlots:
    """How many calls of the inference services run at once (each holds a thread of the server's pool);
    one more is refused with RESOURCE_EXHAUSTED. Health and reflection are not counted."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self._used >= self.limit:
                return False
            self._used += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self._used -= 1


def _parsed(method: str, parse: Parse, raw: bytes) -> Any:
    try:
        return parse(raw)
    except Exception as exc:  # whatever the parser raises on garbage (DecodeError, ValueError, ...)
        raise InvalidArgument(f"{method}: the message is not a valid request of this method "
                              f"({type(exc).__name__}: {exc})") from exc


def _parsed_stream(method: str, parse: Parse, raw: Iterator[bytes]) -> Iterator[Any]:
    for message in raw:
        yield _parsed(method, parse, message)


def _refuse(servicer: RequestCounter, method: str, context: Context, exc: TilecastError) -> NoReturn:
    servicer.count("", method, exc.code.name)
    abort(context, exc)


def _busy(slots: CallSlots) -> ResourceExhausted:
    return ResourceExhausted(f"the server is serving {slots.limit} calls, its limit (--max-calls); retry later")


@dataclass
class Gate:
    """What a call of the inference services passes before its handler runs: its token and its
    client's share (`Access`), then the server's limit on calls (`CallSlots`)."""

    slots: CallSlots
    access: Access

    def enter(self, servicer: RequestCounter, method: str, context: Context) -> str:
        """Admit the call or end it with its status; returns the key to `leave` with."""
        try:
            key = self.access.enter(method, context)
        except TilecastError as exc:
            _refuse(servicer, method, context, exc)
        if not self.slots.take():
            self.access.leave(key)
            _refuse(servicer, method, context, _busy(self.slots))
        return key

    def leave(self, key: str) -> None:
        self.slots.give_back()
        self.access.leave(key)


def _unary(servicer: RequestCounter, method: str, parse: Parse, gate: Gate) -> Callable[..., Any]:
    handler = getattr(servicer, method)

    def behaviour(raw: bytes, context: Context) -> Any:
        key = gate.enter(servicer, method, context)
        try:
            try:
                request = _parsed(method, parse, raw)
            except InvalidArgument as exc:
                _refuse(servicer, method, context, exc)
            return handler(request, context)
        finally:
            gate.leave(key)

    return behaviour


def _streaming(servicer: RequestCounter, method: str, parse: Parse, gate: Gate) -> Callable[..., Any]:
    handler = getattr(servicer, method)

    def behaviour(raw: Iterator[bytes], context: Context) -> Iterator[Any]:
        key = gate.enter(servicer, method, context)
        try:
            yield from handler(_parsed_stream(method, parse, raw), context)
        finally:
            gate.leave(key)

    return behaviour


def _default_parser(method: MethodDescriptor) -> Parse:
    parse: Parse = message_factory.GetMessageClass(method.input_type).FromString
    return parse


def add_service(server: grpc.Server, service: ServiceDescriptor, servicer: RequestCounter, slots: CallSlots,
                serialize: Callable[[Any], bytes], parsers: Mapping[str, Parse] | None = None,
                access: Access | None = None) -> None:
    """Register every method of `service` on `servicer`: unary and bidirectional ones (the only kinds the
    two services have), each request parsed by `parsers[name]` or its message class, inside the handler,
    each call admitted by `access` (tokens, per-client cap; none: open) and `slots` first."""
    gate = Gate(slots, access or Access())
    handlers = {}
    for method in service.methods:
        parse = (parsers or {}).get(method.name) or _default_parser(method)
        if not method.client_streaming and not method.server_streaming:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _unary(servicer, method.name, parse, gate), response_serializer=serialize)
        elif method.client_streaming and method.server_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                _streaming(servicer, method.name, parse, gate), response_serializer=serialize)
        else:
            raise TypeError(f"{service.full_name}.{method.name}: only unary and bidirectional methods are served")
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
