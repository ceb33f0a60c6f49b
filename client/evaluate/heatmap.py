"""A classifier heat map (written by `tilecast convert`: float32, cells x classes, NaN = not classified)
scored against an annotation mask of the slide at any resolution.

The mask is brought to the heat map's grid block by block: each cell gets the fraction of its mask pixels
that are positive (a cell smaller than a mask pixel takes the mask pixel under its centre). The scale comes
from the resolution tags of both files when both are in physical units, else from `mask_downsample` (mask
pixels per level-0 pixel, against the heat map's relative resolution of 1/stride), else from the shapes
(the grid spans the mask; off by at most a cell at the far edges)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tilecast.client.evaluate.labels import LabelImageError, bands, checked_ids, open_labels
from tilecast.client.evaluate.ranking import average_precision, roc_auc
from tilecast.client.heatmap import heatmap_paths
from tilecast.client.reader import open_tiff
from tilecast.proto.errors import InvalidOption

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class HeatmapOptions:
    """How cells are scored; raises InvalidOption on a bad field."""

    class_: str = ""  # index or name; "" = the last class
    min_fraction: float = 0.0  # a cell is positive when more than this fraction of it is (0: any pixel)
    threshold: float = 0.5  # for the Dice of the thresholded map
    top_k: int = 0  # slide score: mean of the k highest cells (0: the maximum)
    mask_downsample: float = 0.0  # mask pixels per level-0 pixel; 0: from the files

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_fraction < 1.0:
            raise InvalidOption("--min-fraction", self.min_fraction, "give a fraction in [0, 1) (0: any pixel)")
        if not 0.0 <= self.threshold <= 1.0:
            raise InvalidOption("--threshold", self.threshold, "give a score in [0, 1]")
        if self.top_k < 0:
            raise InvalidOption("--top-k", self.top_k, "give 0 (the maximum) or a positive number of cells")
        if not self.mask_downsample >= 0:
            raise InvalidOption("--mask-downsample", self.mask_downsample, "give level-0 pixels per mask pixel")


@dataclass(frozen=True)
class HeatmapScores:
    """One slide's cell and slide-level scores."""

    cells: int
    scored: int  # cells with a score (not NaN)
    positive: int  # cells the mask calls positive
    roc_auc: float
    average_precision: float
    dice: float
    slide_score: float
    slide_positive: bool  # the mask has any positive pixel
    class_name: str

    def as_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in self.__dict__.items()}


def _resolution(page: Any) -> tuple[tuple[float, float], str]:
    """(y, x) pixels per unit and the unit's name ('NONE' for relative)."""
    unit = page.tags.get("ResolutionUnit")
    name = getattr(unit.value, "name", str(unit.value)) if unit is not None else "NONE"
    values = []
    for tag in ("YResolution", "XResolution"):
        found = page.tags.get(tag)
        values.append(found.value[0] / found.value[1] if found is not None and found.value[1] else 1.0)
    return (values[0], values[1]), name


PER_CM = {"CENTIMETER": 1.0, "INCH": 1 / 2.54}


def cells_per_mask_pixel(heat_path: Path, mask_path: Path, grid: tuple[int, int], mask_shape: tuple[int, int],
                         downsample: float) -> tuple[float, float]:
    """How many heat-map cells one mask pixel spans, along y and x."""
    with open_tiff(heat_path) as tif:
        heat_res, heat_unit = _resolution(tif.pages[0])
    mask_res, mask_unit = ((1.0, 1.0), "NONE")
    if mask_path.suffix.lower() in (".tif", ".tiff"):
        with open_tiff(mask_path) as tif:
            mask_res, mask_unit = _resolution(tif.pages[0])
    if downsample:
        if heat_unit != "NONE":
            raise InvalidOption("--mask-downsample", downsample, "the heat map has a physical pixel size; "
                                "the mask's own resolution tags are used")
        return heat_res[0] * downsample, heat_res[1] * downsample
    if heat_unit in PER_CM and mask_unit in PER_CM:
        return tuple(h * PER_CM[heat_unit] / (m * PER_CM[mask_unit])  # type: ignore[return-value]
                     for h, m in zip(heat_res, mask_res, strict=True))
    return grid[0] / mask_shape[0], grid[1] / mask_shape[1]


