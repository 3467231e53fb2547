"""The perspective model of geometric verification: a homography, fitted and bounded.

A photo of a screen or of a print is the picture seen at an angle: no affine transform
explains it over the whole frame (the far side is foreshortened), a homography does. Eight
degrees of freedom can also bend around what does not belong together, so a fit is kept
only when it looks like a plane seen by a camera: every matched query point in front of
the camera (the projective denominator keeps its sign), orientation and the scale at the
matches' centre as sane as an affine fit's, and the local scale varying across the matched
region by at most :data:`MAX_SCALE_SPREAD`. Acceptance then asks it to be clean, as for
an affine fit (:class:`~provenance.verify.geometry.Thresholds`).

Transforms here are 2x3 (affine) or 3x3 (homography) arrays acting on ``(x, y)`` rows.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

#: The largest ratio between the local area scales (Jacobian determinants) at two corners
#: of the matched region. A plane turned by 20 degrees, seen from twice its width, spreads
#: them by about 1.7 (by 2.2 with 12 degrees of pitch on top); 4 allows about 35 degrees.
MAX_SCALE_SPREAD = 4.0


def as_homography(matrix: np.ndarray) -> np.ndarray:
    """A 2x3 affine matrix as the equivalent 3x3 homography (3x3 matrices unchanged)."""
    if matrix.shape == (3, 3):
        return matrix
    return np.vstack([matrix, [0.0, 0.0, 1.0]])


def project(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``points`` (N x 2) mapped by a 2x3 affine or 3x3 projective ``matrix``."""
    points = np.asarray(points, dtype=np.float64)
    if matrix.shape == (2, 3):
        return points @ matrix[:, :2].T + matrix[:, 2]
    mapped = np.column_stack([points, np.ones(len(points))]) @ matrix.T
    return mapped[:, :2] / mapped[:, 2:3]


def jacobian(matrix: np.ndarray, point: tuple[float, float]) -> np.ndarray:
    """The 2x2 derivative of the mapping at ``point``."""
    homography = as_homography(np.asarray(matrix, dtype=np.float64))
    x, y = point
    top = homography[:2] @ [x, y, 1.0]
    w = float(homography[2] @ [x, y, 1.0])
    return (homography[:2, :2] * w - np.outer(top, homography[2, :2])) / (w * w)


def local_affine(matrix: np.ndarray, point: tuple[float, float]) -> np.ndarray:
    """The 2x3 affine map that agrees with ``matrix`` at ``point`` to first order."""
    linear = jacobian(matrix, point)
    shift = project(as_homography(matrix), np.array([point]))[0] - linear @ np.asarray(point, dtype=np.float64)
    return np.hstack([linear, shift[:, None]])


def fit_perspective(src: np.ndarray, dst: np.ndarray, threshold: float, iterations: int, confidence: float,
                    sane: Callable[[np.ndarray], bool]):
    """RANSAC homography ``(3x3 matrix, inlier mask)`` from ``src`` to ``dst``, or ``None``
    when it is not a plausible view of a plane (see the module's docstring). ``sane``
    judges the 2x3 local affine map at the matches' centre as an affine fit would be."""
    import cv2

    if len(src) < 8:  # four points fix a homography: leave RANSAC room to reject
        return None
    cv2.setRNGSeed(12345)  # reproducible, per thread (as the affine fits)
    matrix, mask = cv2.findHomography(src, dst, cv2.RANSAC, threshold, maxIters=iterations, confidence=confidence)
    if matrix is None or mask is None or not np.all(np.isfinite(matrix)) or abs(matrix[2, 2]) < 1e-12:
        return None
    matrix = matrix / matrix[2, 2]
    mask = mask.ravel().astype(bool)
    if mask.sum() < 4 or not _plausible(matrix, src[mask], sane):
        return None
    return matrix, mask


def _plausible(matrix: np.ndarray, points: np.ndarray, sane: Callable[[np.ndarray], bool]) -> bool:
    low, high = points.min(axis=0), points.max(axis=0)
    corners = np.array([[low[0], low[1]], [high[0], low[1]], [high[0], high[1]], [low[0], high[1]]])
    depth = np.column_stack([corners, np.ones(4)]) @ matrix[2]
    if np.any(depth <= 0):  # part of the region behind the camera: not a view of a plane
        return False
    if not sane(local_affine(matrix, tuple((low + high) / 2))):
        return False
    determinants = np.array([np.linalg.det(jacobian(matrix, tuple(corner))) for corner in corners])
    if np.any(determinants <= 0):
        return False
    return float(determinants.max() / determinants.min()) <= MAX_SCALE_SPREAD
