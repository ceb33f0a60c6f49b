"""Where a conversion's results go and what they say about themselves.

A model with several outputs (labels and probabilities) writes one file per output, the first under
the given name and the others beside it. A name ending in .ome.tif(f) gives pyramidal OME-TIFFs;
any other name a tiled BigTIFF. Each carries the input's physical pixel size, and channel names
where they mean something: class names for probabilities, the input's names for an image output
with as many channels as the model was fed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tilecast.client.metadata import PixelMetadata
from tilecast.client.pyramid import OME_SUFFIXES, is_ome_path, resolution_tags, write_pyramid
from tilecast.client.writer import write_tiled_tiffs
from tilecast.proto import tensors
from tilecast.proto.v1 import manifest_pb2


@dataclass(frozen=True)
class OutputTarget:
    path: Path
    shape: tuple[int, int, int]  # height, width, channels
    dtype: np.dtype[Any]
    metadata: PixelMetadata
    labels: bool  # class labels: pyramid levels subsample instead of averaging


def output_paths(manifest: manifest_pb2.ModelManifest, output_path: Path) -> list[Path]:
    """The first output goes to `output_path`; others (e.g. probabilities) beside it, named by output."""
    name = output_path.name
    suffix = next((s for s in OME_SUFFIXES if name.lower().endswith(s)), output_path.suffix)
    stem = name[: len(name) - len(suffix)]
    return [output_path] + [output_path.with_name(f"{stem}.{spec.name}{suffix}") for spec in manifest.outputs[1:]]


def output_targets(manifest: manifest_pb2.ModelManifest, output_path: Path, height: int, width: int,
                   source: PixelMetadata, fed_channels: Sequence[int]) -> list[OutputTarget]:
    """One target per model output, with the metadata it carries over from the input."""
    chosen = [source.channel_names[c] for c in fed_channels if c < len(source.channel_names)] if fed_channels \
        else list(source.channel_names)
    targets = []
    for path, spec in zip(output_paths(manifest, output_path), manifest.outputs, strict=True):
        interpretation = spec.interpretation
        if interpretation == manifest_pb2.OUTPUT_INTERPRETATION_CLASS_PROBABILITIES:
            names: Sequence[str] = manifest.class_names
        elif interpretation == manifest_pb2.OUTPUT_INTERPRETATION_CLASS_LABELS:
            names = ["labels"]
        else:
            names = chosen
        names = names if len(names) == spec.channels else []
        targets.append(OutputTarget(path, (height, width, spec.channels), tensors.to_numpy_dtype(spec.dtype),
                                    PixelMetadata(source.pixel_size_um, tuple(names)),
                                    interpretation == manifest_pb2.OUTPUT_INTERPRETATION_CLASS_LABELS))
    return targets


def write_outputs(targets: Sequence[OutputTarget], blocks: Iterable[Sequence[npt.NDArray[Any]]], *,
                  tile_size: int, compression: str, stamp: str | None = None) -> None:
    """Write each output tile by tile; all appear complete, or none does.

    `stamp` marks the files as finished by this run (the BigTIFF's description, the OME-TIFF's Software
    tag, since its description holds the OME-XML)."""
    if not is_ome_path(targets[0].path):
        write_tiled_tiffs([(t.path, t.shape, t.dtype) for t in targets], blocks, tile_size=tile_size,
                          compression=compression, description=stamp, tags=resolution_tags(targets[0].metadata))
        return
    staged = [t.path.with_name(f".{t.path.name}.base-{os.getpid()}.tif") for t in targets]
    try:
        write_tiled_tiffs([(s, t.shape, t.dtype) for s, t in zip(staged, targets, strict=True)], blocks,
                          tile_size=tile_size, compression=compression)
        for done, (path, target) in enumerate(zip(staged, targets, strict=True)):
            try:
                write_pyramid(path, target.path, tile_size=tile_size, compression=compression,
                              metadata=target.metadata, labels=target.labels, software=stamp)
            except BaseException:
                for finished in targets[:done]:  # all outputs or none
                    finished.path.unlink(missing_ok=True)
                raise
    finally:
        for path in staged:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
