"""A bare grpcio echo service: the transport floor that `tilecast bench` measures the server against.

No protobuf, no batching: raw bytes in, a reply of a fixed size out, over the same grpc.aio stack the
server uses. Run as a process: `python -m tilecast.echo --port P --reply-bytes N`.

With `--engine model.onnx`, two more methods (stream and unary) run that model once per message in a
worker thread before replying, and puts the engine's seconds in the reply's first 8 bytes: the floor for any
server that keeps its event loop free while an engine computes. Both ends sleep while the engine
runs, and waking them costs more than on a stream that never pauses.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import struct
import time
from collections.abc import AsyncIterator, Callable
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


async def serve(host: str, port: int, reply_bytes: int, engine: EngineCall | None = None) -> None:
    reply = bytes(reply_bytes)

    async def unary(request: bytes, context: object) -> bytes:
        return reply

    async def stream(requests: AsyncIterator[bytes], context: object) -> AsyncIterator[bytes]:
        async for _ in requests:
            yield reply

    methods = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.stream_stream_rpc_method_handler(stream),
    }
    if engine is not None:
        run = _engine_runner(engine)
        worker = ThreadPoolExecutor(1, thread_name_prefix="engine")
        padding = bytes(max(0, reply_bytes - ENGINE_SECONDS.size))

        async def engine_reply() -> bytes:
            seconds = await asyncio.get_running_loop().run_in_executor(worker, run)
            return ENGINE_SECONDS.pack(seconds) + padding

        async def engine_unary(request: bytes, context: object) -> bytes:
            return await engine_reply()

        async def engine_stream(requests: AsyncIterator[bytes], context: object) -> AsyncIterator[bytes]:
            async for _ in requests:
                yield await engine_reply()

        methods["EngineStream"] = grpc.stream_stream_rpc_method_handler(engine_stream)
        methods["EngineUnary"] = grpc.unary_unary_rpc_method_handler(engine_unary)
    handler = grpc.method_handlers_generic_handler(SERVICE, methods)
    limit = 256 * 1024 * 1024
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", limit)])
    server.add_generic_rpc_handlers([handler])
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0)


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
    asyncio.run(serve(args.host, args.port, args.reply_bytes, engine))


if __name__ == "__main__":
    main()
