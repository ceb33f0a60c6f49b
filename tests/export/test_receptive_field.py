"""The measured halo equals the known receptive field, and global operations are recognised."""

from __future__ import annotations

import pytest

from tilecast.export.receptive_field import has_global_ops, measure_receptive_radius
from tilecast.training.models import create_model


@pytest.mark.parametrize(("arch", "radius"), [("resnet_6blocks", 60), ("resnet_9blocks", 84)])
def test_resnet_receptive_radius(arch: str, radius: int) -> None:
    # 7x7 stem (3) + two stride-2 convs (1 + 2) + 2 convs per block at stride 4 (8 each)
    # + two transposed convs (2 + 1) + 7x7 head (3).
    model = create_model(arch, input_nc=1, output_nc=1, ngf=4, norm="none")
    assert measure_receptive_radius(model, in_channels=1, size_multiple=4, trials=1) == radius


def test_global_ops() -> None:
    assert has_global_ops(create_model("resnet_6blocks", ngf=4, norm="instance"))
    assert not has_global_ops(create_model("resnet_6blocks", ngf=4, norm="batch"))
