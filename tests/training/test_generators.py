"""Every registered architecture: forward and backward at sizes it supports, and the reference key layout."""

from __future__ import annotations

import pytest
import torch

from tilecast.training.models import create_model, list_models


@pytest.mark.parametrize("arch", list_models())
@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_forward_backward_at_odd_sizes(arch: str, norm: str) -> None:
    model = create_model(arch, input_nc=7, output_nc=3, ngf=4, norm=norm)
    m = int(getattr(model, "size_multiple", 1))
    height, width = (9 * m, 13 * m) if m > 1 else (37, 51)  # odd multiples of the size multiple, or odd sizes
    x = torch.randn(2, 7, height, width, requires_grad=True)
    y = model(x)
    task = model.task
    if task == "classifier":
        assert y.shape == (2, 3)
    else:
        assert y.shape == (2, 3, height, width)
    if task == "generator":
        assert y.abs().max() <= 1  # tanh
    y.mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("patch", [224, 299])
def test_classifier_takes_the_usual_patch_sizes(patch: int) -> None:
    model = create_model("resnet_classifier", input_nc=3, output_nc=2, ngf=4)
    assert model(torch.zeros(1, 3, patch, patch)).shape == (1, 2)


def test_state_dict_keys_follow_the_reference_layout() -> None:
    """Keys and shapes of pytorch-CycleGAN-and-pix2pix's resnet_9blocks (ngf=64, instance norm)."""
    state = create_model("resnet_9blocks", input_nc=3, output_nc=3, ngf=64, norm="instance").state_dict()
    expected = {
        "model.1.weight": (64, 3, 7, 7), "model.1.bias": (64,),
        "model.4.weight": (128, 64, 3, 3), "model.7.weight": (256, 128, 3, 3),
        "model.10.conv_block.1.weight": (256, 256, 3, 3), "model.10.conv_block.5.weight": (256, 256, 3, 3),
        "model.18.conv_block.5.bias": (256,),
        "model.19.weight": (256, 128, 3, 3), "model.22.weight": (128, 64, 3, 3),
        "model.26.weight": (3, 64, 7, 7), "model.26.bias": (3,),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert len(state) == 2 + 2 + 2 + 9 * 4 + 2 + 2 + 2


def test_unet_keys_follow_the_reference_layout() -> None:
    """pytorch-CycleGAN-and-pix2pix's unet_256: nested `model.model.<i>` blocks, 54.4 M parameters at ngf=64."""
    model = create_model("unet_256", input_nc=3, output_nc=3, ngf=64, norm="batch")
    state = model.state_dict()
    expected = {
        "model.model.0.weight": (64, 3, 4, 4),  # outermost down
        "model.model.1.model.1.weight": (128, 64, 4, 4),
        "model.model.1.model.2.running_mean": (128,),
        "model.model.1.model.3.model.3.model.3.model.3.model.3.model.3.model.1.weight": (512, 512, 4, 4),  # innermost
        "model.model.3.weight": (128, 3, 4, 4),  # outermost up (transposed, takes the concatenation)
        "model.model.3.bias": (3,),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert sum(p.numel() for p in model.parameters()) == 54_413_955


def test_batch_norm_generator_has_no_conv_bias_but_final() -> None:
    """The reference adds a bias only under instance norm; its final 7x7 convolution always has one."""
    state = create_model("resnet_6blocks", ngf=8, norm="batch").state_dict()
    assert "model.1.bias" not in state and "model.2.running_mean" in state
    assert "model.20.bias" in state


def test_unknown_architecture_lists_known() -> None:
    with pytest.raises(KeyError, match="resnet_9blocks"):
        create_model("resnet_10blocks")
