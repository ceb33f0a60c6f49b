"""The checks every training config passes when it is made: one message per setting, naming it as a user
spells it (`--steps` for a flag, the key for `--set key=value` and TOML files), the bad value and what
is valid. Settings are checked by name, so a loop's own fields (`lambda_l1`, `pool_size`) are covered
wherever they appear."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

from tilecast.proto.errors import InvalidOption
from tilecast.training.data.masks import MASK_MODES
from tilecast.training.models import create_model, list_models

FLAGS = {"data", "out", "arch", "steps", "batch_size", "crop", "seed", "ngf", "norm", "lambda_gan", "mask_mode",
         "balanced"}  # settings `tilecast train` has a flag for
MIN_CROP = 16

Rule = tuple[Callable[[Any], bool], str]
_AT_LEAST_1: Rule = (lambda v: v >= 1, "give 1 or more")
_AT_LEAST_0: Rule = (lambda v: v >= 0, "give 0 or more")
_WEIGHT: Rule = (lambda v: math.isfinite(v) and v >= 0, "give a weight of 0 or more")


def _choice(*allowed: str) -> Rule:
    return (lambda v: v in allowed, f"use one of {', '.join(allowed)}")


RULES: dict[str, Rule] = {
    "steps": _AT_LEAST_1, "batch_size": _AT_LEAST_1, "ngf": _AT_LEAST_1, "ndf": _AT_LEAST_1,
    "n_layers_d": _AT_LEAST_1, "log_every": _AT_LEAST_1,
    "seed": _AT_LEAST_0, "threads": _AT_LEAST_0, "checkpoint_every": _AT_LEAST_0, "pool_size": _AT_LEAST_0,
    "crop": (lambda v: v >= MIN_CROP, f"give a crop edge of {MIN_CROP} pixels or more"),
    "lr": (lambda v: math.isfinite(v) and v > 0, "give a learning rate greater than 0, e.g. 0.0002"),
    "beta1": (lambda v: 0 <= v < 1, "give Adam's beta1 in [0, 1), e.g. 0.5"),
    "weight_decay": _WEIGHT, "lambda_l1": _WEIGHT, "lambda_gan": _WEIGHT, "lambda_a": _WEIGHT,
    "lambda_b": _WEIGHT, "lambda_identity": _WEIGHT, "dice_weight": _WEIGHT,
    "norm": _choice("batch", "instance", "none"),
    "device": _choice("auto", "cpu", "cuda"),
    "gan_mode": _choice("lsgan", "vanilla"),
    "mask_mode": _choice(*MASK_MODES),
    "normalization": _choice("percentile", "fixed"),
}


def spelled(name: str) -> str:
    """A setting as a user gives it: its flag, or its key for --set and TOML files."""
    return f"--{name.replace('_', '-')}" if name in FLAGS else name


@functools.cache
def task_of(arch: str) -> str:
    """What a registered architecture is for (generator, segmenter, classifier): built once, tiny."""
    return str(getattr(create_model(arch, ngf=4), "task", ""))


def check_config(config: Any, task: str) -> None:
    """Raise InvalidOption for the first setting of `config` (a loop's dataclass) out of range, or an
    architecture that is not registered for `task`."""
    for field in dataclasses.fields(config):
        rule = RULES.get(field.name)
        value = getattr(config, field.name)
        if rule is not None and not rule[0](value):
            raise InvalidOption(spelled(field.name), value, rule[1])
    arch = config.arch
    if not task or not arch:
        return
    fitting = [name for name in list_models() if task_of(name) == task]
    if arch not in fitting:
        raise InvalidOption("--arch", arch, f"{task} architectures are {', '.join(fitting)} "
                                            "(see `tilecast train models`)")
