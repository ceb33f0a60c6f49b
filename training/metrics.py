"""Validation metrics on NumPy arrays: L1/PSNR/SSIM for images, Dice/IoU for labels, accuracy and ROC AUC
for scores. Pure functions, no torch, so they are easy to check against known values."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

Array = npt.NDArray[Any]


def psnr(prediction: Array, target: Array, data_range: float) -> float:
    mse = float(np.mean((prediction.astype(np.float64) - target.astype(np.float64)) ** 2))
    return 10 * math.log10(data_range**2 / mse) if mse > 0 else float("inf")


def ssim(prediction: Array, target: Array, data_range: float) -> float:
    """Mean structural similarity over HW(C) images with Wang et al.'s 11x11 gaussian window (sigma 1.5)
    and constants K1 = 0.01, K2 = 0.03, averaged over channels."""
    x, y = prediction.astype(np.float64), target.astype(np.float64)
    if x.ndim == 2:
        x, y = x[:, :, None], y[:, :, None]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for c in range(x.shape[2]):
        a, b = x[:, :, c], y[:, :, c]

        def blur(z: Array) -> Array:
            return np.asarray(ndimage.gaussian_filter(z, 1.5, truncate=3.5))

        mu_a, mu_b = blur(a), blur(b)
        var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
        cov = blur(a * b) - mu_a * mu_b
        index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        values.append(float(index[5:-5, 5:-5].mean()) if min(a.shape) > 10 else float(index.mean()))
    return float(np.mean(values))


def dice_iou(prediction: Array, target: Array, classes: int) -> dict[str, float]:
    """Per-class Dice and IoU over all pixels, averaged over the foreground classes (1..classes-1)
    that occur in the target or the prediction."""
    dice, iou = [], []
    for k in range(1, classes):
        p, t = prediction == k, target == k
        overlap, total = int(np.logical_and(p, t).sum()), int(p.sum() + t.sum())
        if total == 0:
            continue
        dice.append(2 * overlap / total)
        iou.append(overlap / (total - overlap))
    return {"dice": float(np.mean(dice)) if dice else 1.0, "iou": float(np.mean(iou)) if iou else 1.0}


def roc_auc(scores: Array, positives: Array) -> float:
    """Area under the ROC curve as the Mann-Whitney probability that a positive outranks a negative
    (ties count one half); NaN when one of the classes is absent."""
    scores, positives = np.asarray(scores, np.float64), np.asarray(positives, bool)
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(values: Array) -> Array:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    _, inverse = np.unique(values, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks)
    counts = np.bincount(inverse)
    return (sums / counts)[inverse]


def classification_metrics(probabilities: Array, labels: Array) -> dict[str, float]:
    """Accuracy, and ROC AUC of class 1 vs the rest (the positive class of a two-class problem; for more
    classes the mean one-vs-rest AUC)."""
    classes = probabilities.shape[1]
    accuracy = float((probabilities.argmax(axis=1) == labels).mean())
    targets = range(1, 2) if classes == 2 else range(classes)
    aucs = [roc_auc(probabilities[:, k], labels == k) for k in targets]
    aucs = [a for a in aucs if not math.isnan(a)]
    return {"accuracy": accuracy, "roc_auc": float(np.mean(aucs)) if aucs else float("nan")}
