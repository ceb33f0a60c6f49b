"""Step 5 of a conversion, sink, for image outputs: where a conversion's results go, what they say about
themselves, and writing them so that all appear complete or none does.

A model with several outputs (labels and probabilities) writes one file per output, the first under
the given name and the others beside it. A name ending in .ome.tif(f) gives pyramidal OME-TIFFs;
any other name a tiled BigTIFF. Each carries the input's physical pixel size, and channel names
where they mean something: class names for probabilities, the input's names for an image output
with as many channels as the model was fed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tilecast.client.metadata import PixelMetadata, resolution_tags
from tilecast.client.options import Channels
from tilecast.client.pyramid import OME_SUFFIXES, is_ome_path, write_pyramid
from tilecast.client.writer import Staging, staged, write_tiled_tiffs
from tilecast.proto import tensors
from tilecast.proto.spec import ModelSpec
from tilecast.proto.v1 import manifest_pb2


@dataclass(frozen=True)
class OutputTarget:
    path: Path
    shape: tuple[int, int, int]  # height, width, channels
    dtype: np.dtype[Any]
    metadata: PixelMetadata
    labels: bool  # class labels: pyramid levels subsample instead of averaging


def output_paths(spec: ModelSpec, output_path: Path) -> list[Path]:
    """The first output goes to `output_path`; others (e.g. probabilities) beside it, named by output."""
    name = output_path.name
    suffix = next((s for s in OME_SUFFIXES if name.lower().endswith(s)), output_path.suffix)
    stem = name[: len(name) - len(suffix)]
    return [output_path] + [output_path.with_name(f"{stem}.{out.name}{suffix}") for out in spec.outputs[1:]]


def _fed_names(source: PixelMetadata, fed: Channels) -> list[str]:
    """The names of the channels the model was fed."""
    if isinstance(fed, str):  # GRAY
        return ["luminance"]
    if fed:
        return [source.channel_names[c] for c in fed if c < len(source.channel_names)]
    return list(source.channel_names)


def output_targets(spec: ModelSpec, output_path: Path, height: int, width: int, source: PixelMetadata,
                   fed: Channels) -> list[OutputTarget]:
    """One target per model output, with the metadata it carries over from the input."""
    targets = []
    for path, out in zip(output_paths(spec, output_path), spec.outputs, strict=True):
        interpretation = out.interpretation
        if interpretation == manifest_pb2.OUTPUT_INTERPRETATION_CLASS_PROBABILITIES:
            names: Sequence[str] = spec.manifest.class_names
        elif interpretation == manifest_pb2.OUTPUT_INTERPRETATION_CLASS_LABELS:
            names = ["labels"]
        else:
            names = _fed_names(source, fed)
        names = names if len(names) == out.channels else []
        targets.append(OutputTarget(path, (height, width, out.channels), tensors.to_numpy_dtype(out.dtype),
                                    PixelMetadata(source.pixel_size_um, tuple(names)),
                                    interpretation == manifest_pb2.OUTPUT_INTERPRETATION_CLASS_LABELS))
    return targets


def write_outputs(targets: Sequence[OutputTarget], blocks: Iterable[Sequence[npt.NDArray[Any]]], *,
                  tile_size: int, compression: str, stamp: str | None = None) -> None:
    """Write each output tile by tile under a temporary name; rename all once all are complete, or remove
    them all if any fails.

    `stamp` marks the files as finished by this run (the BigTIFF's description, the OME-TIFF's Software
    tag, since its description holds the OME-XML)."""
    with staged() as staging:
        if is_ome_path(targets[0].path):
            _write_pyramids(staging, targets, blocks, tile_size=tile_size, compression=compression, stamp=stamp)
        else:
            write_tiled_tiffs([(staging.temporary(t.path), t.shape, t.dtype) for t in targets], blocks,
                              tile_size=tile_size, compression=compression, description=stamp,
                              tags=resolution_tags(targets[0].metadata))


def _write_pyramids(staging: Staging, targets: Sequence[OutputTarget], blocks: Iterable[Sequence[npt.NDArray[Any]]],
                    *, tile_size: int, compression: str, stamp: str | None) -> None:
    """Full-resolution levels staged as scratch BigTIFFs first, then each output's pyramid from its own."""
    bases = [staging.scratch(t.path, "base") for t in targets]
    write_tiled_tiffs([(b, t.shape, t.dtype) for b, t in zip(bases, targets, strict=True)], blocks,
                      tile_size=tile_size, compression=compression)
    for base, target in zip(bases, targets, strict=True):
        write_pyramid(base, staging.temporary(target.path), tile_size=tile_size, compression=compression,
                      metadata=target.metadata, labels=target.labels, software=stamp,
                      scratch=functools.partial(staging.scratch, target.path))
