"""Embedder registry: unique names mapped to lazily imported factories."""

from __future__ import annotations

import importlib
from typing import Any, Callable

from ..errors import BadInputError
from .base import Embedder, Preprocessing, l2_normalise

DEFAULT_EMBEDDER = "effnet-lite0"

# name -> "module:factory"; modules are imported only when an embedder is built, so
# importing provenance never imports torch.
_REGISTRY: dict[str, str] = {
    "effnet-lite0": "provenance.embedders.effnet:EfficientNetLite0Embedder",
    "clip": "provenance.embedders.clip:ClipEmbedder",
}


def register_embedder(name: str, target: str | Callable[..., Embedder]) -> None:
    """Register a factory (or "module:attr" path) under a unique name."""
    if name in _REGISTRY:
        raise ValueError(f"an embedder named {name!r} is already registered")
    _REGISTRY[name] = target  # type: ignore[assignment]


def available_embedders() -> list[str]:
    """Registered embedder names."""
    return sorted(_REGISTRY)


def create_embedder(name: str = DEFAULT_EMBEDDER, **options: Any) -> Embedder:
    """Build the embedder registered as ``name`` with ``options``."""
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise BadInputError(f"unknown embedder {name!r}; available: {', '.join(available_embedders())}") from None
    if isinstance(target, str):
        module_name, attr = target.split(":")
        target = getattr(importlib.import_module(module_name), attr)
    return target(**options)


__all__ = [
    "DEFAULT_EMBEDDER",
    "Embedder",
    "Preprocessing",
    "available_embedders",
    "create_embedder",
    "l2_normalise",
    "register_embedder",
]
