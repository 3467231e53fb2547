"""The embedder interface: one global descriptor per image."""

from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes model input; picklable so decode workers can apply it.

    ``size`` is the square side the whole image is resized to. Squashing instead of
    centre-cropping keeps every pixel of the reference (a copy may come from any part of
    it) and makes aspect-ratio changes nearly free.
    """

    size: int = 224
    resample: str = "bilinear"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def to_array(self, image: Image.Image) -> np.ndarray:
        """RGB PIL image -> uint8 array (size, size, 3)."""
        resample = getattr(Image.Resampling, self.resample.upper())
        if image.mode != "RGB":
            image = image.convert("RGB")
        if image.size != (self.size, self.size):
            # reducing_gap avoids aliasing from big photos at a fraction of full-quality cost
            image = image.resize((self.size, self.size), resample, reducing_gap=3.0)
        return np.asarray(image, dtype=np.uint8)


class Embedder(ABC):
    """Maps images to L2-normalised float32 vectors of a fixed dimension.

    Subclasses set ``name`` and ``dim`` and implement :meth:`embed_arrays`. Building an
    embedder may load a model; importing its module must not.
    """

    name: str
    dim: int
    preprocessing: Preprocessing

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Everything that changes the vectors (model, weights, pooling), JSON-serialisable."""

    @abstractmethod
    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        """uint8 (n, size, size, 3) preprocessed images -> float32 (n, dim), unit norm."""

    @property
    def fingerprint(self) -> str:
        """A short hash of name, config and preprocessing: equal fingerprints, equal vectors."""
        payload = json.dumps(
            {"name": self.name, "dim": self.dim, "config": self.config(), "pre": asdict(self.preprocessing)},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """RGB PIL images -> float32 (n, dim), unit norm."""
        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        batch = np.stack([self.preprocessing.to_array(image) for image in images])
        return self.embed_arrays(batch)

    def describe(self) -> dict[str, Any]:
        """What the index manifest records about this embedder."""
        return {
            "name": self.name,
            "dim": self.dim,
            "fingerprint": self.fingerprint,
            "config": self.config(),
            "preprocessing": asdict(self.preprocessing),
        }


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Row-wise unit norm in float32; zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), the default for model threads."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
