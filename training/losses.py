"""Losses shared by the loops."""

from __future__ import annotations

import torch
from torch import nn


class GanLoss(nn.Module):
    """Adversarial loss against a constant real/fake target: least squares (LSGAN) or vanilla (BCE)."""

    def __init__(self, mode: str = "lsgan") -> None:
        super().__init__()
        if mode not in ("lsgan", "vanilla"):
            raise ValueError(f"gan mode {mode!r} is not one of lsgan, vanilla")
        self.loss: nn.Module = nn.MSELoss() if mode == "lsgan" else nn.BCEWithLogitsLoss()

    def forward(self, prediction: torch.Tensor, real: bool) -> torch.Tensor:
        target = torch.ones_like(prediction) if real else torch.zeros_like(prediction)
        loss: torch.Tensor = self.loss(prediction.float(), target.float())
        return loss


def soft_dice_loss(logits: torch.Tensor, labels: torch.Tensor, classes: int, eps: float = 1.0) -> torch.Tensor:
    """1 - mean soft Dice over the foreground classes; logits (N, K, H, W), labels (N, H, W) int64."""
    probs = torch.softmax(logits.float(), dim=1)
    one_hot = nn.functional.one_hot(labels, classes).permute(0, 3, 1, 2).float()
    dims = (0, 2, 3)
    overlap = (probs * one_hot).sum(dims)
    total = probs.sum(dims) + one_hot.sum(dims)
    dice = (2 * overlap + eps) / (total + eps)
    return 1 - dice[1:].mean()
