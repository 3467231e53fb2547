"""Round avatars in a query: the disc of an avatar on its background, circles on a page.

A stolen profile photo is often shown as a disc: alone on a flat, gradient or blurred
background (:func:`disc_square`), or on a screenshot of a profile page beside a banner, a
name and post tiles (:func:`round_avatars`). :mod:`.regions` cuts query views inside them.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .faces import detection_scale


def disc_square(image: Image.Image, flat_ratio: float = 0.35) -> tuple[int, int, int, int] | None:
    """Pixel box of the square inside a round avatar's disc, or None when the image is not one.

    A round avatar is a square-ish image whose corners, outside the inscribed circle, hold
    a solid colour, a gradient or a blurred copy: far less detail than the disc. The
    disc's radius is where the radial detail profile drops (an avatar may have a margin).
    """
    width, height = image.size
    if not squarish((0, 0, width, height)) or min(width, height) < 24:
        return None
    side = 96
    gray = np.asarray(image.convert("L").resize((side, side), Image.Resampling.BILINEAR), dtype=np.float32)
    energy = np.zeros_like(gray)
    energy[:, 1:] += np.abs(np.diff(gray, axis=1))
    energy[1:, :] += np.abs(np.diff(gray, axis=0))
    centre = (side - 1) / 2
    yy, xx = np.mgrid[0:side, 0:side]
    radius = np.hypot(xx - centre, yy - centre) / (side / 2)
    inner = float(energy[radius < 0.5].mean())
    corners = float(energy[radius > 1.05].mean())
    if inner < 2.0 or corners > flat_ratio * inner:
        return None
    # the disc ends at the outermost ring that still has detail (ring edges count once)
    rings = [(r, float(energy[(radius >= r) & (radius < r + 0.05)].mean())) for r in np.arange(0.5, 1.0, 0.05)]
    edge = max((r + 0.05 for r, level in rings if level >= flat_ratio * inner), default=0.5)
    half = 0.5 * edge / 2**0.5 * 0.95 * min(width, height)
    cx, cy = width / 2, height / 2
    return round(cx - half), round(cy - half), round(cx + half), round(cy + half)


def squarish(box: tuple[int, int, int, int], limit: float = 1.15) -> bool:
    """Whether ``box``'s longer side is at most ``limit`` times its shorter."""
    width, height = box[2] - box[0], box[3] - box[1]
    return max(width, height) <= limit * min(width, height)


def round_avatars(image: Image.Image, side: int, max_circles: int = 2) -> list[tuple[int, int, int, int]]:
    """Pixel boxes of the circles in ``image`` that may be round avatars, strongest first.

    A profile page shows the stolen photo as a disc beside a banner, name and tiles; its
    outline is a strong, complete circle even when the photo inside merges with the banner
    into one textured area (which :func:`photo_boxes` cannot split). OpenCV's gradient
    Hough transform (``HOUGH_GRADIENT_ALT``, which scores circle completeness) finds it;
    circles that fill the image are left to :func:`disc_square`. ``side``: the shorter side
    the image is detected at.
    """
    import cv2

    width, height = image.size
    scale = detection_scale(image.size, side)
    small = (max(1, round(width * scale)), max(1, round(height * scale)))
    if min(small) < 24:
        return []
    gray = cv2.GaussianBlur(np.asarray(image.convert("L").resize(small, Image.Resampling.BILINEAR)), (5, 5), 1.5)
    shortest = min(gray.shape)
    found = cv2.HoughCircles(gray, cv2.HOUGH_GRADIENT_ALT, dp=1.5, minDist=shortest * 0.1, param1=150, param2=0.8,
                             minRadius=max(6, int(shortest * 0.04)), maxRadius=int(shortest * 0.42))
    if found is None:
        return []
    boxes = []
    for x, y, radius in found[0][:max_circles]:
        box = (round((x - radius) / scale), round((y - radius) / scale), round((x + radius) / scale), round((y + radius) / scale))
        boxes.append((max(0, box[0]), max(0, box[1]), min(width, box[2]), min(height, box[3])))
    return boxes


def inscribed_square(box: tuple[int, int, int, int], shrink: float = 1.0) -> tuple[int, int, int, int]:
    """The square inscribed in the circle ``box`` bounds, its side times ``shrink``, same centre."""
    x0, y0, x1, y1 = box
    inset = (1 - shrink * 2**-0.5) / 2
    dx, dy = (x1 - x0) * inset, (y1 - y0) * inset
    return round(x0 + dx), round(y0 + dy), round(x1 - dx), round(y1 - dy)
