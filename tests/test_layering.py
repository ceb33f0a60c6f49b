"""Dependencies point one way: libraries never import the command layer, and no import cycle hides behind
an import inside a function. Read from the source (every import, at any depth), not by importing it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO_ROOT

FOLDERS = {"tilecast": "tilecast", "proto": "tilecast.proto", "server": "tilecast.server",
           "client": "tilecast.client", "export": "tilecast.export", "training": "tilecast.training"}
COMMAND_LAYER = {"tilecast.cli", "tilecast.console"}
# Command modules: they may import the command layer. Everything else is a library.
COMMANDS = {"tilecast.__main__", "tilecast.cli", "tilecast.console", "tilecast.demo", "tilecast.bench",
            "tilecast.bench_convert", "tilecast.bench_monai", "tilecast.client.cli", "tilecast.server.cli",
            "tilecast.export.cli", "tilecast.training.cli", "tilecast.client.evaluate.cli"}
KNOWN_CYCLES: set[tuple[str, str]] = set()


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in (REPO_ROOT / folder).rglob("*.py"):
            parts = [p for p in path.relative_to(REPO_ROOT / folder).with_suffix("").parts if p != "__init__"]
            found[".".join((package, *parts))] = path
    return found


def imports(path: Path, known: set[str]) -> Iterator[tuple[str, bool]]:
    """(module imported, whether inside a function) for each project module `path` imports at run time."""
    def walk(node: ast.AST, in_function: bool) -> Iterator[tuple[str, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # not imported at run time
            if isinstance(child, ast.ImportFrom) and child.module:
                names = [child.module, *(f"{child.module}.{a.name}" for a in child.names)]
            elif isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            else:
                yield from walk(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))
                continue
            yield from ((name, in_function) for name in names if name in known)
    yield from walk(ast.parse(path.read_text()), False)


def graph() -> dict[str, list[tuple[str, bool]]]:
    found = modules()
    return {name: list(imports(path, set(found))) for name, path in found.items()}


def test_libraries_do_not_import_the_command_layer() -> None:
    offenders = [(name, target) for name, edges in graph().items() if name not in COMMANDS
                 for target, _ in edges if target in COMMAND_LAYER]
    assert not offenders, offenders


def test_no_cycle_hides_behind_an_import_in_a_function() -> None:
    edges = graph()

    def reaches(start: str, goal: str) -> bool:
        seen, todo = {start}, [start]
        while todo:
            for target, _ in edges.get(todo.pop(), []):
                if target == goal:
                    return True
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        return False

    cycles = {(name, target) for name, out in edges.items() for target, late in out
              if late and target != name and reaches(target, name)}
    assert not cycles - KNOWN_CYCLES, sorted(cycles - KNOWN_CYCLES)


def test_the_version_comes_from_its_own_module() -> None:
    from tilecast import __version__
    from tilecast.version import __version__ as version

    assert __version__ == version
    uses = [name for name, path in modules().items() if name != "tilecast"
            and any(text in path.read_text() for text in ("from tilecast import __version__", "tilecast.__version__"))]
    assert not uses, f"import the version from tilecast.version, not the package root: {uses}"
