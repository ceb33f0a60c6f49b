"""Packaging and the composed CLI."""

from __future__ import annotations

import tomllib

from typer.testing import CliRunner

from tests.conftest import REPO_ROOT
from tilecast.cli import app

FOLDERS = {"tilecast": "tilecast", "proto": "tilecast.proto", "server": "tilecast.server",
           "client": "tilecast.client", "export": "tilecast.export", "training": "tilecast.training"}


def test_every_package_folder_is_listed_under_tilecast() -> None:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    assert all(name == "tilecast" or name.startswith("tilecast.") for name in listed)
    found = set()
    for folder, package in FOLDERS.items():
        for init in (REPO_ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO_ROOT / folder).parts
            found.add(".".join((package, *relative)))
    assert found == listed


def test_help_lists_every_command_group() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "convert", "models", "train", "export", "demo"):
        assert command in result.output
