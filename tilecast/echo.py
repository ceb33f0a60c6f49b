"""A bare grpcio echo service: the transport floor that `tilecast bench` measures the server against.

No protobuf, no batching, no engine: raw bytes in, a reply of a fixed size out, over the same grpc.aio
stack the server uses. Run as a process: `python -m tilecast.echo --port P --reply-bytes N`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator

import grpc

SERVICE = "tilecast.bench.Echo"
STREAM_METHOD = f"/{SERVICE}/Stream"
UNARY_METHOD = f"/{SERVICE}/Unary"


async def serve(host: str, port: int, reply_bytes: int) -> None:
    reply = bytes(reply_bytes)

    async def unary(request: bytes, context: object) -> bytes:
        return reply

    async def stream(requests: AsyncIterator[bytes], context: object) -> AsyncIterator[bytes]:
        async for _ in requests:
            yield reply

    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.stream_stream_rpc_method_handler(stream),
    })
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
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.reply_bytes))


if __name__ == "__main__":
    main()
