"""The server's one settings object. CLI flags and TILECAST_* environment variables map 1:1 to it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROVIDERS = ("tensorrt", "cuda", "cpu")
CONTROL_MODES = ("none", "poll", "explicit")


@dataclass(frozen=True)
class Settings:
    repository: Path = Path("models")
    host: str = "127.0.0.1"
    port: int = 8500  # 0 picks a free port
    metrics_port: int = 8502  # Prometheus /metrics; -1 turns it off, 0 picks a free port
    max_batch_size: int = 8  # upper bound; a manifest may ask for less
    max_queue_delay_ms: float = 0.0  # how long a freed instance waits for a fuller batch while another computes
    max_queue_size: int = 512  # tiles waiting per model version before RESOURCE_EXHAUSTED
    max_tiles_in_flight_per_stream: int = 64
    max_concurrent_calls: int = 256  # calls served at once (a thread each); more get RESOURCE_EXHAUSTED
    instances: int = 1  # engine instances per model version, each with its own session
    intra_op_threads: int = 0  # engine threads per instance; 0 = cores / instances
    providers: tuple[str, ...] = PROVIDERS  # preferred engines, first available wins
    trt_fp16: bool = False
    trt_cache: Path | None = None  # TensorRT EP engine cache; None = <repository>/.trt-cache
    max_message_bytes: int = 64 * 1024 * 1024
    repository_poll_s: float = 0.0  # 0: load at start only; >0: rescan the repository this often
    # Triton's model control modes: "none" loads every model at start, "poll" also rescans every
    # repository_poll_s, "explicit" loads `load_models` at start ("*": all) and others by request
    # (RepositoryModelLoad / Unload). "" = "poll" when repository_poll_s > 0, else "none".
    model_control: str = ""
    load_models: tuple[str, ...] = ()
    grace_period_s: float = 10.0
    stream_idle_timeout_s: float = 60.0
    """A stream that sends no message for this long while every answer has been sent is ended
    (DEADLINE_EXCEEDED), so that clients holding streams open cannot fill the call limit; 0: never."""
    kserve: bool = True  # also serve the KServe v2 protocol (inference.GRPCInferenceService) for Triton clients
    log_level: str = "INFO"
    log_format: str = "text"  # or "json"

    def __post_init__(self) -> None:
        checks = {
            "port": 0 <= self.port <= 65535,
            "metrics_port": -1 <= self.metrics_port <= 65535,
            "max_batch_size": self.max_batch_size >= 1,
            "max_queue_delay_ms": self.max_queue_delay_ms >= 0,
            "max_queue_size": self.max_queue_size >= 1,
            "max_tiles_in_flight_per_stream": self.max_tiles_in_flight_per_stream >= 1,
            "max_concurrent_calls": self.max_concurrent_calls >= 1,
            "instances": self.instances >= 1,
            "intra_op_threads": self.intra_op_threads >= 0,
            "providers": bool(self.providers) and all(p in PROVIDERS for p in self.providers),
            "max_message_bytes": self.max_message_bytes >= 1024,
            "repository_poll_s": self.repository_poll_s >= 0,
            "grace_period_s": self.grace_period_s >= 0,
            "stream_idle_timeout_s": self.stream_idle_timeout_s >= 0,
            "log_format": self.log_format in ("text", "json"),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise ValueError(f"invalid server settings: {values}")
        mode = self.control_mode
        if mode not in CONTROL_MODES:
            raise ValueError(f"model control must be one of {', '.join(CONTROL_MODES)}, not {mode!r}")
        if (mode == "poll") != (self.repository_poll_s > 0):
            raise ValueError("polling the repository needs --model-control poll (or none given) and "
                             f"--repository-poll-s > 0; got {mode!r} and {self.repository_poll_s}")
        if self.load_models and mode != "explicit":
            raise ValueError("--load-model names the models to load at start under --model-control explicit; "
                             f"under {mode!r} every model of the repository loads")

    @property
    def control_mode(self) -> str:
        return self.model_control or ("poll" if self.repository_poll_s > 0 else "none")

    def threads_per_instance(self, instances: int) -> int:
        return self.intra_op_threads or max(1, (os.cpu_count() or 1) // instances)

    @property
    def engine_cache(self) -> Path:
        return self.trt_cache or self.repository / ".trt-cache"
