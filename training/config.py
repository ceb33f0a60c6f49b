"""Loop configs from defaults, TOML override files and flags, in that order (later wins).

An override file holds only what differs, nanoGPT-style:

    # configs/nuclei.toml
    data = "synthetic:nuclei"
    steps = 400
    ngf = 8
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any, TypeVar

C = TypeVar("C")


def _coerce(config_type: type[Any], name: str, value: Any) -> Any:
    fields = {f.name: f for f in dataclasses.fields(config_type)}
    if name not in fields:
        raise ValueError(f"{name!r} is not a setting of {config_type.__name__}; known: {', '.join(sorted(fields))}")
    default = fields[name].default
    kind = type(default) if default is not dataclasses.MISSING else str
    if isinstance(value, str) and kind is not str:
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"{name} takes true or false, got {value!r}")
            return value.lower() in ("true", "1", "yes")
        try:
            return kind(value)
        except ValueError:
            raise ValueError(f"{name} takes a {kind.__name__}, got {value!r}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind):
        raise ValueError(f"{name} takes a {kind.__name__}, got {value!r}")
    return value


def build_config(config_type: type[C], files: list[Path], overrides: dict[str, Any]) -> C:
    """`config_type` with each file's settings applied in order, then `overrides` (flags; None = unset)."""
    values: dict[str, Any] = {}
    for path in files:
        try:
            with path.open("rb") as handle:
                values.update(tomllib.load(handle))
        except FileNotFoundError:
            raise ValueError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"config file {path} is not valid TOML: {exc}") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    return config_type(**{k: _coerce(config_type, k, v) for k, v in values.items()})


def parse_settings(pairs: list[str]) -> dict[str, str]:
    """`--set key=value` flags as a dict (values are converted to each field's type later)."""
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {pair!r} must look like key=value")
        settings[key.strip().replace("-", "_")] = value.strip()
    return settings
