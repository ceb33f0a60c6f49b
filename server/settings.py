"""The server's one settings object: each field is a `tilecast serve` flag (`--field-name`) and an
environment variable (`TILECAST_FIELD_NAME`), with its default and help written once, here
(`tilecast.server.cli` generates the command from these fields).

A field may carry `setting(...)` metadata: its help, a rule its value must follow, older flag
spellings kept as aliases. A field without it still becomes a flag; a number must then be finite and
not negative.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROVIDERS = ("tensorrt", "cuda", "cpu")
CONTROL_MODES = ("none", "poll", "explicit")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")
ENV_PREFIX = "TILECAST_"


@dataclass(frozen=True)
class Rule:
    """What a value must be: `holds(value)`, else the message says `valid` (what to give)."""

    holds: Callable[[Any], bool]
    valid: str


@dataclass(frozen=True)
class ScaledAlias:
    """An older flag for a field in another unit: its value times `scale` is the field's."""

    name: str  # without the dashes, e.g. "max-message-mb"
    scale: int
    help: str


def setting(default: Any, help: str, *, rule: Rule | None = None, choices: tuple[str, ...] = (),
            aliases: tuple[str, ...] = (), scaled: ScaledAlias | None = None) -> Any:
    """A settings field with its help and checks. `aliases`: other flag names (without dashes) that
    set the same value; each also has its environment variable."""
    meta = {"help": help, "rule": rule, "choices": choices, "aliases": aliases, "scaled": scaled}
    return dataclasses.field(default=default, metadata=meta)


def _within(low: float, high: float = math.inf) -> Callable[[Any], bool]:
    return lambda value: low <= value <= high


def _at_least(low: float, what: str = "") -> Rule:
    return Rule(_within(low), f"a number ≥ {low:g}{what}")


class SettingError(ValueError):
    """One setting has a value outside what it takes: a usage error, named by its flag."""

    def __init__(self, name: str, value: object, valid: str) -> None:
        self.name = name
        super().__init__(f"{flag_of(name)} {_shown(value)} is not valid: give {valid}")


def flag_of(name: str) -> str:
    """The `tilecast serve` flag of a field: `--field-name`."""
    return "--" + name.replace("_", "-")


def env_of(name: str) -> str:
    """The environment variable of a field (or a flag alias): `TILECAST_FIELD_NAME`."""
    return ENV_PREFIX + name.replace("-", "_").upper()


