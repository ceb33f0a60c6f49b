"""`tilecast serve`'s options are the settings fields: one flag and one environment variable each, the
field's default, and a bad value refused in one line naming the flag, with exit code 2."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tilecast.cli import app
from tilecast.server.cli import settings_of
from tilecast.server.settings import Settings, env_of, field_types, flag_of

NUMBERS = [f.name for f in dataclasses.fields(Settings) if field_types()[f.name] in (int, float)]
ENUMERATED = [f.name for f in dataclasses.fields(Settings) if f.metadata.get("choices")]


def _serve_command() -> Any:
    group = typer.main.get_command(app)
    return group.commands["serve"]  # type: ignore[attr-defined]


def parsed(args: list[str], env: dict[str, str] | None = None, monkeypatch: pytest.MonkeyPatch | None = None
           ) -> Settings:
    """The settings `tilecast serve ARGS` would run with (parsed as the command parses, not served)."""
    if env and monkeypatch:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
    context = _serve_command().make_context("serve", list(args))
    return settings_of(context.params)


def refused(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["serve", "--repository", "/nonexistent", *args], env=env)
    return result.exit_code, " ".join(result.output.split())


def test_every_field_is_a_flag_and_an_environment_variable() -> None:
    options = {p.name: p for p in _serve_command().params}
    for item in dataclasses.fields(Settings):
        option = options[item.name]
        assert flag_of(item.name) in option.opts + option.secondary_opts, (item.name, option.opts)
        assert env_of(item.name) in option.envvar, (item.name, option.envvar)
        assert item.metadata.get("help", "") in (option.help or ""), item.name  # a plain field has none


def test_no_flag_gives_the_field_defaults() -> None:
    assert parsed([]) == Settings()


@pytest.mark.parametrize(("args", "env", "field", "value"), [
    (["--port", "9000"], {}, "port", 9000),
    ([], {"TILECAST_PORT": "9001"}, "port", 9001),
    (["--stream-window", "8"], {}, "max_tiles_in_flight_per_stream", 8),
    ([], {"TILECAST_STREAM_WINDOW": "9"}, "max_tiles_in_flight_per_stream", 9),
    (["--max-tiles-in-flight-per-stream", "7"], {}, "max_tiles_in_flight_per_stream", 7),
    (["--max-calls", "12"], {}, "max_concurrent_calls", 12),
    (["--threads", "3"], {}, "intra_op_threads", 3),
    (["--max-message-mb", "2"], {}, "max_message_bytes", 2 * 1024 * 1024),
    ([], {"TILECAST_MAX_MESSAGE_MB": "3"}, "max_message_bytes", 3 * 1024 * 1024),
    (["--max-message-bytes", "4096"], {}, "max_message_bytes", 4096),
    (["--providers", "cuda,cpu"], {}, "providers", ("cuda", "cpu")),
    (["--model-control", "explicit", "--load-model", "a", "--load-model", "b,c"], {}, "load_models",
     ("a", "b", "c")),
    (["--trt-cache", "/tmp/cache"], {}, "trt_cache", Path("/tmp/cache")),
    (["--no-kserve"], {}, "kserve", False),
    ([], {"TILECAST_KSERVE": "0"}, "kserve", False),
    (["--trt-fp16"], {}, "trt_fp16", True),
    (["--repository-poll-s", "0.5"], {}, "repository_poll_s", 0.5),
])
def test_flags_environment_and_aliases_set_their_field(args: list[str], env: dict[str, str], field: str,
                                                       value: object, monkeypatch: pytest.MonkeyPatch) -> None:
    assert getattr(parsed(args, env, monkeypatch), field) == value


def _bad_values(name: str) -> list[str]:
    if name in ENUMERATED:
        return ["typo"]
    values = ["abc", "nan", "inf", "-2"]  # -2: below every numeric setting's range
    return values + (["65536"] if name.endswith("port") else [])


@pytest.mark.parametrize(("name", "value"), [(n, v) for n in NUMBERS + ENUMERATED for v in _bad_values(n)])
def test_a_bad_value_of_every_numeric_and_enumerated_setting_is_one_line_and_exit_2(name: str, value: str) -> None:
    for how in ("flag", "env"):
        args, env = ([flag_of(name), value], None) if how == "flag" else ([], {env_of(name): value})
        code, said = refused(args, env)
        assert code == 2, (how, said)
        assert said.startswith(f"error: {flag_of(name)} ") and "give " in said and "Traceback" not in said, said


@pytest.mark.parametrize(("args", "flag"), [
    (["--stream-window", "0"], "--max-tiles-in-flight-per-stream"), (["--max-calls", "0"], "--max-concurrent-calls"),
    (["--threads", "-1"], "--intra-op-threads"), (["--max-message-mb", "0"], "--max-message-mb"),
    (["--max-message-mb", "x"], "--max-message-mb"), (["--max-batch-size", "0"], "--max-batch-size"),
    (["--instances", "0"], "--instances"), (["--max-queue-size", "0"], "--max-queue-size"),
    (["--providers", ""], "--providers"), (["--metrics-port", "-2"], "--metrics-port"),
])
def test_alias_and_range_mistakes_name_the_flag(args: list[str], flag: str) -> None:
    code, said = refused(args)
    assert code == 2 and said.startswith(f"error: {flag} "), said


def test_settings_from_python_are_checked_by_the_same_rules() -> None:
    with pytest.raises(ValueError, match="--max-batch-size 0 is not valid: give a number ≥ 1"):
        Settings(max_batch_size=0)
    with pytest.raises(ValueError, match="--grace-period-s"):
        Settings(grace_period_s=float("nan"))
