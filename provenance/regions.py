"""Image regions: reference crops indexed beside the whole image, and query views.

A stolen profile photo is often a tight crop, so each reference is also indexed by a few
centred crops (the subject of a portfolio or portrait photo sits near the centre). On the
query side, borders (uniform, blurred or letterbox) are stripped and the mirrored image
is tried too; the best score over all (view, region) pairs wins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

Box = tuple[float, float, float, float]  # fractions of width/height: x0, y0, x1, y1

#: Region 0 is always the whole image; the others are centred crops of 80% and 55% of the
#: side. Face-tight crops of portraits land between them.
DEFAULT_REGIONS: tuple[Box, ...] = (
    (0.0, 0.0, 1.0, 1.0),
    (0.1, 0.1, 0.9, 0.9),
    (0.225, 0.225, 0.775, 0.775),
)


def crop_fraction(image: Image.Image, box: Box) -> Image.Image:
    """Crop ``image`` to a fractional box."""
    if box == (0.0, 0.0, 1.0, 1.0):
        return image
    width, height = image.size
    x0, y0, x1, y1 = box
    pixels = (round(x0 * width), round(y0 * height), max(round(x1 * width), round(x0 * width) + 1),
              max(round(y1 * height), round(y0 * height) + 1))
    return image.crop(pixels)


@dataclass(frozen=True)
class QueryView:
    """One version of the query image that is embedded and searched."""

    name: str
    image: Image.Image
    mirrored: bool


def query_views(image: Image.Image, mirror: bool = True, strip: bool = True) -> list[QueryView]:
    """The views searched for a query: as given, border-stripped, and their mirror images."""
    views = [QueryView("full", image, False)]
    if strip:
        box = content_box(image)
        if box is not None:
            views.append(QueryView("stripped", image.crop(box), False))
    if mirror:
        views += [QueryView(view.name + "+mirror", ImageOps.mirror(view.image), True) for view in list(views)]
    return views


def content_box(image: Image.Image, max_trim: float = 0.45, min_trim: float = 0.03) -> tuple[int, int, int, int] | None:
    """Pixel box of the image without flat or blurred borders, or None when there are none.

    A border row or column has far less detail (gradient energy) than the picture inside:
    uniform padding, letterbox bars and the blurred copies used to fill a frame all do.
    """
    gray = np.asarray(image.convert("L").resize(_small_size(image.size)), dtype=np.float32)
    height, width = gray.shape
    if height < 16 or width < 16:
        return None
    energy = np.zeros_like(gray)
    energy[:, 1:] += np.abs(np.diff(gray, axis=1))
    energy[1:, :] += np.abs(np.diff(gray, axis=0))
    rows, columns = energy.mean(axis=1), energy.mean(axis=0)
    inner = energy[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4].mean()
    limit = max(0.5, 0.12 * float(inner))
    top, bottom = _trim(rows, limit, max_trim)
    left, right = _trim(columns, limit, max_trim)
    if max(top, bottom, left, right) < min_trim * max(height, width):
        return None
    scale_x, scale_y = image.size[0] / width, image.size[1] / height
    box = (round(left * scale_x), round(top * scale_y), round((width - right) * scale_x), round((height - bottom) * scale_y))
    if (box[2] - box[0]) * (box[3] - box[1]) < 0.15 * image.size[0] * image.size[1]:
        return None
    return box


def _trim(profile: np.ndarray, limit: float, max_trim: float) -> tuple[int, int]:
    cap = int(len(profile) * max_trim)
    start = 0
    while start < cap and profile[start] < limit:
        start += 1
    end = 0
    while end < cap and profile[len(profile) - 1 - end] < limit:
        end += 1
    return start, end


def _small_size(size: tuple[int, int], side: int = 256) -> tuple[int, int]:
    width, height = size
    scale = min(1.0, side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))
