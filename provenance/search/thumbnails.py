"""Thumbnail correlation: the candidate source for small avatars that embed close to hundreds of faces.

A 32-64 px avatar, upscaled by the screenshot that shows it, keeps little that an
embedding can tell apart: its true reference embeds at 0.65-0.87 to it and ranks behind
other photos of similar-looking people. Its pixels still say which photograph it is.
This source takes the query's small square views (an avatar's photo box or disc, a small
circle on a page, or a small query as a whole), fetches their nearest :data:`CORRELATED_REFERENCES` references by
vector similarity, and correlates the view's centre (grey, :data:`TEMPLATE_SIDE` px, plain
and mirrored) with each candidate's stored thumbnail at every position over
:data:`SCALES` sizes. Fusion sends the best-correlated few to geometric verification,
which alone decides a copy: a correlation is a reason to look, not evidence.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..index.vectors import reference_ids, region_numbers
from ..regions import on_a_page, small_views
from .sources import CandidateSource, Hit, QueryBatch, register_source

#: The share of a small view's side correlated: its centre, which a round avatar's mask,
#: its outline and the page around it leave alone.
TEMPLATE_SHARE = 0.7
#: The template's side in pixels: about the detail a 32-64 px avatar keeps.
TEMPLATE_SIDE = 24
#: The template's side as a share of the thumbnail's shorter side, from an avatar cut
#: from a quarter of the photo to one that is nearly all of it (geometric steps of ~14 %).
SCALES = tuple(float(value) for value in np.geomspace(0.25, 0.95, 11))
#: The coarse pass's sizes (:data:`REFINED_REFERENCES`): fewer, ~25 % apart.
COARSE_SCALES = SCALES[::2]
#: References correlated per query: the nearest by vector similarity over its small views.
CORRELATED_REFERENCES = 96
#: Every candidate is first correlated at half resolution (a template of half the side
#: over half-size levels: a sixteenth of the work); the best this many again at full.
REFINED_REFERENCES = 8
#: A template with less grey-level spread than this (0-255) is flat: nothing to correlate.
MIN_TEMPLATE_STD = 4.0
#: A small view whose template lies this much (share of its area) inside a larger one's
#: shows the same avatar and is left out (a photo box's centre holds its inscribed square's).
SAME_AVATAR_INSIDE = 0.8


def template_box(view) -> tuple[float, float, float, float]:
    """Where a small view's template is cut from, in the view's pixels (its centre)."""
    width, height = view.image.size
    side = TEMPLATE_SHARE * min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


def view_templates(views: Sequence[Any], numbers: Sequence[int]) -> list[tuple[int, np.ndarray]]:
    """(view number, grey template at :data:`TEMPLATE_SIDE` px) for each distinct avatar among
    the small views ``numbers``, largest first; flat templates are left out."""
    placed = []
    for number in numbers:
        x0, y0, x1, y1 = template_box(views[number])
        ox, oy = views[number].box[:2] if views[number].box is not None else (0, 0)
        placed.append((x1 - x0, number, (x0 + ox, y0 + oy, x1 + ox, y1 + oy)))
    kept: list[tuple[int, tuple]] = []
    for _, number, box in sorted(placed, key=lambda item: (-item[0], item[1])):
        if all(_inside(box, other) < SAME_AVATAR_INSIDE for _, other in kept):
            kept.append((number, box))
    chosen = []
    for number, _ in kept:
        grey = views[number].image.convert("L")
        template = np.asarray(grey.resize((TEMPLATE_SIDE, TEMPLATE_SIDE), Image.Resampling.LANCZOS,
                                          box=template_box(views[number])), dtype=np.float32)
        if float(template.std()) >= MIN_TEMPLATE_STD:
            chosen.append((number, template))
    return chosen


def _inside(box, other) -> float:
    """The share of ``box``'s area that lies inside ``other``."""
    width = max(0.0, min(box[2], other[2]) - max(box[0], other[0]))
    height = max(0.0, min(box[3], other[3]) - max(box[1], other[1]))
    return width * height / max(1e-9, (box[2] - box[0]) * (box[3] - box[1]))


def thumbnail_levels(thumbnail: bytes, template_side: int, scales: Sequence[float] = SCALES,
                     coarse: bool = False) -> list[np.ndarray]:
    """A stored thumbnail in grey, resized so that a ``template_side`` template spans each
    of ``scales`` of its shorter side (an empty list when it does not decode); ``coarse``
    decodes it at half size, which is all a half-size template needs."""
    import cv2

    mode = cv2.IMREAD_REDUCED_GRAYSCALE_2 if coarse else cv2.IMREAD_GRAYSCALE
    grey = cv2.imdecode(np.frombuffer(thumbnail, np.uint8), mode)
    if grey is None:
        return []
    height, width = grey.shape
    levels = []
    for share in scales:
        factor = template_side / (share * min(width, height))
        size = (max(template_side, round(width * factor)), max(template_side, round(height * factor)))
        levels.append(cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.float32))
    return levels


