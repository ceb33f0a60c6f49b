"""The server's one settings object. CLI flags and TILECAST_* environment variables map 1:1 to it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    repository: Path = Path("models")
    host: str = "127.0.0.1"
    port: int = 8500  # 0 picks a free port
    max_batch_size: int = 8  # upper bound; a manifest may ask for less
    max_queue_delay_ms: float = 0.0  # 0: batch whatever is waiting when the engine frees up
    max_queue_size: int = 512  # tiles waiting per model before RESOURCE_EXHAUSTED
    max_tiles_in_flight_per_stream: int = 64
    instances: int = 1  # concurrent engine calls per model
    intra_op_threads: int = 0  # ONNX Runtime threads per call; 0 = one per core
    max_message_bytes: int = 64 * 1024 * 1024
    grace_period_s: float = 10.0
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        checks = {
            "port": 0 <= self.port <= 65535,
            "max_batch_size": self.max_batch_size >= 1,
            "max_queue_delay_ms": self.max_queue_delay_ms >= 0,
            "max_queue_size": self.max_queue_size >= 1,
            "max_tiles_in_flight_per_stream": self.max_tiles_in_flight_per_stream >= 1,
            "instances": self.instances >= 1,
            "intra_op_threads": self.intra_op_threads >= 0,
            "max_message_bytes": self.max_message_bytes >= 1024,
            "grace_period_s": self.grace_period_s >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise ValueError(f"invalid server settings: {values}")

    @property
    def threads(self) -> int:
        return self.intra_op_threads or os.cpu_count() or 1
