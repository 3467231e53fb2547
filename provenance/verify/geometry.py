"""Geometric verification: is a query a (cropped, resized, rotated, mirrored) copy?

Pipeline for one query/reference pair:

1. Match descriptors query -> reference with Lowe's ratio test (RootSIFT + L2 for
   SIFT, Hamming for ORB), keeping one match per reference keypoint.
2. Fit, with RANSAC, a similarity (rotation, uniform scale, shift); when that does
   not verify, a "stretch" (independent x and y scales: an aspect-ratio change); when
   that does not either, a general affine transform (skew), which must then be clean;
   last a perspective (a homography: a photo of a screen or a print seen at an angle),
   which must be clean too and bounded (:mod:`.perspective`).
3. Accept the pair by the rules of :class:`Thresholds`.

All geometry uses pixel-*edge* coordinates (PIL crop-box convention: the whole image
is ``(0, 0, width, height)``). RANSAC runs on coordinates normalised so that each
image's longer side is ``NORMALISED_SIDE`` units, making tolerances independent of
image size.

Why the rules look the way they do. On the development bench (50 references x 10
edits, AugLy's 42 edits of one frame, 400 *other photos of the same person*, ~1,600
unrelated pairs) copies explain nearly all of their distinctive matches, while
different photos that still share something fail in one of three ways:

* Photos of one shoot with the same backdrop (a seal, a curtain): the backdrop lines
  up, the person moved. Many matches are unexplained (inlier ratio <= 0.55) and land
  near, not on, their predicted spot (near misses >= 0.6 x inliers).
* Face-aligned portraits of one person put the eyes on the same pixels: up to 20
  inliers at ratio 0.67, but in a thin band (inlier hull <= 0.04 of the picture).
* A rigid subject that moved against a backdrop: two consistent motions
  (``second_motion``), where a copy has one.

No single number separates every case, so each hard negative is rejected by one or
more rules with a margin, and copies pass all of them with a margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .fitting import MODELS, fit_transform
from .keypoints import Keypoints
from .perspective import as_homography, local_affine, project
from .polygons import hull_area, polygon_area, shared_area

#: Lowe's ratio test: nearest / second-nearest descriptor distance must be below this.
#: (0.7 and 0.75 kept copies' inlier ratios but *raised* hard negatives' ones.)
RATIO = 0.8
#: Coordinates are normalised so that the longer image side spans this many units.
NORMALISED_SIDE = 512.0
#: RANSAC reprojection tolerance in normalised units (0.8 % of the longer side). A
#: resized, re-encoded copy localises keypoints within 1-2 units.
RANSAC_THRESHOLD = 4.0
#: A match whose error is above the RANSAC tolerance but below this (about 19 % of
#: the picture) is a "near miss": the same thing, moved. Of *random* wrong matches
#: only ~10 % land this close, so a copy's few outliers give few near misses.
NEAR_MISS_RADIUS = 96.0
#: :attr:`Verification.refusal` of a match that passed every rule but spans too little of
#: both pictures (:attr:`Thresholds.min_support`): a logo, a caption, a sticker-sized detail.
REFUSED_COMPACT = "compact_support"


@dataclass(frozen=True)
class Thresholds:
    """Acceptance rules. A pair verifies when all of these hold (bench figures in
    brackets; "copies" are the verified ones, "negatives" other photos):

    * ``inliers >= min_inliers`` (unrelated photos <= 7; copies >= 19, mostly > 50), or,
      where the reference (or a small query, below) has fewer than ``full_bar_keypoints``
      keypoints, that bar in proportion to the fewer and at least ``min_inliers_floor``: a
      smooth photo (a bowl, a sky) or a 32-64 px avatar gives a copy only a few keypoints
      to agree on, and chance agreements are rarer still where there are few keypoints to
      agree by chance. The query's side counts only for a small view (``small_query``), and
      only for a clean, tight match (``inlier_ratio >= clean_ratio`` and ``inlier_spread <=
      max_small_spread``): a larger picture with few keypoints is a smooth one or a face
      alone (two different men's faces cropped tight agreed on 10 landmarks), and another
      photo of the same face, as a round avatar, agreed on 10-13 landmarks (7 of 1,444 such
      negatives, at ratios 0.67-0.80 but one at 0.86). Copied pixels land close to where
      the transform puts them, while landmarks of another photo of a face spread over the
      whole tolerance (evenly spread points would give 2/3; copies <= 0.45, those
      negatives 0.35-0.57).
    * ``inlier_ratio >= min_inlier_ratio``: inliers over the ratio-test matches whose
      query point lands inside the reference, so that a meme border or a collage
      neighbour does not count against a copy (copies >= 0.66, only 96 px avatars
      below 0.74; same-shoot negatives <= 0.55 except aligned faces, <= 0.67).
    * ``near_misses <= max_near_miss_ratio * inliers`` (copies <= 0.26; same-shoot
      negatives with >= 25 inliers >= 0.62).
    * The match is clean (``inlier_ratio >= clean_ratio``; no negative with >= 10
      inliers exceeded 0.71) or the inliers' convex hull covers at least
      ``min_hull_fraction`` of the shared area (aligned-face negatives <= 0.04; copies
      with a ratio below clean >= 0.17). A clean copy may have a small hull: a corner
      crop of a bathtub keeps its few keypoints on the tap.
    * A general affine or perspective fit must be clean: their extra degrees of freedom
      let RANSAC absorb a moved subject (one same-shoot negative reached ratio 0.71 with
      an affine fit, none above 0.55 with a homography, while skewed copies and photos of
      a screen stay above 0.85).
    * No second motion: the best similarity among the matches the transform leaves
      unexplained has fewer than ``max(min_second_motion, max_second_motion_ratio *
      inliers)`` inliers (copies <= 0.14 x inliers).
    * The evidence covers the subject, not a patch: the inliers' convex hull spans at
      least ``min_support`` of the query's or the reference's area. Two different photos
      that share a logo, a caption or a sticker agree on a patch that is small in both;
      a copy, even a 32-64 px avatar in a screenshot or another crop of the same news
      photo, spans far more of at least one of them (dev copies >= 0.055; a patch of 16 %
      of each side is 0.025). A match refused only by this rule says so
      (:data:`REFUSED_COMPACT`).
    """

    min_inliers: int = 15
    full_bar_keypoints: int = 100
    min_inliers_floor: int = 10
    min_inlier_ratio: float = 0.6
    max_near_miss_ratio: float = 0.4
    clean_ratio: float = 0.85
    min_hull_fraction: float = 0.12
    min_second_motion: int = 8
    max_second_motion_ratio: float = 0.25
    min_support: float = 0.025
    max_small_spread: float = 0.5

    def required_inliers(self, reference_keypoints: int, query_keypoints: int | None = None) -> int:
        """The inlier bar between a reference with ``reference_keypoints`` stored keypoints
        and a query (or view) with ``query_keypoints`` (unbounded when ``None``)."""
        fewer = reference_keypoints if query_keypoints is None else min(reference_keypoints, query_keypoints)
        scaled = math.ceil(self.min_inliers * fewer / max(1, self.full_bar_keypoints))
        return min(self.min_inliers, max(self.min_inliers_floor, scaled))


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class Verification:
    """Outcome of verifying one query against one reference.

    ``box`` is ``(x0, y0, x1, y1)`` in reference pixels (edge coordinates, clipped to
    the reference): where the query's full frame lands in the reference. ``scale`` is
    query pixels per reference pixel (0.5: the copy was shrunk to half size);
    ``rotation_deg`` is the counter-clockwise rotation of the content in the query
    (after mirroring, when ``mirrored``). ``coverage`` is the fraction of the
    reference's area visible in the query. ``transform`` maps query pixel (edge)
    coordinates to reference ones as a row-major 2x3 matrix (it includes the
    reflection when ``mirrored``). ``matches`` counts ratio-test matches,
    ``inlier_ratio``, ``near_misses`` and ``hull_fraction`` are the quantities
    :class:`Thresholds` judges, as are ``second_motion`` and ``inlier_spread`` (the
    inliers' mean residual over the RANSAC tolerance). ``query_inside`` is the fraction
    of the query's frame that lands inside the reference (1 for a crop of it; less for
    another crop of the same photograph, which shares only part of the query). ``model`` is
    ``"similarity"``, ``"stretch"``, ``"affine"``, ``"perspective"`` or ``"none"`` (no
    transform found; the geometry fields are then empty). For a perspective, ``transform``,
    ``scale`` and ``rotation_deg`` describe its affine approximation at the query's centre,
    while ``box``, ``coverage`` and ``query_inside`` come from the exact mapped frame.
    """

    verified: bool
    inliers: int
    matches: int
    box: tuple[float, float, float, float] | None
    scale: float
    rotation_deg: float
    mirrored: bool
    coverage: float
    model: str
    inlier_ratio: float = 0.0
    near_misses: int = 0
    hull_fraction: float = 0.0
    second_motion: int = 0
    transform: tuple[float, ...] | None = None
    query_inside: float = 0.0
    support: float = 0.0
    refusal: str | None = None
    inlier_spread: float = 0.0


def _unverified(matches: int, mirrored: bool) -> Verification:
    return Verification(False, 0, matches, None, 0.0, 0.0, mirrored, 0.0, "none")


def verify_pair(
    query: Keypoints,
    reference: Keypoints,
    *,
    mirrored: bool = False,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    ratio: float = RATIO,
    ransac_threshold: float = RANSAC_THRESHOLD,
    models: tuple[str, ...] = MODELS,
    small_query: bool = False,
) -> Verification:
    """Decide whether ``query`` is a geometric copy of ``reference``.

    Pass ``mirrored=True`` when ``query`` holds keypoints of the *mirrored* query image
    (from :func:`~provenance.verify.keypoints.extract_keypoints_with_mirror`): the
    reported transform then maps the unmirrored query into the reference. ``models``
    are tried in order until one verifies (a subset of :data:`MODELS`). Pass
    ``small_query=True`` for a small avatar view (:func:`provenance.regions.small_views`):
    the inlier bar then follows its keypoints too (:meth:`Thresholds.required_inliers`).
    """
    if query.method != reference.method:
        raise ValueError(f"cannot match {query.method} keypoints against {reference.method}")
    q_idx, r_idx = match_descriptors(query, reference, ratio=ratio)
    # below the reference's own bar, only a small view's clean, tight match passes (Thresholds)
    reference_bar = thresholds.required_inliers(len(reference))
    needed = thresholds.required_inliers(len(reference), len(query)) if small_query else reference_bar
    if len(q_idx) < max(3, needed):  # too few matches to ever give enough inliers
        return _unverified(len(q_idx), mirrored)
    sq = NORMALISED_SIDE / max(query.width, query.height)
    sr = NORMALISED_SIDE / max(reference.width, reference.height)
    src = ((query.xy[q_idx] + 0.5) * sq).astype(np.float32)
    dst = ((reference.xy[r_idx] + 0.5) * sr).astype(np.float32)
    best = _unverified(len(q_idx), mirrored)
    for model in models:
        if model == "perspective" and best.inliers < needed:
            # a view at an angle still leaves an affine fit with many inliers (photos of a
            # screen: 41 or more); without them a homography's RANSAC only costs time
            continue
        fit = fit_transform(model, src, dst, ransac_threshold)
        if fit is None:
            continue
        result = _describe(query, reference, model, fit, src, dst, (sq, sr, ransac_threshold), mirrored, thresholds,
                           (needed, reference_bar))
        if (result.verified, result.inliers) > (best.verified, best.inliers):
            best = result
        if best.verified:  # the simpler model suffices; do not give RANSAC more freedom
            break
    return best


def verify_with_mirror(
    query: Keypoints,
    query_mirrored: Keypoints,
    reference: Keypoints,
    **options,
) -> Verification:
    """Verify both the query and its mirror image; return the better outcome.

    A verified result beats an unverified one; otherwise more inliers win (ties go to
    the unmirrored query). ``options`` are passed to :func:`verify_pair`.
    """
    plain = verify_pair(query, reference, **options)
    flipped = verify_pair(query_mirrored, reference, mirrored=True, **options)
    if (flipped.verified, flipped.inliers) > (plain.verified, plain.inliers):
        return flipped
    return plain


def match_descriptors(
    query: Keypoints, reference: Keypoints, *, ratio: float = RATIO
) -> tuple[np.ndarray, np.ndarray]:
    """Ratio-test matches ``(query_indices, reference_indices)``, one per reference point."""
    import cv2

    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    if len(query) < 1 or len(reference) < 2:
        return empty
    if query.method == "sift":
        bias = float(getattr(query, "distance_bias", 0.0)) + float(getattr(reference, "distance_bias", 0.0))
        good = _sift_ratio_matches(query.root_sift, reference.root_sift, ratio, bias)
    else:
        matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        pairs = matcher.knnMatch(query.descriptors, reference.descriptors, k=2)
        good = [
            (p[0].distance, p[0].queryIdx, p[0].trainIdx)
            for p in pairs
            if len(p) == 2 and p[0].distance < ratio * p[1].distance
        ]
    if not good:
        return empty
    arr = np.array(good, dtype=np.float64)
    arr = arr[np.argsort(arr[:, 0], kind="stable")]
    _, first = np.unique(arr[:, 2], return_index=True)  # best match per reference point
    arr = arr[np.sort(first)]
    return arr[:, 1].astype(np.int64), arr[:, 2].astype(np.int64)


def _sift_ratio_matches(query: np.ndarray, reference: np.ndarray, ratio: float,
                        bias: float = 0.0) -> list[tuple[float, int, int]]:
    """Ratio-test matches of unit-norm descriptors as (distance, query index, reference index).

    One matrix product instead of a brute-force matcher: for unit vectors the squared L2
    distance is ``2 - 2 * dot``, so the two nearest neighbours are the two largest dots.
    ``bias``: what coded descriptors add to every squared distance on average; taken off
    before the ratio, which coding noise would otherwise push towards 1 for true matches.
    """
    from ..topk import top_dots

    pair, top2 = top_dots(query, reference, 2)
    distance = np.sqrt(np.clip(2.0 - 2.0 * pair - bias, 1e-12, None))
    keep = np.flatnonzero(distance[:, 0] < ratio * distance[:, 1])
    return list(zip(distance[keep, 0].tolist(), keep.tolist(), top2[keep, 0].tolist()))


def _describe(query, reference, model, fit, src, dst, scales, mirrored, thresholds, bars) -> Verification:
    """Turn a fitted normalised transform into a judged :class:`Verification`; ``bars`` are
    the inlier bars of a clean, tight match and of any other (:class:`Thresholds`)."""
    needed, reference_bar = bars
    m_norm, mask = fit
    sq, sr, tolerance = scales
    # Back to pixel-edge coordinates: u_r = S_r^-1 M_n S_q u_q with S = diag(s, s, 1).
    pixels = np.diag([1 / sr, 1 / sr, 1.0]) @ as_homography(m_norm) @ np.diag([sq, sq, 1.0])
    qw, qh, rw, rh = query.width, query.height, reference.width, reference.height
    corners = np.array([[0, 0], [qw, 0], [qw, qh], [0, qh]], dtype=np.float64)
    frame = project(pixels, corners)
    shared = shared_area(frame, rw, rh)

    projected = project(m_norm, src)
    error = np.linalg.norm(projected - dst, axis=1)
    inliers = int(mask.sum())
    lands_inside = np.all((projected >= 0) & (projected <= [rw * sr, rh * sr]), axis=1)
    stats = dict(
        inliers=inliers,
        inlier_ratio=inliers / max(1, int((lands_inside | mask).sum())),
        near_misses=int(((error > tolerance) & (error <= NEAR_MISS_RADIUS) & ~mask).sum()),
        hull_fraction=hull_area(dst[mask] / sr) / shared if shared > 0 else 0.0,
        second_motion=_second_motion(src, dst, error, tolerance) if inliers >= needed else 0,
        inlier_spread=float(error[mask].mean() / tolerance) if inliers else 0.0,
    )
    # how much of either picture the agreeing points span: a logo or a caption spans little of both
    support = max(hull_area(src[mask] / sq) / (qw * qh), hull_area(dst[mask] / sr) / (rw * rh))
    verified = shared > 0 and _passes(thresholds, model, needed, reference_bar, **stats)
    refusal = None
    if verified and support < thresholds.min_support:
        verified, refusal = False, REFUSED_COMPACT
    x0, y0 = np.clip(frame.min(axis=0), 0, [rw, rh])
    x1, y1 = np.clip(frame.max(axis=0), 0, [rw, rh])
    matrix = local_affine(pixels, (qw / 2, qh / 2))
    linear = matrix[:, :2]
    inverse = np.linalg.inv(linear)  # reference -> query (mirrored frame if mirrored)
    if mirrored:  # u_mirrored = (qw - x, y): fold the flip into the reported transform
        matrix = matrix @ np.array([[-1.0, 0.0, qw], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    return Verification(
        verified=bool(verified),
        matches=len(src),
        box=(float(x0), float(y0), float(x1), float(y1)),
        scale=1.0 / math.sqrt(abs(np.linalg.det(linear))),
        rotation_deg=math.degrees(math.atan2(-inverse[1, 0], inverse[0, 0])),
        mirrored=mirrored,
        coverage=shared / float(rw * rh),
        model=model,
        transform=tuple(float(v) for v in matrix.ravel()),
        query_inside=min(1.0, shared / max(1e-9, polygon_area(frame))),
        support=support,
        refusal=refusal,
        **stats,
    )


def _passes(
    t: Thresholds,
    model: str,
    needed: int,
    reference_bar: int,
    *,
    inliers: int,
    inlier_ratio: float,
    near_misses: int,
    hull_fraction: float,
    second_motion: int,
    inlier_spread: float,
) -> bool:
    """The acceptance rules documented on :class:`Thresholds`."""
    clean = inlier_ratio >= t.clean_ratio
    return (
        inliers >= needed
        and (inliers >= reference_bar or (clean and inlier_spread <= t.max_small_spread))
        and inlier_ratio >= t.min_inlier_ratio
        and near_misses <= t.max_near_miss_ratio * inliers
        and (clean or hull_fraction >= t.min_hull_fraction)
        and (clean or model not in ("affine", "perspective"))
        and second_motion < max(t.min_second_motion, t.max_second_motion_ratio * inliers)
    )


def _second_motion(src: np.ndarray, dst: np.ndarray, error: np.ndarray, tolerance: float) -> int:
    """Inliers of the best similarity among the matches the main transform leaves
    unexplained (error above twice the tolerance): a second, independent motion."""
    rest = error > 2 * tolerance
    if rest.sum() < 4:
        return 0
    fit = fit_transform("similarity", src[rest], dst[rest], tolerance)
    return 0 if fit is None else int(fit[1].sum())
