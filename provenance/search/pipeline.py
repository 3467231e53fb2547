"""Answering a batch of queries as a cascade: cheap evidence first, the expensive views only where it leaves the answer open.

0. **The whole query**, for every image: one forward pass for the batch, the vector and PDQ
   sources, and geometric verification of the first round of candidates on the query as
   given. Most copies (seven in ten of the dev eval's) are proven here, and answered.
1. **First stage**, for the images the whole query left open: the other views that cost
   little (without borders, inside a round avatar's disc, the round avatars on a page,
   the photos of a screenshot), searched the same way, and the first round again (a
   candidate verified in stage 0 is tried on the new views too).
2. **Escalation**, only for the images the first stage proved no copy for: squares
   around the detected face, the keypoint votes over the keypoints verification
   extracted already, the thumbnail correlation of small avatar views, a first round over
   the candidates these add, and (with ``verify_more``) the second round.

With ``cascade=False`` every image goes through the first stage (its cheap views searched
at once) and the escalation.

Every call works from one frozen :class:`QueryOptions`, so concurrent queries with
different settings cannot change each other's answers.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..blas import single_threaded_blas
from ..errors import BadInputError, ImageLoadError
from ..imageio import ImageSource, describe_source, load_image
from ..imagelimits import DEFAULT_LIMITS, ImageLimits
from ..matching import Candidate, QueryFeatures, match_from, verify_candidates, views_to_try
from ..regions import face_detect_side, face_views, mirror_views, query_views, whole_view
from ..results import VERDICT_NO_MATCH, QueryResult
from . import fusion
from .sources import CandidateSource, Hit, QueryBatch

#: Queries are decoded at no less than this short side (JPEG draft mode): enough for the
#: embedder after border stripping, and far faster than a full decode of a large photo.
QUERY_DECODE_SIZE = 512
#: Images of one batch prepared and verified concurrently.
JUDGE_THREADS = 2
#: Sources of the first stage; the others run in the escalation.
FIRST_STAGE_SOURCES = frozenset({"vectors", "pdq"})


@dataclass(frozen=True)
class QueryOptions:
    """What one query call searches and how it judges (see ``Engine`` for the defaults).

    ``regions``: True for every indexed region, False for the whole-image vectors alone,
    or a set of region numbers. ``face_scales``: the sizes of the query's face squares
    (the index's subject squares). ``sources``: the candidate sources consulted, by name.
    ``mirror``: also embed the views' mirror images (verification tries mirroring in any
    case). ``cascade``: answer a copy the whole query proves (stage 0), and escalate only
    the images the first stage proves no copy for.
    The thresholds are the index's (calibrated or default; ``Engine.query_options``).
    """

    similar_threshold: float
    copy_threshold: float
    mirror: bool = False
    strip_borders: bool = True
    photo_regions: bool = True
    face_scales: tuple[float, ...] = ()
    discs: bool = True
    circles: bool = True
    regions: bool | frozenset[int] = True
    sources: frozenset[str] = frozenset({"vectors", "pdq", "keypoints", "thumbnails"})
    verify: bool = True
    verify_more: bool = False
    cascade: bool = True
    limits: ImageLimits = DEFAULT_LIMITS

    def replace(self, **changes: Any) -> "QueryOptions":
        """A copy with ``changes``; an unknown name is a BadInputError."""
        unknown = set(changes) - set(self.__dataclass_fields__)
        if unknown:
            raise BadInputError(f"unknown query option(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    @property
    def searched_regions(self) -> frozenset[int] | None:
        return None if self.regions is True else frozenset({0}) if self.regions is False else frozenset(self.regions)


@dataclass
class _Query:
    """One loaded image on its way through the cascade."""

    name: str
    image: Any
    features: QueryFeatures
    hits: list[Hit]
    candidates: dict[int, Candidate] | None = None
    vectors: list[np.ndarray] = dataclasses.field(default_factory=list)  # the views' embeddings, view after view
    seconds: float = 0.0

    @property
    def settled(self) -> bool:
        return self.candidates is not None and any(candidate.is_copy for candidate in self.candidates.values())


def run_queries(store, embedder, sources: Sequence[CandidateSource], images: Sequence[ImageSource],
                top_k: int, options: QueryOptions, errors: str) -> list[Any]:
    """One result (or, with ``errors="return"``, an ImageLoadError) per image, in order."""
    started = time.perf_counter()
    by_name = {source.name: source for source in sources}
    # keypoint votes only propose candidates for verification: without it they are wasted work
    wanted = options.sources if options.verify else options.sources - {"keypoints", "thumbnails"}

    def prepare(image: ImageSource):
        try:
            decoded = load_image(image, limits=options.limits, target_size=QUERY_DECODE_SIZE).image
        except ImageLoadError as exc:
            if errors == "raise":
                raise
            return exc
        features = QueryFeatures([whole_view(decoded)])
        if options.verify:  # every verification needs the whole query's keypoints: extracted beside the model
            features.prefetch([0], pool)
        return _Query(describe_source(image), decoded, features, [])

    def cheap_views(query: _Query) -> list:
        views = query_views(query.image, mirror=options.mirror, strip=options.strip_borders,
                            photos=options.photo_regions, disc=options.discs, circles=options.circles)
        return views[1:]  # the first is the whole query again

    # the products inside are small and the pool already fills the cores: BLAS threads would spin beside it
    with single_threaded_blas(), ThreadPoolExecutor(JUDGE_THREADS) as pool:
        # decoding, view crops and resizing release the GIL too: a batch prepares images side by side
        outcomes: list = list((pool.map if len(images) > 1 else map)(prepare, images))
        queries = [outcome for outcome in outcomes if isinstance(outcome, _Query)]
        first = [by_name[name] for name in by_name if name in wanted & FIRST_STAGE_SOURCES]
        staged = options.verify and options.cascade  # the whole query alone settles most copies
        if staged:
            _search(queries, [query.features.views for query in queries], embedder, first, options, pool)
            _judge_all(queries, store, options, pool, fusion.first_round)
        pending = [query for query in queries if not (staged and query.settled)]
        added = list((pool.map if len(pending) > 1 else map)(cheap_views, pending))
        for query, views in zip(pending, added):
            query.features.views.extend(views)
        _search(pending, added if staged else [query.features.views for query in pending], embedder, first, options, pool)
        _judge_all(pending, store, options, pool, fusion.first_round, retry=_has_new_views)
        escalated = [query for query in queries if options.verify and (not options.cascade or not query.settled)]
        if escalated:
            vectors = [by_name["vectors"]] if "vectors" in wanted and "vectors" in by_name else []
            later = [by_name[name] for name in ("keypoints", "thumbnails") if name in wanted and name in by_name]
            _escalate(escalated, embedder, vectors, later, store, options, pool)
        results = [_result(store, query, top_k, options) for query in queries]
    # decoding, embedding and search are shared by the batch; verification may overlap
    shared = max(0.0, time.perf_counter() - started - sum(query.seconds for query in queries)) / max(1, len(queries))
    answered = iter(results)
    return [dataclasses.replace(next(answered), seconds=outcome.seconds + shared) if isinstance(outcome, _Query)
            else outcome for outcome in outcomes]


def _search(queries: list[_Query], new_views: list[list], embedder, sources, options: QueryOptions, pool) -> None:
    """Embed each query's ``new_views`` (already appended to its features) in one forward pass
    and add the sources' hits, their view numbers counted in the query's whole view list."""
    counts = [len(views) for views in new_views]
    if not sources or not sum(counts):
        return
    arrays = [embedder.preprocessing.to_array(view.embedding_image) for views in new_views for view in views]
    vectors = embedder.embed_arrays(np.stack(arrays))
    starts = np.cumsum([0] + counts)
    for query, begin, end in zip(queries, starts[:-1], starts[1:]):
        query.vectors.append(vectors[begin:end])
    batch = QueryBatch(vectors, starts, [query.features for query in queries], options.searched_regions, pool)
    for source_hits in _search_sources(sources, batch):
        for query, count, hits in zip(queries, counts, source_hits):
            offset = len(query.features.views) - count
            query.hits += [dataclasses.replace(hit, view=hit.view + offset) for hit in hits] if offset else hits


def _escalate(queries: list[_Query], embedder, vector_sources, later_sources, store, options: QueryOptions, pool) -> None:
    """The second stage (module docstring) for ``queries``: face views searched by the vector
    source, the ``later_sources`` (keypoint votes, thumbnail correlation) over every view,
    then verification of what they add (and, with ``verify_more``, the second round)."""
    def more_views(query: _Query) -> list:
        views = face_views(query.image, options.face_scales, face_detect_side(query.features.views))
        return views + (mirror_views(views) if options.mirror else [])

    added = list((pool.map if len(queries) > 1 else map)(more_views, queries))
    for query, views in zip(queries, added):
        query.features.views.extend(views)
    _search(queries, added, embedder, vector_sources, options, pool)
    if later_sources:
        batch = _all_views_batch(queries, embedder.dim, options, pool)
        for source_hits in _search_sources(later_sources, batch):
            for query, hits in zip(queries, source_hits):
                query.hits += hits
    _judge_all(queries, store, options, pool, _second_stage_round(options))


def _search_sources(sources: Sequence[CandidateSource], batch: QueryBatch) -> list[list[list[Hit]]]:
    """Each source's hits for ``batch``, in the order of ``sources``. The sources search side by
    side: each spends most of its time in FAISS, numpy or OpenCV, which release the GIL, and
    alone it keeps one core busy. Each gets a thread of its own, not one of the batch's pool,
    whose tasks (keypoint extraction, correlation) it may wait on."""
    if len(sources) < 2:
        return [source.search(batch) for source in sources]
    with ThreadPoolExecutor(len(sources) - 1) as helpers:
        later = [helpers.submit(source.search, batch) for source in sources[1:]]
        first = sources[0].search(batch)
        return [first] + [future.result() for future in later]


def _all_views_batch(queries: list[_Query], dim: int, options: QueryOptions, pool) -> QueryBatch:
    """A batch whose rows are each image's views in order (row ``r`` of an image is its view
    ``r``); an image whose views were not all embedded (no vector source) gets no rows."""
    stacked = []
    for query in queries:
        vectors = np.concatenate(query.vectors) if query.vectors else np.zeros((0, dim), np.float32)
        stacked.append(vectors if len(vectors) == len(query.features.views) else vectors[:0])
    starts = np.cumsum([0] + [len(vectors) for vectors in stacked])
    return QueryBatch(np.concatenate(stacked) if stacked else np.zeros((0, dim), np.float32), starts,
                      [query.features for query in queries], options.searched_regions, pool)


def _second_stage_round(options: QueryOptions):
    def rounds(ranked: list[Candidate]) -> list[Candidate]:
        chosen = [candidate for candidate in fusion.first_round(ranked) if candidate.verification is None]
        if options.verify_more and not any(candidate.is_copy for candidate in ranked):
            chosen += [candidate for candidate in fusion.second_round(ranked) if candidate not in chosen]
        if not any(candidate.is_copy for candidate in ranked):
            chosen += [candidate for candidate in fusion.correlated(ranked) if candidate not in chosen]
        return chosen
    return rounds


def _has_new_views(candidate: Candidate, features: QueryFeatures) -> bool:
    """Whether a candidate verified before (and not proven) has views it was not tried on."""
    return bool(views_to_try(candidate, features))


def _correlated_on_new_views(candidate: Candidate, features: QueryFeatures) -> bool:
    """Whether a candidate verified before is to be tried again: on the small view its thumbnail correlated on."""
    return candidate.correlation_view is not None and bool(views_to_try(candidate, features))


def _judge_all(queries: list[_Query], store, options: QueryOptions, pool, choose, retry=_correlated_on_new_views) -> None:
    def judge(query: _Query, inner_pool=None) -> None:
        began = time.perf_counter()
        fused = fusion.fuse(query.hits)
        if query.candidates is not None:  # keep what an earlier stage verified
            for ref_id, candidate in fused.items():
                earlier = query.candidates.get(ref_id)
                if earlier is not None and earlier.verification is not None:
                    candidate.verification, candidate.verified_view = earlier.verification, earlier.verified_view
                    candidate.reference_frame, candidate.tried_views = earlier.reference_frame, earlier.tried_views
        query.candidates = fused
        if options.verify:
            ranked = fusion.by_similarity(fused)
            # ``retry``: which candidates verified before are tried again on views they were not tried on
            pending = [candidate for candidate in choose(ranked) if candidate.verification is None
                       or (not candidate.is_copy and retry(candidate, query.features))]
            verify_candidates(pending, query.features, store.load_keypoints, inner_pool)
        query.seconds += time.perf_counter() - began

    # keypoints and RANSAC release the GIL: a batch verifies images side by side, a single image its candidates
    if len(queries) > 1:
        list(pool.map(judge, queries))
    elif queries:
        judge(queries[0], pool)


def _result(store, query: _Query, top_k: int, options: QueryOptions) -> QueryResult:
    candidates = query.candidates or {}
    best = sorted(candidates.values(), key=lambda candidate: (-candidate.score(), candidate.ref_id))[:top_k]
    references = store.metadata.get(candidate.ref_id for candidate in best)
    matches = []
    for candidate in best:
        reference = references.get(candidate.ref_id)
        if reference is None:  # removed after the search started
            continue
        verdict = candidate.verdict(options.similar_threshold, options.copy_threshold)
        matches.append(match_from(candidate, reference, verdict, query.features.views))
    thresholds = {"similar": options.similar_threshold, "copy": options.copy_threshold}
    return QueryResult(query.name, matches[0].verdict if matches else VERDICT_NO_MATCH, matches,
                       query_size=query.features.views[0].image.size, thresholds=thresholds, seconds=query.seconds)
