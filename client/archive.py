"""Whole archives: files, folders and globs in; a mirrored folder of outputs; resume; one failure at a time."""

from __future__ import annotations

import glob
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tilecast.client.convert import convert_image
from tilecast.client.heatmap import heatmap_paths
from tilecast.client.image import FileIdentity
from tilecast.client.options import ConvertOptions
from tilecast.client.outputs import output_paths
from tilecast.client.reader import PILLOW_SUFFIXES, TIFF_SUFFIXES
from tilecast.client.remote import Client
from tilecast.proto.errors import InvalidOption, TilecastError
from tilecast.proto.spec import ModelSpec

IMAGE_SUFFIXES = sorted(TIFF_SUFFIXES | PILLOW_SUFFIXES, key=len, reverse=True)  # ".ome.tif" before ".tif"
GLOB_CHARS = set("*?[")
# Options that change what a conversion writes (not how fast or how resiliently it gets there).
OUTPUT_OPTIONS = ("tile_size", "halo", "stitch", "blend_window", "overlap", "compression", "level",
                  "microns_per_pixel", "channels", "stride", "tissue_only", "min_tissue")


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
    warnings: tuple[str, ...] = ()  # what the conversion noticed (an all-background heat map, ...)


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


@dataclass(frozen=True)
class Shard:
    """Part `index` of `count` (0-based) of an archive. A file belongs to the part its key (its output path
    relative to the output folder) hashes to, so each file's part depends on that file alone: adding files
    to the archive, or planning again in a pod that restarts later, never moves a file to another part."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise InvalidOption("--shard", f"{self.index}/{self.count}", SHARD_FORM)

    @classmethod
    def parse(cls, text: str) -> Shard:
        """'INDEX/COUNT', e.g. '0/4' .. '3/4'."""
        found = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not found:
            raise InvalidOption("--shard", text, SHARD_FORM)
        return cls(int(found[1]), int(found[2]))

    def takes(self, key: str) -> bool:
        """Whether the file with this key is in this part (sha256, the same in every process)."""
        digest = hashlib.sha256(key.encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index


SHARD_FORM = ("give INDEX/COUNT with 0 <= INDEX < COUNT (e.g. 0/4 .. 3/4), or auto: JOB_COMPLETION_INDEX "
              "out of --shard-count (TILECAST_SHARD_COUNT)")
JOB_INDEX = "JOB_COMPLETION_INDEX"  # set by Kubernetes in each pod of an Indexed Job


def shard_of(given: str, count: int, env: Mapping[str, str]) -> Shard | None:
    """The part to convert: `given` ('I/N' or 'auto'; '' = none given) and `count` (--shard-count, 0 = none).
    'auto', or no --shard at all while both JOB_COMPLETION_INDEX and a count are set, takes the pod's index
    in an Indexed Job; None: convert everything."""
    if count < 0:
        raise InvalidOption("--shard-count", count, "give the number of parts, 1 or more (0: none)")
    text = given.strip()
    if text.lower() == "auto" or (not text and count and env.get(JOB_INDEX, "").strip()):
        index = env.get(JOB_INDEX, "").strip()
        if not index.isdecimal() or not count:
            raise InvalidOption("--shard", text or f"${JOB_INDEX}", f"auto needs {JOB_INDEX} (set in an Indexed "
                                f"Job's pods; got {index!r}) and --shard-count or TILECAST_SHARD_COUNT")
        return Shard(int(index), count)
    if not text:
        return None
    shard = Shard.parse(text)
    if count and count != shard.count:
        raise InvalidOption("--shard-count", count, f"--shard {text} already says {shard.count} parts")
    return shard


def shard_jobs(jobs: list[Job], shard: Shard | None, output_dir: Path) -> list[Job]:
    """The jobs of one part (all of them for None), keyed by output path relative to `output_dir`."""
    if shard is None:
        return jobs
    return [job for job in jobs if shard.takes(_shard_key(job, output_dir))]


def _shard_key(job: Job, output_dir: Path) -> str:
    try:
        return job.output.relative_to(output_dir).as_posix()
    except ValueError:  # one input written to a named file: not below a folder
        return job.output.name


def stamp(model: str, version: int, source: Path, options: ConvertOptions | None = None) -> str:
    """The ImageDescription of an output: what made it (model version, every option that changes the
    output, the input file's identity), so a later run can tell whether it would write the same."""
    options = options or ConvertOptions()
    settings = {name: getattr(options, name) for name in OUTPUT_OPTIONS}
    identity = asdict(FileIdentity.of(source)) if source.is_file() else None
    return json.dumps({"tilecast": {"model": model, "version": version, "source": source.name, "input": identity,
                                    "options": settings}}, sort_keys=True)


def is_complete(tif: Any, size: int) -> bool:
    """Whether every tile or strip of every page (pyramid levels included) lies inside the file: a file cut
    short (a full disk, a copy stopped part-way) is not."""
    for series in tif.series:
        for level in series.levels:
            for page in level.pages:
                if page is None or not page.dataoffsets:
                    return False
                spans = zip(page.dataoffsets, page.databytecounts, strict=True)
                if any(count <= 0 or offset + count > size for offset, count in spans):
                    return False
    return True


def already_done(output: Path, model: str, version: int, source: Path, options: ConvertOptions | None = None) -> bool:
    """An output is kept when it is whole and stamped by the same model version, options and input file."""
    if not output.is_file():
        return False
    import tifffile

    expected = json.loads(stamp(model, version, source, options))
    try:
        with tifffile.TiffFile(output) as tif:
            page: Any = tif.pages[0]
            marks = [page.description, page.software]  # BigTIFF: description; OME-TIFF: Software
            if not any(_parses_to(mark, expected) for mark in marks):
                return False
            return is_complete(tif, output.stat().st_size)
    except (OSError, ValueError, IndexError, KeyError, tifffile.TiffFileError):
        return False


def beside(spec: ModelSpec, output: Path) -> list[Path]:
    """The files a conversion writes next to `output`: a classifier's overlay and CSV, a segmenter's
    further outputs."""
    return list(heatmap_paths(output)[1:]) if spec.is_classifier else output_paths(spec, output)[1:]


def _parses_to(mark: str, expected: Any) -> bool:
    try:
        return bool(json.loads(mark) == expected)
    except ValueError:  # JSONDecodeError included
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
    spec = ModelSpec.of(client.get_model(model, version))
    version = spec.version
    outcomes = []
    for job in jobs:
        if resume and already_done(job.output, model, version, job.source, options) and all(
                p.is_file() for p in beside(spec, job.output)):
            outcomes.append(Outcome(str(job.source), str(job.output), "skipped", "already complete"))
            continue
        started = time.perf_counter()
        try:
            result = convert_image(client, model, job.source, job.output, options, version=version,
                                   progress=on_file(job) if on_file else None,
                                   description=stamp(model, version, job.source, options))
        except (TilecastError, OSError, ValueError) as exc:
            outcomes.append(Outcome(str(job.source), str(job.output), "failed", str(exc),
                                    time.perf_counter() - started))
            continue
        outcomes.append(Outcome(str(job.source), str(job.output), "converted", "", result.seconds,
                                result.shape[0] * result.shape[1] / 1e6, result.warnings))
    return outcomes


def as_json(outcomes: list[Outcome]) -> str:
    return json.dumps([asdict(o) for o in outcomes], indent=2)
