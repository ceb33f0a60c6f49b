"""Semantic (class mask) scores from a contingency table of (predicted class, true class) pixel pairs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tilecast.client.evaluate.contingency import Contingency


@dataclass(frozen=True)
class ClassCounts:
    """Pixels of one class: in both, in the prediction, in the truth."""

    intersection: int
    pred: int
    true: int

    @property
    def dice(self) -> float:
        total = self.pred + self.true
        return 2 * self.intersection / total if total else 1.0

    @property
    def iou(self) -> float:
        union = self.pred + self.true - self.intersection
        return self.intersection / union if union else 1.0

    def __add__(self, other: ClassCounts) -> ClassCounts:
        return ClassCounts(self.intersection + other.intersection, self.pred + other.pred, self.true + other.true)


@dataclass(frozen=True)
class SemanticScores:
    """Per class counts (class 0 = background) and foreground (nonzero vs nonzero) counts."""

    classes: dict[int, ClassCounts]
    foreground: ClassCounts

    def __add__(self, other: SemanticScores) -> SemanticScores:
        empty = ClassCounts(0, 0, 0)
        ids = sorted(set(self.classes) | set(other.classes))
        return SemanticScores({c: self.classes.get(c, empty) + other.classes.get(c, empty) for c in ids},
                              self.foreground + other.foreground)

    def as_dict(self) -> dict[str, Any]:
        """Dice and IoU per class and of the foreground, with the pixel counts, for --json."""
        def one(c: ClassCounts) -> dict[str, Any]:
            return {"dice": c.dice, "iou": c.iou, "pred_pixels": c.pred, "true_pixels": c.true}

        return {"classes": {str(k): one(v) for k, v in self.classes.items()},
                "foreground_dice": self.foreground.dice, "foreground_iou": self.foreground.iou}


def semantic_scores(table: Contingency) -> SemanticScores:
    """Dice and IoU per class present in either mask, and of the foreground."""
    pred, truth, counts = table.pred.astype(np.int64), table.truth.astype(np.int64), table.counts
    classes = {}
    for c in np.union1d(pred, truth).tolist():
        classes[int(c)] = ClassCounts(int(counts[(pred == c) & (truth == c)].sum()), int(counts[pred == c].sum()),
                                      int(counts[truth == c].sum()))
    fg = ClassCounts(int(counts[(pred > 0) & (truth > 0)].sum()), int(counts[pred > 0].sum()),
                     int(counts[truth > 0].sum()))
    return SemanticScores(classes, fg)
