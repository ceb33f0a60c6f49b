"""ROC AUC and average precision of scores against binary labels, in NumPy (no scikit-learn)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]


def _checked(scores: Array, labels: Array) -> tuple[Array, Array]:
    scores, labels = np.asarray(scores, np.float64).ravel(), np.asarray(labels, bool).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    return scores, labels


def roc_auc(scores: Array, labels: Array) -> float:
    """Area under the ROC curve, rank-based (Mann-Whitney U): the chance a positive outscores a negative,
    ties counted half (tied scores share their average rank). NaN when one class is missing."""
    scores, labels = _checked(scores, labels)
    positives = int(labels.sum())
    negatives = labels.size - positives
    if not positives or not negatives:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    _, start, count = np.unique(scores[order], return_index=True, return_counts=True)
    average = start + (count + 1) / 2.0  # 1-based mean rank of each run of ties
    ranks = np.empty(scores.size)
    ranks[order] = np.repeat(average, count)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def average_precision(scores: Array, labels: Array) -> float:
    """Step-wise average precision, as scikit-learn's average_precision_score: the sum over distinct score
    thresholds (high to low) of precision there times the gain in recall. NaN with no positive."""
    scores, labels = _checked(scores, labels)
    positives = int(labels.sum())
    if not positives:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]  # last index of each distinct score
    tps = np.cumsum(labels)[last]
    precision = tps / (last + 1)
    recall = tps / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
