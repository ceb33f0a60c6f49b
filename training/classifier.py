"""Patch classifier: cross-entropy on (optionally class-balanced) patches; validation accuracy and ROC AUC
on every validation patch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tilecast.training.base import Distributed, LoopConfig, Progress, TrainingModel, launch
from tilecast.training.data.classes import RandomPatches, load_classes
from tilecast.training.data.images import fit_normalization
from tilecast.training.metrics import classification_metrics
from tilecast.training.models import create_model


@dataclass(frozen=True)
class ClassifierConfig(LoopConfig):
    TASK = "classifier"
    data: str = "skimage:ihc-density"  # or a folder with one subfolder per class (train/, val/ inside)
    out: str = "runs/classifier"
    arch: str = "resnet_classifier"
    crop: int = 64  # patch edge the network is trained on (224, 299, ... for bigger models)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    balanced: bool = True  # draw classes uniformly (rare classes as often as common ones)
    normalization: str = "fixed"


class Classification(TrainingModel):
    kind = "classifier"

    def __init__(self, config: ClassifierConfig, device: torch.device) -> None:
        super().__init__(config, device)
        self.cfg = config
        self.train_data = load_classes(config.data, "train", config.crop)
        self.val_data = load_classes(config.data, "val", config.crop)
        channels, classes = self.train_data.channels, len(self.train_data.class_names)
        self.normalization = fit_normalization(self.train_data.images, config.normalization, channels)
        self.model_kwargs: dict[str, Any] = {"input_nc": channels, "output_nc": classes, "ngf": config.ngf,
                                             "norm": config.norm}
        self.networks["C"] = create_model(config.arch, **self.model_kwargs).to(device)
        self.optimizers["C"] = torch.optim.AdamW(self.networks["C"].parameters(), lr=config.lr,
                                                 weight_decay=config.weight_decay)

    def dataset(self) -> RandomPatches:
        return RandomPatches(self.train_data, self.normalization, self.cfg.crop, self.cfg.balanced, self.cfg.seed)

    def set_input(self, batch: Any) -> None:
        self.patches, self.labels = (t.to(self.device) for t in batch)  # (N, C, crop, crop), (N,)

    def optimize_parameters(self) -> dict[str, float]:
        with self.autocast():
            logits = self.networks["C"](self.patches)  # (N, classes)
            loss = nn.functional.cross_entropy(logits.float(), self.labels)
        self.backward_and_step(loss, "C")
        accuracy = (logits.argmax(1) == self.labels).float().mean()
        return {"loss": loss.item(), "batch_accuracy": accuracy.item()}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        network = self.networks["C"]
        network.eval()
        probabilities = []
        for start in range(0, len(self.val_data), 64):
            batch = []
            for k in range(start, min(start + 64, len(self.val_data))):
                patch = self.val_data.patch(k)
                y, x = (patch.shape[0] - self.cfg.crop) // 2, (patch.shape[1] - self.cfg.crop) // 2
                patch = patch[y:y + self.cfg.crop, x:x + self.cfg.crop]
                low, high = self.normalization.image_range(patch)
                batch.append(torch.from_numpy(self.normalization.apply(patch, low, high)))
            probabilities.append(torch.softmax(network(torch.stack(batch).to(self.device)).float(), 1).cpu().numpy())
        network.train()
        metrics = classification_metrics(np.concatenate(probabilities), np.asarray(self.val_data.labels))
        return {f"val_{k}": v for k, v in metrics.items()}

    def exported(self) -> tuple[str, dict[str, Any], nn.Module]:
        return self.cfg.arch, self.model_kwargs, self.networks["C"]

    def describe(self) -> dict[str, Any]:
        counts = np.bincount(self.train_data.labels, minlength=len(self.train_data.class_names))
        return {"normalization": self.normalization.as_dict(), "class_names": self.train_data.class_names,
                "training_data": f"{self.train_data.description}; patches per class "
                                 + ", ".join(f"{n} {c}" for n, c in zip(self.train_data.class_names, counts,
                                                                         strict=True))}


def train(config: ClassifierConfig, progress: Progress | None = None, resume: bool = False,
          dist: Distributed | None = None) -> Path:
    """Train and write <out>/checkpoint.pt; returns its path."""
    return launch(Classification, config, progress, resume, dist)