def mask_fractions(mask_path: Path, grid: tuple[int, int], scale: tuple[float, float],
                   rows: int | None = None) -> Array:
    """Fraction of positive mask pixels in each cell, read band by band."""
    height, width = grid
    source = open_labels(mask_path)
    try:
        mh, mw = source.shape[:2]
        cell_x = np.minimum(((np.arange(mw) + 0.5) * scale[1]).astype(np.int64), width - 1)
        centre_y = np.minimum(((np.arange(height) + 0.5) / scale[0]).astype(np.int64), mh - 1)
        centre_x = np.minimum(((np.arange(width) + 0.5) / scale[1]).astype(np.int64), mw - 1)
        positive = np.zeros(height * width)
        total = np.zeros(height * width)
        centre = np.zeros((height, width), bool)
        for y0, values in bands(source, rows):
            band = checked_ids(values, mask_path) > 0
            ys = np.arange(y0, y0 + band.shape[0])
            cell_y = np.minimum(((ys + 0.5) * scale[0]).astype(np.int64), height - 1)
            cells = (cell_y[:, None] * width + cell_x[None, :]).ravel()
            positive += np.bincount(cells, weights=band.ravel(), minlength=height * width)
            total += np.bincount(cells, minlength=height * width)
            here = (centre_y >= y0) & (centre_y < y0 + band.shape[0])
            centre[here] = band[centre_y[here] - y0][:, centre_x]
    finally:
        source.close()
    fractions = np.divide(positive, total, out=np.zeros_like(positive), where=total > 0).reshape(height, width)
    return np.where(total.reshape(height, width) > 0, fractions, centre.astype(np.float64))


def class_names(heat_path: Path) -> list[str]:
    """Class names from the CSV `convert` writes beside the heat map (empty when it is not there)."""
    csv_path = heatmap_paths(heat_path)[2]
    if not csv_path.is_file():
        return []
    with csv_path.open(newline="") as handle:
        header = next(csv.reader(handle), [])
    return header[7:] if header[:7] == ["row", "col", "y", "x", "size", "tissue_fraction", "predicted"] else []


def pick_class(heat_path: Path, chosen: str, classes: int) -> tuple[int, str]:
    """(channel index, name) of the class to score: an index, a name from the CSV, or the last class."""
    names = class_names(heat_path)
    if not chosen:
        index = classes - 1
    elif chosen.lstrip("-").isdigit():
        index = int(chosen)
    elif chosen in names:
        index = names.index(chosen)
    else:
        known = ", ".join(names) if names else "no class names beside this heat map; give an index"
        raise InvalidOption("--class", chosen, f"give an index 0..{classes - 1} or a name ({known})")
    if not 0 <= index < classes:
        raise InvalidOption("--class", chosen, f"the heat map has {classes} classes: give 0..{classes - 1}")
    return index, names[index] if index < len(names) else str(index)


def read_heatmap(path: Path) -> Array:
    """The heat map as rows x cols x classes float32."""
    if not path.is_file():
        raise LabelImageError(f"{path}: no such file")
    with open_tiff(path) as tif:
        values = np.asarray(tif.asarray())
    if values.ndim == 2:
        values = values[:, :, None]
    if values.ndim != 3 or values.dtype.kind != "f":
        raise LabelImageError(f"{path}: not a heat map (float cells x classes); got {values.dtype} {values.shape}")
    return values


def slide_score(scores: Array, top_k: int) -> float:
    """The maximum cell score, or the mean of the `top_k` highest; NaN when no cell was scored."""
    valid = scores[~np.isnan(scores)]
    if not valid.size:
        return float("nan")
    if not top_k:
        return float(valid.max())
    return float(np.sort(valid)[-top_k:].mean())


def heatmap_scores(heat_path: Path, mask_path: Path, options: HeatmapOptions,
                   rows: int | None = None) -> HeatmapScores:
    """Score one heat map against its slide's mask."""
    heat = read_heatmap(heat_path)
    index, name = pick_class(heat_path, options.class_, heat.shape[2])
    scores = heat[:, :, index].astype(np.float64)
    grid = (scores.shape[0], scores.shape[1])
    mask_shape = open_labels(mask_path)
    shape = mask_shape.shape[:2]
    mask_shape.close()
    scale = cells_per_mask_pixel(heat_path, mask_path, grid, shape, options.mask_downsample)
    fractions = mask_fractions(mask_path, grid, scale, rows)
    truth = fractions > options.min_fraction
    scored = ~np.isnan(scores)
    called = scored & (scores >= options.threshold)  # unscored cells count as negative
    both = int((called & truth).sum())
    denominator = int(called.sum() + truth.sum())
    return HeatmapScores(
        cells=scores.size, scored=int(scored.sum()), positive=int(truth.sum()),
        roc_auc=roc_auc(scores[scored], truth[scored]),
        average_precision=average_precision(scores[scored], truth[scored]),
        dice=2 * both / denominator if denominator else 1.0, slide_score=slide_score(scores, options.top_k),
        slide_positive=bool((fractions > 0).any()), class_name=name)


def slide_auc(slides: list[HeatmapScores]) -> float:
    """ROC AUC of slide scores against slide labels (mask has any positive); NaN without both kinds."""
    scored = [s for s in slides if not np.isnan(s.slide_score)]
    return roc_auc(np.array([s.slide_score for s in scored]), np.array([s.slide_positive for s in scored]))
