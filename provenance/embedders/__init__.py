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
    try:
        return target(**options)
    except (TypeError, ValueError) as exc:  # an option the embedder does not take, or a bad value
        raise BadInputError(f"embedder {name!r} rejected its options {sorted(options)} ({exc})") from None


def parse_embedder_options(pairs: list[str]) -> dict[str, Any]:
    """``["model=ViT-B-32", "pretrained=/w/b32.safetensors", "image_size=224"]`` as keyword options.

    Integers and decimals become numbers, ``none`` becomes None (CLIP's random weights, for
    tests), anything else stays text; a relative path that exists becomes absolute, so the
    index's manifest finds it again from any working folder.
    """
    import os

    options: dict[str, Any] = {}
    for pair in pairs:
        key, separator, raw = pair.partition("=")
        key = key.strip()
        if not separator or not key.isidentifier():
            raise BadInputError(f"embedder option {pair!r} must read KEY=VALUE")
        value: Any = raw.strip()
        if value.lower() in ("none", "null"):
            value = None
        else:
            for kind in (int, float):
                try:
                    value = kind(value)
                    break
                except ValueError:
                    continue
        if isinstance(value, str) and value and os.path.exists(value):
            value = os.path.abspath(value)
        options[key] = value
    return options


__all__ = [
    "DEFAULT_EMBEDDER",
    "Embedder",
    "Preprocessing",
    "available_embedders",
    "create_embedder",
    "l2_normalise",
    "parse_embedder_options",
    "register_embedder",
]
