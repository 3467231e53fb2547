"""From search hits to verdicts: candidate selection, PDQ, geometric verification, scoring.

Scores are comparable across queries and ordered by evidence:

* a ``copy`` (geometrically verified, or a near-exact PDQ hash) scores ``1 + s`` with
  ``s`` in (0, 1) growing with the inlier count (or PDQ closeness);
* anything else scores its best cosine similarity over (query view, reference region)
  pairs, at most 1. It is ``similar`` at or above the similarity threshold, else
  ``no_match``: a close embedding without geometric proof may be the same shoot or the
  same person, which is not evidence of copying.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from .verify.geometry import Verification, verify_with_mirror
from .verify.keypoints import Keypoints, extract_keypoints_with_mirror, mirror_keypoints
from .verify.pdq import MATCH_THRESHOLD as PDQ_MATCH_DISTANCE
from .verify.pdq import MIN_QUALITY as PDQ_MIN_QUALITY
from .verify.pdq import pdq_dihedral_with_quality
from .index.metadata import Reference
from .regions import box_area, circle_views, small_views
from .results import VERDICT_COPY, VERDICT_NO_MATCH, VERDICT_SIMILAR, Match, Transform

#: Inliers at which a verified copy's strength is one half.
_INLIER_SCALE = 25.0
#: A view whose longer side is at least this share of the whole query's takes its keypoints
#: from the whole query's (:meth:`QueryFeatures.keypoints`).
DERIVE_FROM_WHOLE = 0.8


@dataclass
class Candidate:
    """A reference under consideration for one query."""

    ref_id: int
    similarity: float = -1.0
    view: int = 0  # index of the query view that gave the best similarity
    pdq_distance: int | None = None
    votes: float | None = None  # reciprocal rank by shared visual words (keypoint vote source)
    vote_view: int | None = None  # the query view whose keypoints gave those votes
    correlation: float | None = None  # best thumbnail correlation of a small view (thumbnail source)
    correlation_view: int | None = None  # the small view that reached it
    tried_views: frozenset[int] = frozenset()  # the query views verification has tried
    verification: Verification | None = None
    verified_view: int | None = None  # the query view the verification is about
    reference_frame: tuple[int, int] | None = None  # (width, height) the reference's keypoints were found in

    @property
    def is_copy(self) -> bool:
        near_exact = self.pdq_distance is not None and self.pdq_distance <= PDQ_MATCH_DISTANCE
        return near_exact or bool(self.verification and self.verification.verified)

    def score(self) -> float:
        if not self.is_copy:
            return max(-1.0, min(1.0, self.similarity))
        strength = 0.0
        if self.verification is not None and self.verification.verified:
            inliers = self.verification.inliers
            # a reference cut from the same photograph as the true source shares part of
            # the query: the share of the query the match explains breaks such ties
            strength = inliers / (inliers + _INLIER_SCALE) * (0.5 + 0.5 * self.verification.query_inside)
        if self.pdq_distance is not None and self.pdq_distance <= PDQ_MATCH_DISTANCE:
            strength = max(strength, 1.0 - self.pdq_distance / (2.0 * PDQ_MATCH_DISTANCE + 2))
        return 1.0 + strength

    def verdict(self, similar_threshold: float, copy_threshold: float = 1.0) -> str:
        if self.is_copy and self.score() >= copy_threshold:
            return VERDICT_COPY
        return VERDICT_SIMILAR if self.similarity >= similar_threshold else VERDICT_NO_MATCH


@dataclass
class QueryFeatures:
    """Lazily computed local features of a query's views (each computed once)."""

    views: list
    _keypoints: dict[int, tuple[Keypoints, Keypoints] | Future] = field(default_factory=dict)

    def keypoints(self, view: int) -> tuple[Keypoints, Keypoints]:
        base = self.base_view(view)
        if base not in self._keypoints:
            derived = self._derived(base)
            self._keypoints[base] = derived if derived is not None else extract_keypoints_with_mirror(self.views[base].image)
        pair = self._keypoints[base]
        return pair.result() if isinstance(pair, Future) else pair

    def _derived(self, base: int) -> tuple[Keypoints, Keypoints] | None:
        """The keypoints of a view that is most of the whole query (without its borders, say)
        taken from the whole query's: the same pixels at nearly the working scale, so a second
        detection would find the same points (None for smaller views, which are upsampled)."""
        view, whole = self.views[base], self.views[0]
        if base == 0 or view.box is None or max(view.image.size) < DERIVE_FROM_WHOLE * max(whole.image.size):
            return None
        plain = self.keypoints(0)[0]
        x0, y0, x1, y1 = view.box
        inside = (plain.xy[:, 0] >= x0) & (plain.xy[:, 0] < x1) & (plain.xy[:, 1] >= y0) & (plain.xy[:, 1] < y1)
        width, height = view.image.size
        cropped = Keypoints(plain.xy[inside] - np.array([x0, y0], np.float32), plain.descriptors[inside], width, height,
                            plain.method)
        return cropped, mirror_keypoints(cropped)

    def prefetch(self, views: list[int], pool) -> None:
        """Start extracting the keypoints that ``views`` need on ``pool`` (an executor).

        Call it from the thread that will later call :meth:`keypoints`, before any task
        that waits on them is submitted to the same pool (which then never deadlocks).
        """
        bases = list(dict.fromkeys(self.base_view(view) for view in views))
        if any(base != 0 and self._derivable(base) for base in bases):
            bases = [0] + bases  # what they are derived from
        for base in dict.fromkeys(bases):
            if base not in self._keypoints and not (base and self._derivable(base)):
                self._keypoints[base] = pool.submit(extract_keypoints_with_mirror, self.views[base].image)

    def _derivable(self, base: int) -> bool:
        return self.views[base].box is not None and max(self.views[base].image.size) >= DERIVE_FROM_WHOLE * max(self.views[0].image.size)

    def evidence_views(self, view: int) -> list[int]:
        """The unmirrored views a candidate found by ``view`` is verified on, in order.

        Its own view when that may be judged alone; for a face square, the two smallest
        frames of the query's own that hold the face (the inside of its round avatar,
        the photo on a page, the query without borders); then always the whole query
        (view 0).
        """
        base = self.base_view(view)
        if self.views[base].evidence:
            return list(dict.fromkeys((base, 0)))
        box = self.views[base].box
        frames = []
        if box is not None:
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            frames = [number for number, frame in enumerate(self.views)
                      if number and frame.evidence and not frame.mirrored and frame.box is not None
                      and frame.box[0] <= cx <= frame.box[2] and frame.box[1] <= cy <= frame.box[3]]
            frames.sort(key=lambda number: box_area(self.views[number].box))
        return list(dict.fromkeys((*frames[:2], 0)))

    def base_view(self, view: int) -> int:
        """The unmirrored view whose keypoints (plain and mirrored) serve ``view``."""
        if not self.views[view].mirrored:
            return view
        base_name = self.views[view].name.removesuffix("+mirror")
        return next(number for number, candidate in enumerate(self.views) if candidate.name == base_name)

    def pdq_variants(self) -> list[bytes]:
        hashes, quality = pdq_dihedral_with_quality(self.views[0].image, max_side=512)
        return hashes if quality >= PDQ_MIN_QUALITY else []  # flat images give unreliable hashes


