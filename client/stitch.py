"""Step 4 of a conversion, stitch: model answers, in the plan's order, turned into output blocks.

One stitcher per output kind: crop (each tile's core), blend (overlapping tiles averaged; class labels
become the argmax of blended probabilities) and heat map (one pixel per classifier cell).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from tilecast.client.blending import BlendStitcher, Window, argmax_labels, cast_to
from tilecast.client.plan import BlendPlan, CellPlan, CropPlan
from tilecast.client.tiling import crop_core
from tilecast.proto import tensors
from tilecast.proto.errors import InvalidArgument
from tilecast.proto.spec import ModelSpec
from tilecast.proto.v1 import manifest_pb2

Array = npt.NDArray[Any]
Answers = Iterable[tuple[int, list[Array]]]  # (tile id, one array per model output), in plan order
Blocks = Iterator[list[Array]]  # one block per output, in the output's tile order


def cropped(plan: CropPlan, answers: Answers) -> Blocks:
    """Each tile's core, cut from each of its outputs."""
    for index, outputs in answers:
        tile = plan.tile(index)
        yield [crop_core(o, tile) for o in outputs]


def blended(spec: ModelSpec, plan: BlendPlan, window: Window, answers: Answers) -> Blocks:
    """Blend images and class probabilities; class labels become the argmax of blended probabilities."""
    labels = manifest_pb2.OUTPUT_INTERPRETATION_CLASS_LABELS
    probs = manifest_pb2.OUTPUT_INTERPRETATION_CLASS_PROBABILITIES
    kinds = [o.interpretation for o in spec.outputs]
    dtypes = [tensors.to_numpy_dtype(o.dtype) for o in spec.outputs]
    averaged = [i for i, k in enumerate(kinds) if k != labels]
    probabilities = [i for i, k in enumerate(kinds) if k == probs]
    if len(averaged) < len(kinds) and not probabilities:
        raise InvalidArgument(f"model {spec.name} returns class labels only, which cannot be blended; "
                              "use --stitch crop, or export it with --probabilities")
    counts = [spec.outputs[i].channels for i in averaged]
    stitcher = BlendStitcher(plan.grid, sum(counts), window)
    for index, outputs in answers:
        values = stitcher.add(index, np.concatenate([outputs[i] for i in averaged], axis=2))
        parts = dict(zip(averaged, np.split(values, np.cumsum(counts)[:-1].tolist(), axis=2), strict=True))
        yield [cast_to(parts[i], dtypes[i]) if i in parts else argmax_labels(parts[probabilities[0]], dtypes[i])
               for i in range(len(kinds))]


def heat_map(spec: ModelSpec, plan: CellPlan, answers: Answers) -> Array:
    """Class scores per cell (rows x cols x classes, float32); NaN where no patch was classified."""
    scores = np.full((plan.rows, plan.cols, spec.outputs[0].channels), np.nan, np.float32)
    for index, outputs in answers:
        scores[plan.cell(index)] = np.asarray(outputs[0], np.float32).reshape(-1)
    return scores
