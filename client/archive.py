"""Whole archives: files, folders and globs in; a mirrored folder of outputs; resume; one failure at a time."""

from __future__ import annotations

import contextlib
import glob
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tilecast.client.convert import convert_image
from tilecast.client.options import ConvertOptions
from tilecast.client.reader import PILLOW_SUFFIXES, TIFF_SUFFIXES
from tilecast.client.remote import Client
from tilecast.proto.errors import TilecastError

IMAGE_SUFFIXES = sorted(TIFF_SUFFIXES | PILLOW_SUFFIXES, key=len, reverse=True)  # ".ome.tif" before ".tif"
GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Job:
    source: Path
    output: Path


@dataclass(frozen=True)
class Outcome:
    source: str
    output: str
    status: str  # converted, skipped (already complete), failed
    message: str = ""
    seconds: float = 0.0
    megapixels: float = 0.0


def is_image(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and any(name.endswith(s) for s in IMAGE_SUFFIXES)


def output_name(source: Path, suffix: str = ".tif") -> str:
    name = source.name
    for known in IMAGE_SUFFIXES:
        if name.lower().endswith(known):
            return name[: -len(known)] + suffix
    return source.stem + suffix


def _glob_root(pattern: str) -> Path:
    """The folder above a pattern's first wildcard: outputs mirror the matches below it."""
    parts = Path(pattern).parts
    fixed = parts[: next(i for i, p in enumerate(parts) if GLOB_CHARS & set(p))]
    return Path(*fixed) if fixed else Path(".")


def plan_jobs(inputs: Iterable[str], output_dir: Path, suffix: str = ".tif") -> list[Job]:
    """One job per image: a folder's images keep their place below it, files go to the top. Outputs are
    named like their inputs with `suffix` (.ome.tif for pyramidal OME-TIFFs)."""
    jobs: list[Job] = []
    for argument in inputs:
        path = Path(argument)
        if GLOB_CHARS & set(argument):
            root = _glob_root(argument)
            matches = sorted(Path(m) for m in glob.glob(argument, recursive=True))
            jobs += [Job(m, output_dir / m.relative_to(root).parent / output_name(m, suffix))
                     for m in matches if is_image(m)]
        elif path.is_dir():
            images = sorted(p for p in path.rglob("*") if is_image(p))
            jobs += [Job(p, output_dir / p.relative_to(path).parent / output_name(p, suffix)) for p in images]
        else:  # a file, or a missing one that will fail with its own message
            jobs.append(Job(path, output_dir / output_name(path, suffix)))
    seen: dict[Path, Path] = {}
    for job in jobs:
        if job.output in seen:
            raise ValueError(f"{seen[job.output]} and {job.source} would both be written to {job.output}")
        seen[job.output] = job.source
    return jobs


def stamp(model: str, version: int, source: Path) -> str:
    """The ImageDescription of an output: what made it, so a later run can tell it is complete."""
    return json.dumps({"tilecast": {"model": model, "version": version, "source": source.name}})


def already_done(output: Path, model: str, version: int, source: Path) -> bool:
    """Outputs appear only when complete (atomic rename); one stamped by the same model version is kept."""
    if not output.is_file():
        return False
    import tifffile

    try:
        with tifffile.TiffFile(output) as tif:
            page: Any = tif.pages[0]
            marks = [page.description, page.software]  # BigTIFF: description; OME-TIFF: Software
    except (OSError, ValueError, tifffile.TiffFileError):
        return False
    expected = json.loads(stamp(model, version, source))
    for mark in marks:
        with contextlib.suppress(ValueError):  # JSONDecodeError included
            if json.loads(mark) == expected:
                return True
    return False


def convert_many(
    client: Client,
    model: str,
    jobs: list[Job],
    options: ConvertOptions,
    *,
    version: int = 0,
    resume: bool = True,
    on_file: Callable[[Job], Callable[[int, int], None] | None] | None = None,
) -> list[Outcome]:
    """Convert every job; an unreadable or failing file is recorded and the others go on."""
    version = version or client.get_model(model).version
    outcomes = []
    for job in jobs:
        if resume and already_done(job.output, model, version, job.source):
            outcomes.append(Outcome(str(job.source), str(job.output), "skipped", "already complete"))
            continue
        started = time.perf_counter()
        try:
            result = convert_image(client, model, job.source, job.output, options, version=version,
                                   progress=on_file(job) if on_file else None,
                                   description=stamp(model, version, job.source))
        except (TilecastError, OSError, ValueError) as exc:
            outcomes.append(Outcome(str(job.source), str(job.output), "failed", str(exc),
                                    time.perf_counter() - started))
            continue
        outcomes.append(Outcome(str(job.source), str(job.output), "converted", "", result.seconds,
                                result.shape[0] * result.shape[1] / 1e6))
    return outcomes


def as_json(outcomes: list[Outcome]) -> str:
    return json.dumps([asdict(o) for o in outcomes], indent=2)
