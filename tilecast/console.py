"""What every command module shares: one console, and user errors shown as one clear line."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler

from tilecast.proto.errors import InvalidOption, TilecastError

P = ParamSpec("P")
R = TypeVar("R")

console = Console(stderr=True)
out = Console()
USAGE = 2  # the exit status of a usage error, as click gives for a malformed command line


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(message)s", datefmt="[%X]",
        handlers=[RichHandler(console=console, show_path=False)], force=True,
    )


def int_list(option: str, text: str, minimum: int = 1) -> list[int]:
    """A comma-separated option of whole numbers, each at least `minimum` ('1,2,4,8')."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < minimum:
        raise InvalidOption(option, text, f"give whole numbers of {minimum} or more, comma-separated, e.g. 1,2,4")
    return values


def fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def user_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors a person can act on into one line and a non-zero exit, not a traceback: status 2
    for a bad option value (InvalidOption), 1 for the rest."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except InvalidOption as exc:
            raise fail(str(exc), code=USAGE) from exc
        except TilecastError as exc:
            raise fail(str(exc)) from exc
        except (FileNotFoundError, FileExistsError, IsADirectoryError, PermissionError, ValueError) as exc:
            raise fail(str(exc)) from exc
        except ImportError as exc:
            raise fail(f"{exc}. Install the extra this command needs, e.g. pip install 'tilecast[all]'") from exc

    return wrapper
