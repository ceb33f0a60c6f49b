"""Patch classifier: a small residual CNN (ResNet-style basic blocks) with global average pooling, so
any patch size (64, 224, 299, ...) works. Trained from scratch: no pretrained weights are downloaded."""

from __future__ import annotations

import torch
from torch import nn

from tilecast.training.models.generators import norm_layer
from tilecast.training.models.registry import register_model


class BasicBlock(nn.Module):
    def __init__(self, in_c: int, out_c: int, stride: int, norm: str) -> None:
        super().__init__()
        make_norm, bias = norm_layer(norm), norm == "none"
        self.body = nn.Sequential(
            nn.Conv2d(in_c, out_c, 3, stride=stride, padding=1, bias=bias), make_norm(out_c), nn.ReLU(True),
            nn.Conv2d(out_c, out_c, 3, padding=1, bias=bias), make_norm(out_c),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_c != out_c:
            self.shortcut = nn.Sequential(nn.Conv2d(in_c, out_c, 1, stride=stride, bias=bias), make_norm(out_c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.body(x) + self.shortcut(x)
        return nn.functional.relu(y)


class PatchClassifier(nn.Module):
    """Stem, one block per stage (each stage halves the size and doubles the width), pooled, linear."""

    task = "classifier"
    size_multiple = 1

    def __init__(self, input_nc: int = 3, output_nc: int = 2, ngf: int = 16, stages: int = 4, norm: str = "batch",
                 use_dropout: bool = False) -> None:
        super().__init__()
        if output_nc < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {output_nc}")
        make_norm = norm_layer(norm)
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ngf, 3, stride=2, padding=1, bias=norm == "none"),
                                   make_norm(ngf), nn.ReLU(True)]
        width = ngf
        for stage in range(stages):
            out = ngf * 2**stage
            layers.append(BasicBlock(width, out, 1 if stage == 0 else 2, norm))
            width = out
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.3) if use_dropout else nn.Identity()
        self.fc = nn.Linear(width, output_nc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, classes) logits
        pooled = self.features(x).mean(dim=(2, 3))
        logits: torch.Tensor = self.fc(self.dropout(pooled))
        return logits


@register_model
def resnet_classifier(**kwargs: object) -> nn.Module:
    return PatchClassifier(**kwargs)  # type: ignore[arg-type]
