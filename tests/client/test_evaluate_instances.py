"""Instance and semantic scores on hand-made label images with known answers, and the same table band by band
as whole-image (read from real tiled TIFFs)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tilecast.client.evaluate import components, labels
from tilecast.client.evaluate.contingency import of_arrays, of_files
from tilecast.client.evaluate.instances import THRESHOLDS, instance_scores
from tilecast.client.evaluate.semantic import semantic_scores


def boxes(shape: tuple[int, int], *rects: tuple[int, int, int, int, int]) -> np.ndarray:
    """A label image with (id, y0, y1, x0, x1) rectangles painted in order."""
    image = np.zeros(shape, np.uint16)
    for ident, y0, y1, x0, x1 in rects:
        image[y0:y1, x0:x1] = ident
    return image


def test_one_exact_one_shifted_one_missed_one_false_positive() -> None:
    truth = boxes((80, 80), (1, 0, 10, 0, 10), (2, 20, 30, 20, 30), (3, 40, 50, 40, 50))
    pred = boxes((80, 80), (9, 0, 10, 0, 10), (4, 20, 30, 22, 32), (7, 60, 65, 60, 65))  # IoU 1, 80/120, -, -
    s = instance_scores(of_arrays(pred, truth))
    expected = [0.5 if t <= 2 / 3 else 0.2 for t in THRESHOLDS]  # 2 TP 1 FP 1 FN, then 1 TP 2 FP 2 FN
    assert [s.ap(i) for i in range(len(THRESHOLDS))] == pytest.approx(expected)
    assert (s.n_true, s.n_pred, s.tp[0]) == (3, 3, 2)
    assert s.mean_matched_iou == pytest.approx((1 + 2 / 3) / 2)
    assert (s.precision, s.recall, s.f1) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert s.foreground_dice == pytest.approx(2 * 180 / (225 + 300))
    assert (s.merged, s.split) == (0, 0)


def test_touching_objects_matched_whatever_their_ids() -> None:
    truth = boxes((20, 30), (1, 0, 10, 0, 10), (2, 0, 10, 10, 20), (3, 10, 20, 5, 15))
    pred = boxes((20, 30), (50, 0, 10, 0, 10), (7, 0, 10, 10, 20), (1, 10, 20, 5, 15))
    s = instance_scores(of_arrays(pred.astype(np.int32), truth))
    assert [s.ap(i) for i in range(9)] == [1.0] * 9 and s.mean_matched_iou == 1.0


def test_one_merge() -> None:
    truth = boxes((10, 20), (1, 0, 10, 0, 12), (2, 0, 10, 12, 20))  # 120 and 80 pixels, touching
    pred = boxes((10, 20), (1, 0, 10, 0, 20))  # IoU 0.6 with the first, 0.4 with the second
    s = instance_scores(of_arrays(pred, truth))
    assert (s.merged, s.split) == (1, 0)
    assert s.ap(0) == pytest.approx(1 / 2) and s.ap(2) == pytest.approx(1 / 2) and s.ap(3) == 0.0


def test_one_split() -> None:
    truth = boxes((10, 20), (1, 0, 10, 0, 20))
    pred = boxes((10, 20), (1, 0, 10, 0, 12), (2, 0, 10, 12, 20))
    s = instance_scores(of_arrays(pred, truth))
    assert (s.merged, s.split) == (0, 1)
    assert s.ap(0) == pytest.approx(1 / 2) and s.precision == pytest.approx(1 / 2) and s.recall == 1.0


def test_empty_prediction_and_empty_truth() -> None:
    truth = boxes((20, 20), (1, 0, 5, 0, 5), (2, 10, 15, 10, 15))
    empty = np.zeros_like(truth)
    missed = instance_scores(of_arrays(empty, truth))
    assert (missed.ap(0), missed.precision, missed.recall, missed.f1, missed.foreground_dice) == (0, 0, 0, 0, 0)
    assert missed.as_dict()["mean_matched_iou"] is None and missed.as_dict()["fn"] == 2
    invented = instance_scores(of_arrays(truth, empty))
    assert (invented.ap(0), invented.precision, invented.recall, invented.as_dict()["fp"]) == (0, 0, 0, 2)
    nothing = instance_scores(of_arrays(empty, empty))
    assert (nothing.ap(0), nothing.f1, nothing.foreground_dice) == (1.0, 1.0, 1.0)


def random_labels(rng: np.random.Generator, shape: tuple[int, int], count: int) -> np.ndarray:
    image = np.zeros(shape, np.uint32)
    for ident in rng.permutation(np.arange(1, count + 1)):
        y, x = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 4)
        h, w = rng.integers(3, 25, size=2)
        image[y:y + h, x:x + w] = ident
    return image


def dense_ap(pred: np.ndarray, truth: np.ndarray, threshold: float) -> float:
    """AP from a dense IoU matrix and an exhaustive check that IoU > 0.5 pairs are one to one."""
    p_ids, t_ids = [i for i in np.unique(pred) if i], [i for i in np.unique(truth) if i]
    iou = np.array([[np.sum((pred == p) & (truth == t)) / np.sum((pred == p) | (truth == t)) for t in t_ids]
                    for p in p_ids]).reshape(len(p_ids), len(t_ids))
    hits = iou >= threshold
    assert (hits.sum(axis=0) <= 1).all() and (hits.sum(axis=1) <= 1).all()
    tp = int(hits.sum())
    return tp / (len(p_ids) + len(t_ids) - tp)


def test_matches_a_dense_iou_matrix_on_random_labels() -> None:
    rng = np.random.default_rng(3)
    truth = random_labels(rng, (96, 96), 30)
    pred = np.roll(random_labels(rng, (96, 96), 5) * 0 + truth, (1, 2), axis=(0, 1))
    pred[rng.random(pred.shape) < 0.05] = 0
    s = instance_scores(of_arrays(pred, truth))
    for i, t in enumerate(THRESHOLDS):
        assert s.ap(i) == pytest.approx(dense_ap(pred, truth, t + 1e-12))


def write_tiled(path: Path, image: np.ndarray) -> Path:
    tifffile.imwrite(path, image, tile=(64, 64), compression="zlib")
    return path


def test_band_by_band_equals_whole_image(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    truth = random_labels(rng, (300, 420), 120)
    pred = np.roll(truth, 3, axis=1)
    pred_path, truth_path = write_tiled(tmp_path / "p.tif", pred), write_tiled(tmp_path / "t.tif", truth)
    whole = of_arrays(pred, truth)
    for rows in (1, 16, 37, 64, None):
        banded = of_files(pred_path, truth_path, rows=rows)
        assert np.array_equal(banded.keys, whole.keys) and np.array_equal(banded.counts, whole.counts), rows
    assert instance_scores(of_files(pred_path, truth_path, rows=16)) == instance_scores(whole)


def test_blocks_of_whole_tiles_equal_whole_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(6)
    truth = random_labels(rng, (300, 420), 120)
    pred = np.roll(truth, 5, axis=0)
    pred_path, truth_path = write_tiled(tmp_path / "p.tif", pred), write_tiled(tmp_path / "t.tif", truth)
    monkeypatch.setattr(labels, "BAND_PIXELS", 64 * 128)  # blocks of 1 x 2 tiles, 5 x 4 of them
    source = labels.open_labels(pred_path)
    assert labels.block_shape(source) == (64, 128)
    source.close()
    banded, whole = of_files(pred_path, truth_path), of_arrays(pred, truth)
    assert np.array_equal(banded.keys, whole.keys) and np.array_equal(banded.counts, whole.counts)
    semantic = write_tiled(tmp_path / "s.tif", (pred > 0).astype(np.uint8))
    assert instance_scores(of_files(semantic, truth_path, components=8)) == instance_scores(
        of_arrays(components.label(pred > 0, 8)[0], truth))


@pytest.mark.parametrize("use_scipy", [False, True])
@pytest.mark.parametrize("connectivity", [4, 8])
def test_connected_components_band_by_band_equal_whole_image(tmp_path: Path, connectivity: int,
                                                              use_scipy: bool) -> None:
    if use_scipy and not components.scipy_available():
        pytest.skip("scipy is not installed")
    rng = np.random.default_rng(7)
    mask = rng.random((150, 170)) < 0.42  # many components that wind across band borders
    whole, count = components.label(mask, connectivity, use_scipy=use_scipy)
    labeller = components.BandLabeller(connectivity, use_scipy=use_scipy)
    provisional = np.concatenate([labeller.label(mask[y:y + 16]) for y in range(0, 150, 16)])
    banded = labeller.final_ids()[provisional]
    pairs = np.unique(np.stack([banded[mask], whole[mask]]), axis=1)
    assert pairs.shape[1] == count == banded.max()  # the same partition, ids 1..n


def test_numpy_components_equal_known_answers() -> None:
    mask = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], bool)
    assert components.label_numpy(mask, 8)[1] == 1 and components.label_numpy(mask, 4)[1] == 5
    spiral = np.zeros((9, 9), bool)
    spiral[0, :], spiral[:, 8], spiral[8, :], spiral[2:, 0], spiral[2, :7], spiral[2:7, 6] = (True,) * 6
    labels, count = components.label_numpy(spiral, 4)
    assert count == 1 and set(np.unique(labels)) == {0, 1}


def test_semantic_mask_scored_as_instances_through_files(tmp_path: Path) -> None:
    truth = boxes((40, 40), (1, 0, 10, 0, 10), (2, 20, 30, 20, 30))
    semantic = (truth > 0).astype(np.uint8) * 255
    pred_path, truth_path = write_tiled(tmp_path / "p.tif", semantic), write_tiled(tmp_path / "t.tif", truth)
    s = instance_scores(of_files(pred_path, truth_path, rows=5, components=8))
    assert (s.n_pred, s.ap(8)) == (2, 1.0)


def test_semantic_dice_and_iou_per_class() -> None:
    truth = boxes((10, 10), (1, 0, 10, 0, 5), (2, 0, 10, 5, 10))
    pred = boxes((10, 10), (1, 0, 10, 0, 6), (2, 0, 10, 6, 10))
    s = semantic_scores(of_arrays(pred, truth))
    assert s.classes[1].dice == pytest.approx(2 * 50 / 110) and s.classes[1].iou == pytest.approx(50 / 60)
    assert s.classes[2].iou == pytest.approx(40 / 50) and s.foreground.dice == 1.0 and set(s.classes) == {1, 2}


def peak_bytes(tmp_path: Path, height: int, width: int = 1024) -> int:
    """Peak traced memory of scoring a (height x width) label image against itself, 128 rows a band."""
    rng = np.random.default_rng(11)
    truth = np.zeros((height, width), np.uint32)
    for i, (y, x) in enumerate(rng.integers(0, min(height, width) - 20, size=(height, 2)), start=1):
        truth[y % (height - 20):y % (height - 20) + 12, x:x + 12] = i
    truth[rng.integers(0, height, size=height // 2) % (height - 20) + 5, :] = height + 1  # long thin objects
    path = write_tiled(tmp_path / f"{height}.tif", truth)
    del truth
    tracemalloc.start()
    scores = instance_scores(of_files(path, path, rows=128))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert scores.ap(8) == 1.0
    return peak


def test_memory_does_not_grow_with_the_image(tmp_path: Path) -> None:
    small, large = peak_bytes(tmp_path, 1024), peak_bytes(tmp_path, 4096)
    # 4x the pixels, the same band: the peak is one band's arrays (and a table of objects), not the image's
    assert large < 1.3 * small, (small, large)
    assert large < 4096 * 1024 * 8 / 2, large  # below half of the large image's pair keys
