"""A bare grpcio echo service: the transport floor that `tilecast bench` measures the server against.

No protobuf, no batching: raw bytes in, a reply of a fixed size out, over the same threaded grpcio
server the tilecast server uses. Run as a process: `python -m tilecast.echo --port P --reply-bytes N`.

With `--engine model.onnx`, two more methods (stream and unary) run that model once per message in
the call's own thread before replying, and put the engine's seconds in the reply's first 8 bytes:
the floor for any server that computes a tile in the thread that answers it. Both ends sleep while
the engine runs, and waking them costs more than on a stream that never pauses. The PausedStream
method shows that without any engine: it sleeps for the seconds in the request's first 8 bytes,
then replies with the seconds it slept.
"""

from __future__ import annotations

import argparse
import signal
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

SERVICE = "tilecast.bench.Echo"
STREAM_METHOD = f"/{SERVICE}/Stream"
UNARY_METHOD = f"/{SERVICE}/Unary"
ENGINE_STREAM_METHOD = f"/{SERVICE}/EngineStream"
ENGINE_UNARY_METHOD = f"/{SERVICE}/EngineUnary"
PAUSED_STREAM_METHOD = f"/{SERVICE}/PausedStream"
ENGINE_SECONDS = struct.Struct("<d")


@dataclass(frozen=True)
class EngineCall:
    """What the engine stream runs: a model, one input of a fixed shape, a thread count."""

    model: Path
    input_name: str
    shape: tuple[int, ...]
    dtype: str
    threads: int

    def arguments(self) -> list[str]:
        return ["--engine", str(self.model), "--engine-input", self.input_name, "--engine-shape",
                ",".join(map(str, self.shape)), "--engine-dtype", self.dtype, "--threads", str(self.threads)]


def _engine_runner(call: EngineCall) -> Callable[[], float]:
    from tilecast.server.backends.ort import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(call.model, call.threads)
    feeds = {call.input_name: np.zeros(call.shape, call.dtype)}

    def run() -> float:
        started = time.perf_counter()
        backend.infer(feeds)
        return time.perf_counter() - started

    return run


def serve(host: str, port: int, reply_bytes: int, engine: EngineCall | None = None) -> None:
    reply = bytes(reply_bytes)

    def unary(request: bytes, context: object) -> bytes:
        return reply

    def stream(requests: Iterator[bytes], context: object) -> Iterator[bytes]:
        for _ in requests:
            yield reply

    padding = bytes(max(0, reply_bytes - ENGINE_SECONDS.size))

    def paused_stream(requests: Iterator[bytes], context: object) -> Iterator[bytes]:
        for request in requests:
            started = time.perf_counter()
            time.sleep(ENGINE_SECONDS.unpack_from(request)[0])
            yield ENGINE_SECONDS.pack(time.perf_counter() - started) + padding

    methods = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.stream_stream_rpc_method_handler(stream),
        "PausedStream": grpc.stream_stream_rpc_method_handler(paused_stream),
    }
    if engine is not None:
        run = _engine_runner(engine)

        def engine_unary(request: bytes, context: object) -> bytes:
            return ENGINE_SECONDS.pack(run()) + padding

        def engine_stream(requests: Iterator[bytes], context: object) -> Iterator[bytes]:
            for _ in requests:
                yield ENGINE_SECONDS.pack(run()) + padding

        methods["EngineStream"] = grpc.stream_stream_rpc_method_handler(engine_stream)
        methods["EngineUnary"] = grpc.unary_unary_rpc_method_handler(engine_unary)
    handler = grpc.method_handlers_generic_handler(SERVICE, methods)
    limit = 256 * 1024 * 1024
    server = grpc.server(ThreadPoolExecutor(16, thread_name_prefix="echo"),
                         options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)])
    server.add_generic_rpc_handlers([handler])
    server.add_insecure_port(f"{host}:{port}")
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(0).wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--reply-bytes", type=int, required=True)
    parser.add_argument("--engine", type=Path, help="ONNX model for the EngineStream method")
    parser.add_argument("--engine-input", default="image")
    parser.add_argument("--engine-shape", default="1,256,256,3", help="NHWC, comma-separated")
    parser.add_argument("--engine-dtype", default="uint8")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    engine = None if args.engine is None else EngineCall(
        args.engine, args.engine_input, tuple(int(s) for s in args.engine_shape.split(",")), args.engine_dtype,
        args.threads)
    serve(args.host, args.port, args.reply_bytes, engine)


if __name__ == "__main__":
    main()
