"""One registry of architectures: `@register_model`, `create_model(name, **kw)`, `list_models()`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

Factory = Callable[..., nn.Module]
F = TypeVar("F", bound=Factory)

_REGISTRY: dict[str, Factory] = {}


def register_model(fn: F) -> F:
    """Register an architecture factory under its function name."""
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"architecture {fn.__name__!r} is registered twice")
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build a registered architecture; unknown names raise KeyError listing the known ones."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(list_models())}") from None
    return factory(**kwargs)
