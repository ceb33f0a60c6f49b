"""Validation metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tilecast.training.metrics import classification_metrics, dice_iou, psnr, roc_auc, ssim


def test_psnr_of_a_known_error() -> None:
    target = np.zeros((8, 8))
    assert psnr(target + 2.55, target, 255.0) == pytest.approx(40.0)  # mse 6.5025 = (255/100)^2
    assert psnr(target, target, 255.0) == math.inf


def test_ssim_is_one_for_identical_images_and_drops_with_noise() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((64, 64, 3)) * 255
    assert ssim(image, image, 255.0) == pytest.approx(1.0)
    noisy = ssim(image + rng.normal(0, 40, image.shape), image, 255.0)
    assert 0 < noisy < 0.9
    assert ssim(image[..., 0], image[..., 0], 255.0) == pytest.approx(1.0)


def test_dice_and_iou_by_hand() -> None:
    target = np.array([[1, 1, 0, 0]])
    predicted = np.array([[1, 0, 0, 1]])  # overlap 1, |p| 2, |t| 2
    scores = dice_iou(predicted, target, 2)
    assert scores["dice"] == pytest.approx(0.5) and scores["iou"] == pytest.approx(1 / 3)
    assert dice_iou(target, target, 3) == {"dice": 1.0, "iou": 1.0}  # class 2 absent from both: skipped


def test_roc_auc_ranks_and_ties() -> None:
    labels = np.array([0, 0, 1, 1])
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), labels == 1) == 1.0
    assert roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), labels == 1) == 0.0
    assert roc_auc(np.array([0.5, 0.5, 0.5, 0.5]), labels == 1) == 0.5
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), labels == 1) == pytest.approx(0.75)  # 3 of 4 pairs ordered
    assert math.isnan(roc_auc(np.array([0.1, 0.2]), np.array([False, False])))


def test_classification_metrics() -> None:
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.6, 0.4]])
    metrics = classification_metrics(probabilities, np.array([0, 1, 1, 1]))
    assert metrics["accuracy"] == 0.75 and metrics["roc_auc"] == 1.0
