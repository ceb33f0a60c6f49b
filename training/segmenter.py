"""U-Net segmenter: per-pixel classes from cross-entropy plus soft Dice (Dice keeps small foreground
classes from being ignored). Validation: Dice and IoU of the foreground classes on whole images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tilecast.training.base import Distributed, LoopConfig, Progress, TrainingModel, launch
from tilecast.training.data.images import Normalization, fit_normalization
from tilecast.training.data.masks import RandomMaskedCrops, load_masked, validation_pairs
from tilecast.training.losses import soft_dice_loss
from tilecast.training.metrics import dice_iou
from tilecast.training.models import create_model


@dataclass(frozen=True)
class SegmenterConfig(LoopConfig):
    TASK = "segmenter"
    data: str = "synthetic:nuclei"  # or a folder with images/ and masks/ (train/, val/ inside)
    out: str = "runs/segmenter"
    arch: str = "unet_segmenter"
    crop: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    mask_mode: str = "auto"  # auto, binary (any non-zero = foreground), labels (values are class ids)
    normalization: str = "percentile"  # percentile (per image, like StarDist) or fixed (training-set mean/std)
    dice_weight: float = 1.0


class Segmentation(TrainingModel):
    kind = "segmenter"

    def __init__(self, config: SegmenterConfig, device: torch.device) -> None:
        super().__init__(config, device)
        self.cfg = config
        self.train_data = load_masked(config.data, "train", config.mask_mode, config.seed)
        self.val_data = load_masked(config.data, "val", config.mask_mode, config.seed)
        channels, self.classes = self.train_data.channels, self.train_data.classes
        self.normalization: Normalization = fit_normalization(self.train_data.images, config.normalization, channels)
        self.model_kwargs: dict[str, Any] = {"input_nc": channels, "output_nc": self.classes, "ngf": config.ngf,
                                             "norm": config.norm}
        self.networks["S"] = create_model(config.arch, **self.model_kwargs).to(device)
        self.optimizers["S"] = torch.optim.AdamW(self.networks["S"].parameters(), lr=config.lr,
                                                 weight_decay=config.weight_decay)

    def dataset(self) -> RandomMaskedCrops:
        return RandomMaskedCrops(self.train_data, self.normalization, self.cfg.crop, self.cfg.seed)

    def set_input(self, batch: Any) -> None:
        self.image, self.labels = (t.to(self.device) for t in batch)  # (N, C, crop, crop), (N, crop, crop)

    def optimize_parameters(self) -> dict[str, float]:
        with self.autocast():
            logits = self.networks["S"](self.image)  # (N, classes, crop, crop)
            ce = nn.functional.cross_entropy(logits.float(), self.labels)
            dice = soft_dice_loss(logits, self.labels, self.classes)
            loss = ce + self.cfg.dice_weight * dice
        self.backward_and_step(loss, "S")
        return {"loss": loss.item(), "ce": ce.item(), "dice": dice.item()}

    @torch.no_grad()
    def predict(self, image: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Labels of one whole raw HWC image (cropped to the size multiple)."""
        network = self.networks["S"]
        multiple = int(getattr(network, "size_multiple", 1))
        h, w = image.shape[0] // multiple * multiple, image.shape[1] // multiple * multiple
        low, high = self.normalization.image_range(image)
        x = torch.from_numpy(self.normalization.apply(image[:h, :w], low, high))[None].to(self.device)
        result: np.ndarray[Any, Any] = network(x).argmax(1)[0].cpu().numpy()
        return result

    def validate(self) -> dict[str, float]:
        self.networks["S"].eval()
        scores = []
        for image, labels in validation_pairs(self.val_data):
            predicted = self.predict(image)
            scores.append(dice_iou(predicted, labels[:predicted.shape[0], :predicted.shape[1]], self.classes))
        self.networks["S"].train()
        return {f"val_{k}": float(np.mean([s[k] for s in scores])) for k in ("dice", "iou")}

    def exported(self) -> tuple[str, dict[str, Any], nn.Module]:
        return self.cfg.arch, self.model_kwargs, self.networks["S"]

    def describe(self) -> dict[str, Any]:
        names = self.train_data.class_names or [f"class {k}" for k in range(self.classes)]
        return {"normalization": self.normalization.as_dict(), "training_data": self.train_data.description,
                "class_names": names}


def train(config: SegmenterConfig, progress: Progress | None = None, resume: bool = False,
          dist: Distributed | None = None) -> Path:
    """Train and write <out>/checkpoint.pt; returns its path."""
    return launch(Segmentation, config, progress, resume, dist)