def verify_candidates(candidates: list[Candidate], features: QueryFeatures, load_keypoints, pool=None) -> None:
    """Geometrically verify each candidate (in place), trying the query view that found it
    (or, for a face square, the query's own frames: :meth:`QueryFeatures.evidence_views`)
    and the whole query, each with its mirror image.

    With ``pool`` (an executor), the query views' keypoints are extracted and the
    candidates verified concurrently: SIFT, RANSAC and the descriptor products release
    the GIL, so one query verifies on every thread of the pool.
    """
    if pool is not None and candidates:  # the keypoints are extracted while references load
        features.prefetch([view for candidate in candidates for view in views_to_try(candidate, features)], pool)
    candidates = [candidate for candidate in candidates if views_to_try(candidate, features)]
    references = {candidate.ref_id: load_keypoints(candidate.ref_id) for candidate in candidates}
    usable = [candidate for candidate in candidates
              if references[candidate.ref_id] is not None and len(references[candidate.ref_id]) >= 3]
    run = map if pool is None else pool.map
    list(run(lambda candidate: _verify_one(candidate, features, references[candidate.ref_id]), usable))


def _verify_one(candidate: Candidate, features: QueryFeatures, reference: Keypoints) -> None:
    # an earlier stage's outcome competes with this one's (a later stage tries new views only)
    tried = [(candidate.verification, candidate.verified_view)] if candidate.verification is not None else []
    views = views_to_try(candidate, features)
    small = small_views(features.views)
    for view in views:
        plain, mirrored = features.keypoints(view)
        outcome = verify_with_mirror(plain, mirrored, reference, small_query=view in small)
        tried.append((outcome, view))
        if outcome.verified:
            break
    candidate.verification, candidate.verified_view = max(tried, key=lambda item: (item[0].verified, item[0].inliers))
    candidate.reference_frame = (reference.width, reference.height)
    candidate.tried_views = candidate.tried_views | set(views)