def best_correlation(templates: Sequence[np.ndarray], levels: Sequence[np.ndarray]) -> tuple[float, int]:
    """The highest normalised cross-correlation of any template at any position and level,
    with the number of the template that reached it (-1, 0 when there is no level)."""
    import cv2

    best, which = -1.0, 0
    for number, template in enumerate(templates):
        for level in levels:
            value = float(cv2.matchTemplate(level, template, cv2.TM_CCOEFF_NORMED).max())
            if value > best:
                best, which = value, number
    return best, which


def _with_mirrors(templates: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [variant for template in templates for variant in (template, np.ascontiguousarray(template[:, ::-1]))]


def _halved(template: np.ndarray) -> np.ndarray:
    import cv2

    side = template.shape[0] // 2
    return cv2.resize(template, (side, side), interpolation=cv2.INTER_AREA)


def starts_source(views: Sequence[Any], embedded: int) -> bool:
    """Whether a query with these ``views`` (the first ``embedded`` of them embedded) is
    correlated: it has a small photo box, or it is a page with a small circle."""
    # on a photo a circle is texture (query_views cuts circles on pages only; a view list
    # made by hand may hold one); on a page a circle is an avatar's outline
    if any(number < embedded for number in small_views(views, circles=False)):
        return True
    return on_a_page(views) and any(number < embedded for number in small_views(views))


@register_source
class ThumbnailSource(CandidateSource):
    """Correlation of a query's small views with its nearest references' thumbnails (module docstring)."""

    name = "thumbnails"

    def __init__(self, store, references: int = CORRELATED_REFERENCES, refined: int = REFINED_REFERENCES):
        self._store = store
        self.references = references
        self.refined = refined

    @classmethod
    def from_store(cls, store, references: int = CORRELATED_REFERENCES, **options: Any) -> "ThumbnailSource":
        return cls(store, references)

    def search(self, batch: QueryBatch) -> list[list[Hit]]:
        """Rows of ``batch`` are the images' views in order (row ``r`` is view ``r``)."""
        hits = []
        for image, features in enumerate(batch.features):
            rows = batch.rows(image)
            numbers = [number for number in small_views(features.views) if number < rows.stop - rows.start]
            started = starts_source(features.views, rows.stop - rows.start)
            templates = view_templates(features.views, numbers) if started else []
            if not templates:
                hits.append([])
                continue
            nearest = self._nearest(batch.vectors[rows][numbers], numbers, batch.regions)
            hits.append(self._correlate(nearest, templates, batch.pool))
        return hits

    def _nearest(self, vectors: np.ndarray, numbers: list[int], regions) -> dict[int, tuple[float, int]]:
        """The references nearest to the small views: ref_id -> (best similarity, its view)."""
        # each reference holds several vectors (its regions): fetch enough for ``references``
        scores, ids = self._store.snapshot.search_vectors(vectors, 3 * self.references)
        if regions is not None:
            ids = np.where(np.isin(region_numbers(ids), list(regions)), ids, -1)
        nearest: dict[int, tuple[float, int]] = {}
        for row, number in enumerate(numbers):
            for score, ref_id in zip(scores[row].tolist(), reference_ids(ids[row]).tolist()):
                if ref_id >= 0 and score > nearest.get(ref_id, (-2.0, 0))[0]:
                    nearest[ref_id] = (score, number)
        ranked = sorted(nearest, key=lambda ref_id: (-nearest[ref_id][0], ref_id))[: self.references]
        return {ref_id: nearest[ref_id] for ref_id in ranked}

    def _correlate(self, nearest: dict[int, tuple[float, int]], templates, pool) -> list[Hit]:
        owners = [number for number, _ in templates for _ in range(2)]
        full = _with_mirrors([template for _, template in templates])
        coarse = [_halved(template) for template in full]
        thumbnails = {ref_id: self._store.snapshot.thumbnail(ref_id) for ref_id in nearest}

        def first_pass(ref_id: int) -> float:
            levels = thumbnail_levels(thumbnails[ref_id], coarse[0].shape[0], COARSE_SCALES, coarse=True)
            return best_correlation(coarse, levels)[0]

        def second_pass(ref_id: int) -> tuple[float, int]:
            return best_correlation(full, thumbnail_levels(thumbnails[ref_id], TEMPLATE_SIDE))

        run = map if pool is None else pool.map
        candidates = [ref_id for ref_id in nearest if thumbnails[ref_id]]
        rough = dict(zip(candidates, run(first_pass, candidates)))
        best = sorted(candidates, key=lambda ref_id: (-rough[ref_id], ref_id))[: self.refined]
        hits = []
        for ref_id, (correlation, which) in zip(best, run(second_pass, best)):
            similarity, view = nearest[ref_id]
            hits.append(Hit(ref_id, self.name, similarity=similarity, view=view, correlation=correlation,
                            correlation_view=owners[which]))
        return hits
