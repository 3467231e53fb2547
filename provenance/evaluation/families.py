"""The registry of query transform families (``name -> function(image, rng) -> (image, params)``) and the helpers they share.

The families themselves live in :mod:`.transforms` (standard edits), :mod:`.profile` (profile
photos and pages) and :mod:`.threat` (the threat model's); :mod:`.queries` imports all three,
so :data:`FAMILIES` is full wherever queries are built.
"""

from __future__ import annotations

import io
import math
import zlib
from typing import Any, Callable

import numpy as np
from PIL import Image

Params = dict[str, Any]
Transform = Callable[[Image.Image, np.random.Generator], "tuple[Image.Image, Params]"]

#: name -> transform; filled by :func:`register` (this module and :mod:`.profile`).
FAMILIES: dict[str, Transform] = {}

def register(name: str) -> Callable[[Transform], Transform]:
    """Decorator adding a transform to :data:`FAMILIES` under ``name``."""

    def decorator(function: Transform) -> Transform:
        if name in FAMILIES:
            raise ValueError(f"transform family {name!r} registered twice")
        FAMILIES[name] = function
        return function

    return decorator


def family_rng(seed: int, ref_index: int, family: str) -> np.random.Generator:
    """The generator for one query: a pure function of (seed, reference index, family)."""
    key = zlib.crc32(family.encode("utf-8"))
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(ref_index), key]))


def apply_family(name: str, image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """Run family ``name`` on an RGB image; the result is always a fresh RGB image."""
    try:
        function = FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown transform family {name!r}; known: {', '.join(sorted(FAMILIES))}") from None
    out, params = function(image.convert("RGB") if image.mode != "RGB" else image, rng)
    if out.mode != "RGB":
        out = out.convert("RGB")
    return out, params


# --- small helpers -------------------------------------------------------------------


def uniform(rng: np.random.Generator, low: float, high: float, digits: int = 3) -> float:
    """A uniform draw rounded to ``digits`` (the rounded value is the one used)."""
    return round(float(rng.uniform(low, high)), digits)


def choice(rng: np.random.Generator, options: list | tuple):
    """One element of ``options`` (plain Python type, JSON-ready)."""
    return options[int(rng.integers(len(options)))]


def random_colour(rng: np.random.Generator) -> list[int]:
    """A random RGB colour as a list of three ints."""
    return [int(v) for v in rng.integers(0, 256, size=3)]


def jpeg_roundtrip(image: Image.Image, quality: int) -> Image.Image:
    """Encode as JPEG at ``quality`` and decode again (keeps the artefacts in memory)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def face_box(
    size: tuple[int, int], area: float, aspect: float, centre: tuple[float, float]
) -> tuple[int, int, int, int]:
    """A crop box of ``area`` (fraction of the image) and ``aspect`` (w/h relative to the
    image's) around relative ``centre``, shifted to stay inside the image."""
    width, height = size
    box_w = min(width, max(8, round(width * math.sqrt(area * aspect))))
    box_h = min(height, max(8, round(height * math.sqrt(area / aspect))))
    left = round(centre[0] * width - box_w / 2)
    top = round(centre[1] * height - box_h / 2)
    left = min(max(0, left), width - box_w)
    top = min(max(0, top), height - box_h)
    return (left, top, left + box_w, top + box_h)


def face_crop(image: Image.Image, rng: np.random.Generator, low: float, high: float) -> tuple[Image.Image, Params]:
    """Crop ``low..high`` of the area around the face region (LFW faces sit near the centre)."""
    area = uniform(rng, low, high)
    aspect = round(math.exp(uniform(rng, -0.25, 0.25)), 3)
    centre = (uniform(rng, 0.42, 0.58), uniform(rng, 0.40, 0.56))
    box = face_box(image.size, area, aspect, centre)
    params = {"area": area, "aspect": aspect, "centre": list(centre), "box": list(box)}
    return image.crop(box), params
