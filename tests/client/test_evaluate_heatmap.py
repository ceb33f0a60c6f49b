"""Heat-map scores on a synthetic heat map and annotation mask written as real TIFFs, and ROC AUC / AP against
hand-computed cases and brute-force definitions (scikit-learn too, where it is installed)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from tilecast.client.evaluate.heatmap import HeatmapOptions, heatmap_scores, mask_fractions, slide_auc
from tilecast.client.evaluate.ranking import average_precision, roc_auc
from tilecast.proto.errors import InvalidOption

STRIDE = 64  # level-0 pixels per cell
ROWS, COLS = 20, 30


def test_hand_computed_cases() -> None:
    scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
    assert roc_auc(scores, labels) == 0.75 and average_precision(scores, labels) == pytest.approx(0.8333333333)
    assert roc_auc(np.array([0.5, 0.5, 0.5]), np.array([0, 1, 1])) == 0.5  # ties count half
    assert average_precision(np.array([0.5, 0.5, 0.2]), np.array([0, 1, 1])) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    assert np.isnan(roc_auc(np.array([0.3, 0.2]), np.array([1, 1])))
    assert np.isnan(average_precision(np.array([0.3, 0.2]), np.array([0, 0])))


def brute_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels], scores[~labels]
    return float(np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)]))


def brute_ap(scores: np.ndarray, labels: np.ndarray) -> float:
    total, previous = 0.0, 0.0
    for t in sorted(set(scores.tolist()), reverse=True):
        called = scores >= t
        recall = (called & labels).sum() / labels.sum()
        total += (recall - previous) * (called & labels).sum() / called.sum()
        previous = recall
    return float(total)


def test_against_brute_force_definitions_with_ties() -> None:
    rng = np.random.default_rng(2)
    for _ in range(20):
        scores = np.round(rng.random(40), 1)  # many ties
        labels = rng.random(40) < 0.3
        labels[0], labels[1] = True, False
        assert roc_auc(scores, labels) == pytest.approx(brute_auc(scores, labels))
        assert average_precision(scores, labels) == pytest.approx(brute_ap(scores, labels))


def test_against_scikit_learn_where_installed() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(4)
    scores, labels = np.round(rng.random(200), 2), rng.random(200) < 0.2
    assert roc_auc(scores, labels) == pytest.approx(metrics.roc_auc_score(labels, scores))
    assert average_precision(scores, labels) == pytest.approx(metrics.average_precision_score(labels, scores))


def write_heatmap(path: Path, positive: np.ndarray, pixel_um: float | None = None) -> Path:
    """A two-class heat map as convert writes it: float32, NaN = skipped, resolution 1 / stride (or in cm)."""
    heat = np.stack([1 - positive, positive], axis=-1).astype(np.float32)
    resolution: dict[str, Any] = {"resolution": (1 / STRIDE, 1 / STRIDE), "resolutionunit": "NONE"}
    if pixel_um is not None:
        resolution = {"resolution": (1e4 / (pixel_um * STRIDE),) * 2, "resolutionunit": "CENTIMETER"}
    tifffile.imwrite(path, heat, photometric="minisblack", planarconfig="contig", **resolution)
    path.with_name(f"{path.stem}.csv").write_text("row,col,y,x,size,tissue_fraction,predicted,normal,tumour\n")
    return path


def write_mask(path: Path, downsample: int, region: tuple[int, int, int, int], pixel_um: float | None = None) -> Path:
    """A binary mask of the (ROWS * STRIDE) x (COLS * STRIDE) slide at 1/downsample, tumour in `region` (level-0
    pixels y0, y1, x0, x1), written tiled so it is read band by band."""
    mask = np.zeros((ROWS * STRIDE // downsample, COLS * STRIDE // downsample), np.uint8)
    y0, y1, x0, x1 = (v // downsample for v in region)
    mask[y0:y1, x0:x1] = 255
    extra: dict[str, Any] = {} if pixel_um is None else {"resolution": (1e4 / (pixel_um * downsample),) * 2,
                                          "resolutionunit": "CENTIMETER"}
    tifffile.imwrite(path, mask, tile=(16, 16), **extra)
    return path


def tumour_heat() -> np.ndarray:
    positive = np.full((ROWS, COLS), 0.1)
    positive[5:10, 10:20] = 0.9
    positive[0, :] = np.nan  # background cells, not classified
    return positive


REGION = (5 * STRIDE, 10 * STRIDE, 10 * STRIDE, 20 * STRIDE)


@pytest.mark.parametrize("pixel_um", [None, 0.5])
def test_perfect_heat_map_scores_one(tmp_path: Path, pixel_um: float | None) -> None:
    heat = write_heatmap(tmp_path / "slide.tif", tumour_heat(), pixel_um)
    mask = write_mask(tmp_path / "mask.tif", 8, REGION, pixel_um)
    options = HeatmapOptions(mask_downsample=8 if pixel_um is None else 0)
    s = heatmap_scores(heat, mask, options, rows=7)
    assert (s.roc_auc, s.average_precision, s.dice) == (1.0, 1.0, 1.0) and s.slide_score == pytest.approx(0.9)
    assert (s.cells, s.scored, s.positive, s.slide_positive, s.class_name) == (600, 570, 50, True, "tumour")


def test_partial_cells_any_pixel_or_a_fraction(tmp_path: Path) -> None:
    # the tumour reaches a quarter of the way into column 20's cells
    heat = write_heatmap(tmp_path / "slide.tif", tumour_heat())
    mask = write_mask(tmp_path / "mask.tif", 4, (REGION[0], REGION[1], REGION[2], REGION[3] + STRIDE // 4))
    fractions = mask_fractions(mask, (ROWS, COLS), (4 / STRIDE, 4 / STRIDE), rows=9)
    assert fractions[5, 20] == pytest.approx(0.25) and fractions[5, 19] == 1.0 and fractions[4, 19] == 0.0
    any_pixel = heatmap_scores(heat, mask, HeatmapOptions(mask_downsample=4))
    assert any_pixel.positive == 55 and any_pixel.roc_auc == pytest.approx(52.5 / 55)  # 5 tie with all 515 negatives
    strict = heatmap_scores(heat, mask, HeatmapOptions(mask_downsample=4, min_fraction=0.3))
    assert strict.positive == 50 and strict.roc_auc == 1.0


def test_a_coarse_mask_whose_pixels_span_several_cells(tmp_path: Path) -> None:
    mask = write_mask(tmp_path / "mask.tif", 128, REGION)  # one mask pixel = 2 x 2 cells
    fractions = mask_fractions(mask, (ROWS, COLS), (128 / STRIDE, 128 / STRIDE))
    expected = np.zeros((ROWS, COLS))
    expected[4:10, 10:20] = 1.0  # rows 5..9 at level 0 -> mask rows 2..4 (cells 4..9)
    assert np.array_equal(fractions, expected)


def test_class_by_name_top_k_threshold_and_folders(tmp_path: Path) -> None:
    heat = write_heatmap(tmp_path / "slide.tif", tumour_heat())
    mask = write_mask(tmp_path / "mask.tif", 8, REGION)
    normal = heatmap_scores(heat, mask, HeatmapOptions(class_="normal", mask_downsample=8, top_k=3))
    assert normal.class_name == "normal" and normal.roc_auc == 0.0 and normal.slide_score == pytest.approx(0.9)
    high = heatmap_scores(heat, mask, HeatmapOptions(mask_downsample=8, threshold=0.95))
    assert high.dice == 0.0
    with pytest.raises(InvalidOption, match="--class"):
        heatmap_scores(heat, mask, HeatmapOptions(class_="stroma", mask_downsample=8))
    clean = write_mask(tmp_path / "clean.tif", 8, (0, 0, 0, 0))
    negative = heatmap_scores(write_heatmap(tmp_path / "clean-heat.tif", np.full((ROWS, COLS), 0.2)), clean,
                              HeatmapOptions(mask_downsample=8))
    assert not negative.slide_positive and np.isnan(negative.roc_auc)
    assert slide_auc([normal, high, negative]) == 1.0 and np.isnan(slide_auc([negative]))
