"""Areas of the polygons verification judges: the query's mapped frame inside the reference,
the inliers' convex hull."""

from __future__ import annotations

import numpy as np


def shared_area(frame: np.ndarray, width: int, height: int) -> float:
    """Area of the query's mapped frame (a convex quadrilateral) inside the reference."""
    import cv2

    rect = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    area, _ = cv2.intersectConvexConvex(_ccw(frame), rect)
    return max(0.0, float(area))


def polygon_area(points: np.ndarray) -> float:
    """Area of a simple polygon given by its vertices in order."""
    return abs(_signed_area(points))


def _signed_area(points: np.ndarray) -> float:
    """The shoelace formula: positive for one orientation of the vertices, negative for the other."""
    x, y = points[:, 0], points[:, 1]
    return float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)) / 2


def hull_area(points: np.ndarray) -> float:
    """Area of the convex hull of ``points`` (0 for fewer than three)."""
    import cv2

    if len(points) < 3:
        return 0.0
    return float(cv2.contourArea(cv2.convexHull(points.astype(np.float32))))


def _ccw(points: np.ndarray) -> np.ndarray:
    """Polygon as float32 in the orientation cv2.intersectConvexConvex expects."""
    pts = points.astype(np.float32)
    return pts if _signed_area(pts) >= 0 else pts[::-1].copy()