def _shown(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "''"
    text = str(value)
    return text if text and " " not in text and len(text) <= 80 else repr(text[:80])


@dataclass(frozen=True)
class Settings:
    """How a server runs. Built by `tilecast serve` from its flags and environment, or directly
    (tests, embedding); either way every value is checked here."""

    # setting() returns a dataclasses.field (ruff sees only a call in the default)
    repository: Path = setting(Path("models"), "Model repository folder: <model>/<version>/ directories.")  # noqa: RUF009
    host: str = setting("127.0.0.1", "Address to listen on.")
    port: int = setting(8500, "gRPC port; 0 picks a free one.", rule=Rule(_within(0, 65535), "a port 0..65535 "
                                                                         "(0 picks a free one)"))
    metrics_port: int = setting(8502, "Prometheus /metrics port; 0 picks a free one, -1 turns metrics off.",
                                rule=Rule(_within(-1, 65535), "a port 0..65535, or -1 for no metrics"))
    metrics_host: str = setting("127.0.0.1", "Address /metrics listens on, whatever --host is.")
    metrics_token_file: Path | None = setting(None, "File whose first line is a token that scrapes of /metrics "  # noqa: RUF009
                                              "must send (Authorization: Bearer); default: none needed.")
    tls_cert: Path | None = setting(None, "TLS certificate (PEM) for the gRPC port; with --tls-key. Reloaded "  # noqa: RUF009
                                    "when the file changes.")
    tls_key: Path | None = setting(None, "TLS private key (PEM) of --tls-cert.")  # noqa: RUF009
    tls_client_ca: Path | None = setting(None, "CA (PEM) that client certificates must be signed by: mutual "  # noqa: RUF009
                                         "TLS, clients without one refused.")
    auth_tokens: Path | None = setting(None, "Tokens file: one '<token> <role>' per line (role infer or admin; "  # noqa: RUF009
                                       "'sha256:<hex> <role>' for a hashed token). Every call then needs a token.")
    max_calls_per_peer: int = setting(0, "Calls one client (its host, or its token) runs at once; more get "
                                         "RESOURCE_EXHAUSTED (0: no cap).")
    max_batch_size: int = setting(8, "Largest batch per engine call (a manifest may ask for less).",
                                  rule=_at_least(1))
    max_queue_delay_ms: float = setting(
        0.0, "How long a freed engine instance waits for a fuller batch while another computes.")
    max_queue_size: int = setting(512, "Tiles waiting per model version before RESOURCE_EXHAUSTED.",
                                  rule=_at_least(1))
    max_tiles_in_flight_per_stream: int = setting(64, "Tiles in flight per stream.", rule=_at_least(1),
                                                  aliases=("stream-window",))
    max_concurrent_calls: int = setting(256, "Calls served at once (a thread each); more get RESOURCE_EXHAUSTED.",
                                        rule=_at_least(1), aliases=("max-calls",))
    instances: int = setting(1, "Engine instances per model version, each with its own session.", rule=_at_least(1))
    intra_op_threads: int = setting(0, "Engine threads per instance; 0 = cores / instances.", aliases=("threads",))
    providers: tuple[str, ...] = setting(
        PROVIDERS, "Engines in order of preference, comma-separated; the first available wins.", choices=PROVIDERS)
    trt_fp16: bool = setting(False, "Let the TensorRT execution provider use fp16.")
    trt_cache: Path | None = setting(None, "TensorRT engine cache folder (default <repository>/.trt-cache).")  # noqa: RUF009
    max_message_bytes: int = setting(
        64 * 1024 * 1024, "Largest gRPC message received or sent, in bytes.", rule=_at_least(1024),
        scaled=ScaledAlias("max-message-mb", 1024 * 1024, "Largest gRPC message received or sent, in MiB."))
    repository_poll_s: float = setting(0.0, "Rescan the repository this often (0 = load at start only).")
    model_control: str = setting(
        "", "none: load every model at start; poll: also rescan (needs --repository-poll-s); explicit: load "
        "--load-model ones at start, others by request (Triton's repository API). Default: poll when "
        "--repository-poll-s > 0, else none.")
    load_models: tuple[str, ...] = setting(
        (), "Under --model-control explicit: a model to load at start (repeat; '*' for all).", aliases=("load-model",))
    grace_period_s: float = setting(10.0, "Time to finish work in flight at shutdown.")
    # Ends a stream that sends nothing while every answer has been sent (DEADLINE_EXCEEDED), so that clients
    # holding streams open cannot fill the call limit.
    stream_idle_timeout_s: float = setting(60.0, "End a stream that sends nothing this long, every answer sent "
                                                 "(0: never).")
    kserve: bool = setting(True, "Also serve the KServe v2 protocol, for Triton and KServe clients.")
    log_level: str = setting("INFO", "Log level.", choices=LOG_LEVELS)
    log_format: str = setting("text", "Log lines as text or json.", choices=LOG_FORMATS)

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            check(item, getattr(self, item.name))
        mode = self.control_mode
        if mode not in CONTROL_MODES:
            raise ValueError(f"model control must be one of {', '.join(CONTROL_MODES)}, not {mode!r}")
        if (mode == "poll") != (self.repository_poll_s > 0):
            raise ValueError("polling the repository needs --model-control poll (or none given) and "
                             f"--repository-poll-s > 0; got {mode!r} and {self.repository_poll_s}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both --tls-cert and --tls-key")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key too")
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


@functools.cache
def field_types() -> dict[str, Any]:
    """Each field's type (the annotations are strings under `from __future__ import annotations`)."""
    return typing.get_type_hints(Settings)


def is_number(kind: Any) -> bool:
    return kind in (int, float)


def check(item: dataclasses.Field[Any], value: Any) -> None:
    """Raise SettingError when `value` breaks the field's rule or choices (numbers: finite, ≥ 0 by default)."""
    kind = field_types()[item.name]
    rule: Rule | None = item.metadata.get("rule")
    choices: tuple[str, ...] = item.metadata.get("choices", ())
    if is_number(kind):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise SettingError(item.name, value, rule.valid if rule else "a finite number ≥ 0")
        rule = rule or _at_least(0)
    if rule is not None and not rule.holds(value):
        raise SettingError(item.name, value, rule.valid)
    if choices:
        given = value if isinstance(value, tuple) else (value,)
        many = " (comma-separated, at least one)" if isinstance(value, tuple) else ""
        # Log levels are taken in any case, as logging takes them; the lower-case choices exactly.
        if not given or not all(v in choices or str(v).upper() in choices for v in given):
            raise SettingError(item.name, value, f"{'one or more of' if many else 'one of'} "
                                                 f"{', '.join(choices)}{many}")
