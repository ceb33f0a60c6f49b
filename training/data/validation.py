"""A few real validation inputs of a checkpoint's own data, for export's parity checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]
SIDE = 512  # parity needs real content, not whole slides


def validation_inputs(kind: str, config: dict[str, Any], count: int = 2) -> list[Array]:
    """Up to `count` validation inputs (HWC, at most SIDE x SIDE) of the data a checkpoint was trained on."""
    data = config.get("data")
    if not data:
        return []
    images: list[Array]
    if kind == "segmenter":
        from tilecast.training.data.masks import load_masked, validation_pairs

        masked = load_masked(data, "val", config.get("mask_mode", "auto"), config.get("seed", 0))
        images = [image for image, _ in validation_pairs(masked, count)]
    elif kind == "classifier":
        from tilecast.training.data.classes import load_classes

        crop = int(config.get("crop", 64))
        patches = load_classes(data, "val", crop)
        step = max(1, len(patches) // 8)
        images = [np.stack([patches.patch(k)[:crop, :crop] for k in range(0, len(patches), step)][:8])]
        return images  # one batch of patches
    elif "lambda_a" in config:  # CycleGAN
        from tilecast.training.data.paired import whole
        from tilecast.training.data.unpaired import load_unpaired

        images = [whole(image) for image in load_unpaired(data, "val").domain_a[:count]]
    else:
        from tilecast.training.data.paired import load_paired, whole

        images = [whole(image) for image in load_paired(data, "val").inputs[:count]]
    return [np.ascontiguousarray(image[:SIDE, :SIDE]) for image in images[:count]]