def views_to_try(candidate: Candidate, features: QueryFeatures) -> list[int]:
    """The views not tried yet: the candidate's evidence views (of its best similarity and of
    the view whose keypoints voted for it, the voting view first when no vector found it) and
    the query's round avatars (a profile page's avatar verifies on its own frame, whichever
    view found the reference); first, for one found by thumbnail correlation, the small view
    that correlated and the query's other small views."""
    found_by = [candidate.view, candidate.vote_view] if candidate.similarity >= 0 else [candidate.vote_view, candidate.view]
    evidence = [view for origin in found_by if origin is not None for view in features.evidence_views(origin)]
    views = list(dict.fromkeys((*evidence, *circle_views(features.views))))
    if candidate.correlation_view is not None:
        small = [number for number in small_views(features.views) if number != candidate.correlation_view]
        views = list(dict.fromkeys((*features.evidence_views(candidate.correlation_view), *small, *views)))
    return [view for view in views if view not in candidate.tried_views]


def match_from(candidate: Candidate, reference: Reference, verdict: str, views: list | None = None) -> Match:
    """The reported match for a judged candidate and its stored reference.

    ``views`` (the query's views) name the part of the query a verified copy was found in.
    """
    check = candidate.verification if candidate.is_copy else None
    verified = check is not None and check.verified
    view = views[candidate.verified_view] if verified and views and candidate.verified_view is not None else None
    return Match(
        candidate.ref_id, reference.path, candidate.score(), verdict, candidate.similarity,
        reference.subject, reference.source_url, reference.collection, reference.sha256, reference.extra,
        inliers=check.inliers if verified else 0,
        box=tuple(round(v, 1) for v in check.box) if verified and check.box else None,
        coverage=round(check.coverage, 4) if verified else None,
        transform=_transform(check) if verified else None,
        pdq_distance=candidate.pdq_distance,
        query_view=view.name.removesuffix("+mirror") if view is not None else None,
        query_box=tuple(int(v) for v in view.box) if view is not None and view.box is not None else None,
        reference_frame=candidate.reference_frame if verified else None,
        refusal=candidate.verification.refusal if candidate.verification is not None and not candidate.is_copy else None,
        support=round(candidate.verification.support, 4) if candidate.verification is not None and candidate.verification.inliers else None,
    )


def _transform(check: Verification) -> Transform:
    matrix = tuple(round(value, 6) for value in check.transform) if check.transform else None
    return Transform(round(check.scale, 4), round(check.rotation_deg, 2), check.mirrored, check.model, matrix)
