"""`tilecast serve`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from tilecast.console import setup_logging, user_errors


@user_errors
def serve(
    repository: Annotated[Path, typer.Option(envvar="TILECAST_REPOSITORY", help="Model repository folder.")] = Path(
        "models"),
    host: Annotated[str, typer.Option(envvar="TILECAST_HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="TILECAST_PORT", help="gRPC port; 0 picks a free one.")] = 8500,
    max_batch_size: Annotated[int, typer.Option(envvar="TILECAST_MAX_BATCH_SIZE")] = 8,
    max_queue_delay_ms: Annotated[float, typer.Option(envvar="TILECAST_MAX_QUEUE_DELAY_MS",
                                                      help="Wait this long for fuller batches.")] = 0.0,
    max_queue_size: Annotated[int, typer.Option(envvar="TILECAST_MAX_QUEUE_SIZE")] = 512,
    instances: Annotated[int, typer.Option(envvar="TILECAST_INSTANCES",
                                           help="Concurrent engine calls per model.")] = 1,
    threads: Annotated[int, typer.Option(envvar="TILECAST_THREADS",
                                         help="Engine threads per call; 0 = one per core.")] = 0,
    max_message_mb: Annotated[int, typer.Option(envvar="TILECAST_MAX_MESSAGE_MB")] = 64,
    grace_period_s: Annotated[float, typer.Option(envvar="TILECAST_GRACE_PERIOD_S")] = 10.0,
    log_level: Annotated[str, typer.Option(envvar="TILECAST_LOG_LEVEL")] = "INFO",
) -> None:
    """Serve every model in a repository over gRPC until SIGTERM or Ctrl-C."""
    from tilecast.server.app import serve_until_signalled
    from tilecast.server.settings import Settings

    setup_logging(log_level)
    settings = Settings(
        repository=repository, host=host, port=port, max_batch_size=max_batch_size,
        max_queue_delay_ms=max_queue_delay_ms, max_queue_size=max_queue_size, instances=instances,
        intra_op_threads=threads, max_message_bytes=max_message_mb * 1024 * 1024,
        grace_period_s=grace_period_s, log_level=log_level,
    )
    try:
        asyncio.run(serve_until_signalled(settings))
    except OSError as exc:
        raise ValueError(str(exc)) from exc
