"""`tilecast serve`, generated from `Settings`: each field is a flag `--field-name` and an environment
variable `TILECAST_FIELD_NAME`, with the field's default and help; a value a field does not take is
one line naming the flag, and exit code 2."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tilecast.console import fail, user_errors
from tilecast.server.settings import ScaledAlias, SettingError, Settings, env_of, field_types, flag_of

_METAVARS = {int: "INTEGER", float: "NUMBER", Path: "PATH", Path | None: "PATH"}


def _option(item: dataclasses.Field[Any]) -> tuple[Any, Any]:
    """The typer parameter of one field: (annotation, default). Values arrive as text and are parsed
    here (`_parse`), so that every mistake reads the same way; on/off fields are --x/--no-x."""
    kind, meta = field_types()[item.name], item.metadata
    names = [item.name.replace("_", "-"), *meta.get("aliases", ())]
    envvar = [env_of(name) for name in names]
    help_text = meta.get("help", "")
    if kind is bool:
        flags = "/".join(f"--{name}/--no-{name}" for name in names[:1])
        return Annotated[bool, typer.Option(flags, envvar=envvar, help=help_text)], item.default
    decls = [f"--{name}" for name in names]
    shown = _shown_default(item.default)
    if _is_list(kind):
        option = typer.Option(*decls, envvar=envvar, help=f"{help_text} Repeat the flag or separate values by "
                              "commas.", show_default=shown, metavar="TEXT")
        return Annotated[list[str] | None, option], None
    option = typer.Option(*decls, envvar=envvar, help=help_text, show_default=shown,
                          metavar=_METAVARS.get(kind, "TEXT"))
    return Annotated[str | None, option], None


def _scaled_option(alias: ScaledAlias) -> tuple[Any, Any]:
    option = typer.Option(f"--{alias.name}", envvar=env_of(alias.name), help=alias.help, metavar="INTEGER")
    return Annotated[str | None, option], None


def _shown_default(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(value) or "none"
    return "none" if value is None or value == "" else str(value)


def _is_list(kind: Any) -> bool:
    return getattr(kind, "__origin__", None) is tuple


def _parse(name: str, text: Any) -> Any:
    """A field's value from its flag's text (or repeated texts, for a tuple field)."""
    kind = field_types()[name]
    if kind is bool:
        return text
    if _is_list(kind):
        return tuple(part.strip() for value in text for part in value.split(",") if part.strip())
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            rule = Settings.__dataclass_fields__[name].metadata.get("rule")
            raise SettingError(name, text, rule.valid if rule else f"a {'whole ' if kind is int else ''}number "
                                                                   "≥ 0") from None
    if kind == Path | None:
        return Path(text) if text else None
    return Path(text) if kind is Path else text


def settings_of(options: dict[str, Any]) -> Settings:
    """The settings the flags and environment variables give; a field not given keeps its default."""
    values: dict[str, Any] = {}
    for item in dataclasses.fields(Settings):
        scaled: ScaledAlias | None = item.metadata.get("scaled")
        if scaled is not None and options.get(scaled.name.replace("-", "_")) is not None:
            if options.get(item.name) is not None:
                raise SettingError(item.name, options[item.name], f"either {flag_of(item.name)} or "
                                   f"--{scaled.name}, not both")
            text = options[scaled.name.replace("-", "_")]
            try:
                count = int(text)
            except ValueError:
                count = 0
            if count < 1:
                raise SettingError(scaled.name.replace("-", "_"), text, "a whole number ≥ 1")
            values[item.name] = count * scaled.scale
            continue
        given = options.get(item.name)
        if given is not None and given != ():  # a repeatable flag not given comes as ()
            values[item.name] = _parse(item.name, given)
    return Settings(**values)


def _signature() -> inspect.Signature:
    params = []
    for item in dataclasses.fields(Settings):
        annotation, default = _option(item)
        params.append(inspect.Parameter(item.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=annotation))
        scaled: ScaledAlias | None = item.metadata.get("scaled")
        if scaled is not None:
            annotation, default = _scaled_option(scaled)
            params.append(inspect.Parameter(scaled.name.replace("-", "_"), inspect.Parameter.KEYWORD_ONLY,
                                            default=default, annotation=annotation))
    return inspect.Signature(params, return_annotation=None)


@user_errors
def serve(**options: Any) -> None:
    """Serve every model in a repository over gRPC until SIGTERM or Ctrl-C."""
    from tilecast.server.app import serve_until_signalled
    from tilecast.server.logs import configure

    try:
        settings = settings_of(options)
    except SettingError as exc:
        raise fail(str(exc), 2) from exc
    configure(settings.log_level, settings.log_format)
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


# typer reads the command's options from its signature: the one that the settings fields give.
serve.__signature__ = _signature()  # type: ignore[attr-defined]
serve.__annotations__ = {p.name: p.annotation for p in serve.__signature__.parameters.values()}  # type: ignore[attr-defined]
