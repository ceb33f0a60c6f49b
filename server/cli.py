"""`tilecast serve`: every flag has a TILECAST_* environment variable and a field in `Settings`."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tilecast.console import user_errors


def _opt(env: str, help_text: str = "") -> Any:
    """An option read from the flag or from TILECAST_<env>."""
    return typer.Option(envvar=f"TILECAST_{env}", help=help_text)


@user_errors
def serve(
    repository: Annotated[Path, _opt("REPOSITORY", "Model repository folder.")] = Path("models"),
    host: Annotated[str, _opt("HOST", "Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, _opt("PORT", "gRPC port; 0 picks a free one.")] = 8500,
    metrics_port: Annotated[int, _opt("METRICS_PORT", "Prometheus /metrics port; -1 turns it off.")] = 8502,
    max_batch_size: Annotated[int, _opt("MAX_BATCH_SIZE", "Largest batch per engine call.")] = 8,
    max_queue_delay_ms: Annotated[float, _opt(
        "MAX_QUEUE_DELAY_MS", "How long a freed instance waits for a fuller batch while another computes.")] = 0.0,
    max_queue_size: Annotated[int, _opt("MAX_QUEUE_SIZE", "Tiles waiting per model before refusing more.")] = 512,
    stream_window: Annotated[int, _opt("STREAM_WINDOW", "Tiles in flight per stream.")] = 64,
    max_calls: Annotated[int, _opt("MAX_CALLS", "Calls served at once; more are refused.")] = 256,
    instances: Annotated[int, _opt("INSTANCES", "Engine instances per model version.")] = 1,
    threads: Annotated[int, _opt("THREADS", "Engine threads per instance; 0 = cores / instances.")] = 0,
    providers: Annotated[str, _opt("PROVIDERS", "Engines in order of preference: tensorrt,cuda,cpu.")] = (
        "tensorrt,cuda,cpu"),
    trt_fp16: Annotated[bool, _opt("TRT_FP16", "Let the TensorRT EP use fp16.")] = False,
    max_message_mb: Annotated[int, _opt("MAX_MESSAGE_MB", "Largest gRPC message accepted.")] = 64,
    repository_poll_s: Annotated[float, _opt(
        "REPOSITORY_POLL_S", "Rescan the repository this often (0 = load at start only).")] = 0.0,
    model_control: Annotated[str, _opt(
        "MODEL_CONTROL", "none: load every model at start; poll: also rescan (needs --repository-poll-s); "
        "explicit: load --load-model ones at start, others by request (Triton's repository API).")] = "",
    load_model: Annotated[list[str] | None, _opt(
        "LOAD_MODEL", "Under --model-control explicit: a model to load at start (repeat; '*' for all).")] = None,
    grace_period_s: Annotated[float, _opt("GRACE_PERIOD_S", "Time to finish work in flight at shutdown.")] = 10.0,
    stream_idle_timeout_s: Annotated[float, _opt(
        "STREAM_IDLE_TIMEOUT_S", "End a stream that sends nothing this long, every answer sent (0: never).")] = 60.0,
    kserve: Annotated[bool, _opt("KSERVE", "Also serve the KServe v2 protocol, for Triton and KServe clients.")] = True,
    log_level: Annotated[str, _opt("LOG_LEVEL")] = "INFO",
    log_format: Annotated[str, _opt("LOG_FORMAT", "text or json.")] = "text",
) -> None:
    """Serve every model in a repository over gRPC until SIGTERM or Ctrl-C."""
    from tilecast.server.app import serve_until_signalled
    from tilecast.server.logs import configure
    from tilecast.server.settings import Settings

    settings = Settings(
        repository=repository, host=host, port=port, metrics_port=metrics_port, max_batch_size=max_batch_size,
        max_queue_delay_ms=max_queue_delay_ms, max_queue_size=max_queue_size,
        max_tiles_in_flight_per_stream=stream_window, max_concurrent_calls=max_calls, instances=instances,
        intra_op_threads=threads,
        providers=tuple(p.strip() for p in providers.split(",") if p.strip()), trt_fp16=trt_fp16,
        max_message_bytes=max_message_mb * 1024 * 1024, repository_poll_s=repository_poll_s,
        model_control=model_control, load_models=tuple(load_model or ()),
        grace_period_s=grace_period_s, stream_idle_timeout_s=stream_idle_timeout_s, kserve=kserve,
        log_level=log_level, log_format=log_format,
    )
    configure(log_level, log_format)
    try:
        left_a_load_running = asyncio.run(serve_until_signalled(settings))
    except OSError as exc:
        raise ValueError(str(exc)) from exc
    if left_a_load_running:
        # A thread still loading an engine cannot be stopped, and the interpreter's exit would unload
        # the engine library under it: leave now, everything served having been answered.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
