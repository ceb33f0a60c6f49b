"""Instance scores as StarDist and the 2018 Data Science Bowl define them, from a contingency table.

At an IoU threshold t, predicted and true objects are matched one to one among pairs with IoU >= t (for
t >= 0.5 such a matching is unique: an object can share more than half its union with one other object
only; the one tie possible, exactly 0.5 with two objects, goes to the pair met first in IoU order).
AP(t) = TP / (TP + FP + FN). Over several images the counts are pooled before dividing.

Merged: a predicted object that covers more than half the area of two or more true objects.
Split, the converse: a true object that holds more than half the area of two or more predicted
objects. (More than half of an object lies in at most one
other object, so each object is counted once.)
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from tilecast.client.evaluate.contingency import Contingency

Array = npt.NDArray[Any]
THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(9))  # 0.5, 0.55, ..., 0.9


@dataclass(frozen=True)
class Overlaps:
    """Objects and their overlapping pairs, as arrays (no Python object per nucleus): ids and areas of each
    side, and per pair (both ids nonzero) the ids, both areas, the intersection and the IoU."""

    pred_ids: Array
    true_ids: Array
    pairs: Array  # (k, 2) pred id, true id
    pred_area: Array  # (k,) area of the pair's predicted object
    true_area: Array
    intersection: Array
    iou: Array

    @classmethod
    def of(cls, table: Contingency) -> Overlaps:
        pred, truth, counts = table.pred.astype(np.int64), table.truth.astype(np.int64), table.counts
        pred_ids, pred_inv = np.unique(pred, return_inverse=True)
        true_ids, true_inv = np.unique(truth, return_inverse=True)
        pred_sums = np.bincount(pred_inv, weights=counts).astype(np.int64)
        true_sums = np.bincount(true_inv, weights=counts).astype(np.int64)
        both = (pred > 0) & (truth > 0)
        inter = counts[both]
        pa, ta = pred_sums[pred_inv[both]], true_sums[true_inv[both]]
        return cls(pred_ids[pred_ids > 0], true_ids[true_ids > 0], np.stack([pred[both], truth[both]], axis=1),
                   pa, ta, inter, inter / (pa + ta - inter))


def match(overlaps: Overlaps, threshold: float) -> Array:
    """Indices of the matched pairs at `threshold`: one to one, IoU >= threshold, highest IoU first."""
    candidates = np.flatnonzero(overlaps.iou >= threshold)
    pairs = overlaps.pairs[candidates]
    if np.unique(pairs[:, 0]).size == candidates.size and np.unique(pairs[:, 1]).size == candidates.size:
        return candidates  # one to one already: always so above 0.5
    candidates = candidates[np.argsort(-overlaps.iou[candidates], kind="stable")]
    used_pred: set[int] = set()
    used_true: set[int] = set()
    chosen = []
    for index in candidates.tolist():  # ties at exactly 0.5: the first pair met keeps both objects
        p, t = (int(v) for v in overlaps.pairs[index])
        if p not in used_pred and t not in used_true:
            used_pred.add(p)
            used_true.add(t)
            chosen.append(index)
    return np.asarray(chosen, np.int64)


def merges_and_splits(overlaps: Overlaps) -> tuple[int, int]:
    """(merged predicted objects, split true objects) as defined in the module docstring."""
    pred, truth = overlaps.pairs[:, 0], overlaps.pairs[:, 1]
    covering = pred[2 * overlaps.intersection > overlaps.true_area]  # pred holds > half of this true object
    inside = truth[2 * overlaps.intersection > overlaps.pred_area]  # true object holds > half of this prediction
    merged = int((np.unique(covering, return_counts=True)[1] >= 2).sum())
    split = int((np.unique(inside, return_counts=True)[1] >= 2).sum())
    return merged, split


@dataclass(frozen=True)
class InstanceScores:
    """Counts behind every instance score; scores are derived, so scores of several images pool exactly."""

    n_true: int
    n_pred: int
    tp: tuple[int, ...]  # per threshold of THRESHOLDS
    matched_iou_sum: float  # sum of the IoUs of the pairs matched at 0.5
    merged: int
    split: int
    fg_intersection: int  # pixels foreground in both
    fg_pred: int
    fg_true: int
    thresholds: tuple[float, ...] = field(default=THRESHOLDS)

    def ap(self, index: int) -> float:
        tp = self.tp[index]
        fp, fn = self.n_pred - tp, self.n_true - tp
        return _ratio(tp, tp + fp + fn, empty=1.0)

    @property
    def precision(self) -> float:
        return _ratio(self.tp[0], self.n_pred, empty=1.0 if not self.n_true else 0.0)

    @property
    def recall(self) -> float:
        return _ratio(self.tp[0], self.n_true, empty=1.0 if not self.n_pred else 0.0)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp[0], self.n_pred + self.n_true, empty=1.0)

    @property
    def mean_matched_iou(self) -> float:
        return _ratio(self.matched_iou_sum, self.tp[0], empty=float("nan"))

    @property
    def foreground_dice(self) -> float:
        return _ratio(2 * self.fg_intersection, self.fg_pred + self.fg_true, empty=1.0)

    def __add__(self, other: InstanceScores) -> InstanceScores:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for f in fields(self):
            if f.name == "tp":
                values["tp"] = tuple(a + b for a, b in zip(self.tp, other.tp, strict=True))
            elif f.name != "thresholds":
                values[f.name] = getattr(self, f.name) + getattr(other, f.name)
        return InstanceScores(**values)

    def as_dict(self) -> dict[str, Any]:
        """Every score and count, for --json."""
        tp0 = self.tp[0]
        return {"n_true": self.n_true, "n_pred": self.n_pred,
                "ap": {f"{t:.2f}": self.ap(i) for i, t in enumerate(self.thresholds)},
                "tp": tp0, "fp": self.n_pred - tp0, "fn": self.n_true - tp0,
                "precision": self.precision, "recall": self.recall, "f1": self.f1,
                "mean_matched_iou": _json_number(self.mean_matched_iou), "merged": self.merged,
                "split": self.split, "foreground_dice": self.foreground_dice}


def _ratio(num: float, den: float, empty: float) -> float:
    """num / den, or `empty` when there is nothing to count (no objects on either side scores 1)."""
    return float(num) / float(den) if den else empty


def _json_number(value: float) -> float | None:
    return None if np.isnan(value) else value


def instance_scores(table: Contingency) -> InstanceScores:
    """All instance scores of one image from its contingency table."""
    overlaps = Overlaps.of(table)
    tp = []
    iou_sum = 0.0
    for i, threshold in enumerate(THRESHOLDS):
        chosen = match(overlaps, threshold)
        tp.append(int(chosen.size))
        if i == 0:
            iou_sum = float(overlaps.iou[chosen].sum()) if chosen.size else 0.0
    merged, split = merges_and_splits(overlaps)
    pred, truth, counts = table.pred, table.truth, table.counts
    return InstanceScores(
        n_true=int(overlaps.true_ids.size), n_pred=int(overlaps.pred_ids.size), tp=tuple(tp), matched_iou_sum=iou_sum,
        merged=merged, split=split, fg_intersection=int(counts[(pred > 0) & (truth > 0)].sum()),
        fg_pred=int(counts[pred > 0].sum()), fg_true=int(counts[truth > 0].sum()))
