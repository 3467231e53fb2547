"""What a query shows besides its photo: the borders around it, the photo-like areas of a page.

A copy is often framed: padded to a square, letterboxed, or shown on a screenshot of a
profile page or a story among flat furniture and text. :func:`content_box` finds the
picture inside flat or blurred borders; :func:`photo_boxes` finds the textured areas of a
page. :mod:`.regions` cuts query views from both.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


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
