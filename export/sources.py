"""Where an exported network comes from: this project's checkpoints, pytorch-CycleGAN-and-pix2pix
state dicts, any nn.Module by import path plus a state dict, or a TorchScript file."""

from __future__ import annotations

import importlib
import logging
import pickle
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from tilecast.proto.errors import InvalidArgument
from tilecast.proto.v1 import manifest_pb2
from tilecast.training.base import load_checkpoint
from tilecast.training.models import create_model

log = logging.getLogger(__name__)
T = TypeVar("T")
# What torch raises for a file that is not what it was told (an image, a truncated or foreign pickle).
UNREADABLE = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError, TypeError)
KINDS: dict[str, manifest_pb2.ModelKind] = {
    "generator": manifest_pb2.MODEL_KIND_GENERATOR,
    "segmenter": manifest_pb2.MODEL_KIND_SEGMENTER,
    "classifier": manifest_pb2.MODEL_KIND_CLASSIFIER,
}


@dataclass
class LoadedModel:
    """A float network in eval mode and what export needs to know about it."""

    module: nn.Module
    kind: str
    in_channels: int
    out_channels: int
    mean: list[float]
    std: list[float]
    description: str
    size_multiple: int = 1
    scripted: bool = False
    training: dict[str, Any] = field(default_factory=dict)  # data, metrics, config of a tilecast checkpoint
    percentiles: tuple[float, float] | None = None  # image-global (low, high) percentile normalisation
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind {self.kind!r} is not one of {', '.join(KINDS)}")
        self.module.eval()


def readable(path: Path, what: str, load: Callable[[], T]) -> T:
    """`load()`, with a file torch cannot read as `what` reported in one line instead of a traceback."""
    try:
        return load()
    except UNREADABLE as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InvalidArgument(f"{path} cannot be read as {what} ({reason}); check the file and --format "
                              "(tilecast, pix2pix, module or torchscript)") from exc


def fitted(module: nn.Module, state: Any, path: Path, settings: str) -> None:
    """Load a state dict strictly; one line when it does not fit the network the settings build."""
    try:
        module.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InvalidArgument(f"the weights in {path} do not fit the network {settings} builds ({reason})") \
            from exc


def _tanh_range(channels: int) -> tuple[list[float], list[float]]:
    """Inputs scaled to [-1, 1], as pix2pix and CycleGAN train."""
    return [0.5] * channels, [0.5] * channels


def from_checkpoint(path: Path) -> LoadedModel:
    """A checkpoint written by `tilecast train`."""
    ckpt = readable(path, "a `tilecast train` checkpoint", lambda: load_checkpoint(path))
    if not isinstance(ckpt, dict) or "arch" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a tilecast checkpoint; give --format pix2pix, module or torchscript")
    kwargs = ckpt["model_kwargs"]
    try:
        module = create_model(ckpt["arch"], **kwargs)
    except KeyError as exc:  # an architecture this installation does not have
        raise InvalidArgument(f"{path}: {exc.args[0]}") from None
    fitted(module, ckpt["state_dict"], path, f"architecture {ckpt['arch']}")
    norm = ckpt["normalization"]
    training: dict[str, Any] = {k: ckpt[k] for k in ("metrics", "training_data", "config") if k in ckpt}
    percentiles = (norm["low_percentile"], norm["high_percentile"]) if norm.get("mode") == "percentile" else None
    return LoadedModel(module, ckpt.get("kind", "generator"), kwargs["input_nc"], kwargs["output_nc"],
                       norm["mean"], norm["std"], f"{ckpt['arch']} {kwargs}",
                       int(getattr(module, "size_multiple", 1)), training=training, percentiles=percentiles,
                       class_names=list(ckpt.get("class_names", [])))


def patch_instance_norm_keys(state: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    """Drop running statistics that checkpoints from before PyTorch 0.4 saved for InstanceNorm layers
    (which now track none), the way pytorch-CycleGAN-and-pix2pix patches them on load."""
    instance_norms = {name for name, m in module.named_modules() if isinstance(m, nn.InstanceNorm2d)}
    patched = OrderedDict()
    for key, value in state.items():
        owner, _, leaf = key.rpartition(".")
        if owner in instance_norms and leaf in ("running_mean", "running_var", "num_batches_tracked"):
            continue
        patched[key] = value
    return patched


def from_pix2pix(path: Path, arch: str, norm: str, input_nc: int, output_nc: int, ngf: int = 64,
                 use_dropout: bool = False) -> LoadedModel:
    """A generator saved by pytorch-CycleGAN-and-pix2pix (latest_net_G.pth, latest_net_G_A.pth)."""
    module = create_model(arch, input_nc=input_nc, output_nc=output_nc, ngf=ngf, norm=norm, use_dropout=use_dropout)
    state = readable(path, "a pix2pix state dict", lambda: torch.load(path, map_location="cpu", weights_only=True))
    if not isinstance(state, dict):
        raise InvalidArgument(f"{path} holds a {type(state).__name__}, not a pix2pix state dict")
    if hasattr(state, "_metadata"):
        del state._metadata
    fitted(module, patch_instance_norm_keys(state, module), path, f"--arch {arch} --norm {norm} --ngf {ngf}")
    if norm == "batch" or use_dropout:
        log.warning(
            "exporting in eval mode (running batch-norm statistics, no dropout). pytorch-CycleGAN-and-pix2pix's "
            "test.py without --eval uses batch statistics and dropout at test time, so its images differ.")
    mean, std = _tanh_range(input_nc)
    return LoadedModel(module, "generator", input_nc, output_nc, mean, std,
                       f"{arch} (pytorch-CycleGAN-and-pix2pix, norm={norm}, ngf={ngf})",
                       int(getattr(module, "size_multiple", 1)))


def from_import_path(spec: str, state_path: Path | None, kwargs: dict[str, Any], kind: str, in_channels: int,
                     out_channels: int, mean: list[float], std: list[float], size_multiple: int) -> LoadedModel:
    """`package.module:Factory` called with kwargs, then an optional state dict loaded strictly."""
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"--module {spec!r} must look like package.module:ClassOrFunction")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import {spec}: {exc}") from exc
    module = factory(**kwargs)
    if state_path is not None:
        state = readable(state_path, "a state dict",
                         lambda: torch.load(state_path, map_location="cpu", weights_only=True))
        fitted(module, state, state_path, spec)
    return LoadedModel(module, kind, in_channels, out_channels, mean, std, spec, size_multiple)


def from_torchscript(path: Path, kind: str, in_channels: int, out_channels: int, mean: list[float],
                     std: list[float], size_multiple: int) -> LoadedModel:
    module = readable(path, "TorchScript",
                      lambda: torch.jit.load(str(path), map_location="cpu"))  # type: ignore[no-untyped-call]
    return LoadedModel(module, kind, in_channels, out_channels, mean, std, f"TorchScript {path.name}",
                       size_multiple, scripted=True)
