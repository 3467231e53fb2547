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


def query_views(image: Image.Image, mirror: bool = True, strip: bool = True, photos: bool = True) -> list[QueryView]:
    """The views searched for a query.

    As given; without borders; the photo-like areas inside it (a screenshot's photo, an
    avatar); and the mirror images of the first two.
    """
    views = [QueryView("full", image, False)]
    if strip:
        box = content_box(image)
        if box is not None:
            views.append(QueryView("stripped", image.crop(box), False))
    mirrored = [QueryView(view.name + "+mirror", ImageOps.mirror(view.image), True) for view in views] if mirror else []
    if photos:
        for number, box in enumerate(photo_boxes(image)):
            views.append(QueryView(f"photo{number}", image.crop(box), False))
            if _squarish(box):
                # a round avatar hides the square's corners: its inscribed square is pure photo
                views.append(QueryView(f"photo{number}-inner", image.crop(_inscribed_square(box)), False))
    return views + mirrored


def _squarish(box: tuple[int, int, int, int]) -> bool:
    width, height = box[2] - box[0], box[3] - box[1]
    return max(width, height) <= 1.15 * min(width, height)


def _inscribed_square(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    inset = (1 - 2**-0.5) / 2
    dx, dy = (x1 - x0) * inset, (y1 - y0) * inset
    return round(x0 + dx), round(y0 + dy), round(x1 - dx), round(y1 - dy)


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


def photo_boxes(image: Image.Image, max_boxes: int = 2, min_area: float = 0.008) -> list[tuple[int, int, int, int]]:
    """Pixel boxes of photo-like areas inside a larger image (a screenshot, a profile page).

    Photos are textured almost everywhere, while page furniture is flat colour with thin
    text: keep pixels with local contrast, erase thin structures (text, lines), and return
    the largest connected areas that are clearly smaller than the whole image.
    """
    import cv2

    small_size = _small_size(image.size, 256)
    gray = np.asarray(image.convert("L").resize(small_size), dtype=np.float32)
    # a small window keeps text strokes thin, so the opening below erases them; the low
    # threshold keeps smooth photo areas (skin, sky), which are never perfectly flat
    mean = cv2.blur(gray, (3, 3))
    contrast = np.sqrt(np.maximum(cv2.blur(gray * gray, (3, 3)) - mean * mean, 0))
    mask = (contrast > 1.0).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((9, 9), np.uint8))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    height, width = gray.shape
    scale_x, scale_y = image.size[0] / width, image.size[1] / height
    boxes = []
    for label in range(1, count):
        x, y, w, h, area = (int(value) for value in stats[label])
        box_area = w * h / (width * height)
        elongation = max(w / h, h / w)
        # text lines and button rows are elongated; photos rarely exceed 3:1
        if box_area < min_area or box_area > 0.85 or area < 0.5 * w * h or elongation > 3.0:
            continue
        boxes.append((box_area, (round(x * scale_x), round(y * scale_y), round((x + w) * scale_x), round((y + h) * scale_y))))
    boxes.sort(key=lambda item: -item[0])
    return [box for _, box in boxes[:max_boxes]]
