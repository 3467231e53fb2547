"""The transform models of geometric verification, fitted with RANSAC.

:mod:`.geometry` tries them simplest first (:data:`MODELS`): a similarity (OpenCV's
partial affine estimator), a "stretch" (independent x and y scales, fitted here), a general
affine transform, and a bounded homography (:mod:`.perspective`). Every fit is in the
normalised coordinates :mod:`.geometry` works in, and is kept only when it is sane
(:func:`sane`).
"""

from __future__ import annotations

import math

import numpy as np

from .perspective import fit_perspective

#: Reject transforms that shrink or grow the normalised picture beyond this factor.
MAX_NORMALISED_SCALE = 8.0
#: Stretch and affine models: the ratio of the two axis scales may not exceed this.
MAX_ANISOTROPY = 2.5
#: Transform models, simplest first.
MODELS = ("similarity", "stretch", "affine", "perspective")
#: RANSAC's iteration cap and confidence, for OpenCV's estimators and the homography.
RANSAC_ITERS = 2000
RANSAC_CONFIDENCE = 0.995


def fit_transform(model: str, src: np.ndarray, dst: np.ndarray, threshold: float):
    """RANSAC fit of ``model``: ``(2x3 matrix, inlier mask)`` in normalised units, or ``None``."""
    import cv2

    if model == "stretch":
        return _fit_stretch(src, dst, threshold)
    if model == "perspective":
        return fit_perspective(src, dst, threshold, RANSAC_ITERS, RANSAC_CONFIDENCE,
                               lambda linear: sane(linear, MAX_ANISOTROPY))
    if model == "similarity":
        estimate, max_anisotropy = cv2.estimateAffinePartial2D, 1.0001
    elif model == "affine":
        estimate, max_anisotropy = cv2.estimateAffine2D, MAX_ANISOTROPY
    else:
        raise ValueError(f"unknown transform model {model!r}; use some of {MODELS}")
    # OpenCV's RNG is per thread: seeding it here makes every verification reproducible
    # (same inputs, same inliers) without touching other threads
    cv2.setRNGSeed(12345)
    matrix, mask = estimate(
        src,
        dst,
        method=cv2.RANSAC,
        ransacReprojThreshold=threshold,
        maxIters=RANSAC_ITERS,
        confidence=RANSAC_CONFIDENCE,
    )
    if matrix is None or mask is None or not sane(matrix, max_anisotropy):
        return None
    return matrix, mask.ravel().astype(bool)


def _fit_stretch(src: np.ndarray, dst: np.ndarray, threshold: float, hypotheses: int = 1500):
    """RANSAC for ``x' = sx x + tx, y' = sy y + ty`` (a resize that changed the aspect
    ratio, no rotation); two matches fix a hypothesis. Deterministic (seeded locally)."""
    n = len(src)
    if n < 2:
        return None
    if n * (n - 1) // 2 <= hypotheses:
        i, j = np.triu_indices(n, k=1)
    else:
        rng = np.random.default_rng(0)
        i, j = rng.integers(0, n, size=(2, hypotheses))
    d_src, d_dst = src[i] - src[j], dst[i] - dst[j]
    valid = np.all(np.abs(d_src) > 2.0, axis=1)
    i, d_src, d_dst = i[valid], d_src[valid], d_dst[valid]
    scales = d_dst / d_src
    low, high = 1 / MAX_NORMALISED_SCALE, MAX_NORMALISED_SCALE
    ok = np.all((scales > low) & (scales < high), axis=1)
    scales, i = scales[ok], i[ok]
    ok = np.maximum(scales[:, 0] / scales[:, 1], scales[:, 1] / scales[:, 0]) <= MAX_ANISOTROPY
    if not ok.any():
        return None
    scales, i = scales[ok], i[ok]
    shifts = dst[i] - scales * src[i]
    errors = np.linalg.norm(src[None] * scales[:, None] + shifts[:, None] - dst[None], axis=2)
    mask = errors[np.argmax((errors <= threshold).sum(axis=1))] <= threshold
    for _ in range(2):  # least-squares refinement on the inliers, per axis
        if mask.sum() < 3:
            return None
        params = [np.polyfit(src[mask, k], dst[mask, k], 1) for k in (0, 1)]
        matrix = np.array([[params[0][0], 0.0, params[0][1]], [0.0, params[1][0], params[1][1]]])
        mask = np.linalg.norm(src @ matrix[:, :2].T + matrix[:, 2] - dst, axis=1) <= threshold
    if not sane(matrix, MAX_ANISOTROPY):
        return None
    return matrix, mask


def sane(matrix: np.ndarray, max_anisotropy: float) -> bool:
    """Orientation-preserving, not degenerate, bounded scale and anisotropy."""
    linear = matrix[:, :2]
    if not np.all(np.isfinite(matrix)) or np.linalg.det(linear) <= 0:
        return False
    s = np.linalg.svd(linear, compute_uv=False)
    if s[1] <= 0 or s[0] / s[1] > max_anisotropy:
        return False
    scale = math.sqrt(s[0] * s[1])
    return 1 / MAX_NORMALISED_SCALE <= scale <= MAX_NORMALISED_SCALE
