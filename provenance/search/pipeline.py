"""Answering a batch of queries: views, one forward pass, the candidate sources, fusion, verification.

Every call works from one frozen :class:`QueryOptions`, so concurrent queries with different
settings cannot change each other's answers.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import BadInputError, ImageLoadError
from ..imageio import ImageSource, describe_source, load_image
from ..imagelimits import DEFAULT_LIMITS, ImageLimits
from ..index.store import IndexStore
from ..matching import Candidate, QueryFeatures, match_from, verify_candidates
from ..regions import query_views
from ..results import VERDICT_NO_MATCH, QueryResult
from . import fusion
from .sources import CandidateSource, QueryBatch

#: Queries are decoded at no less than this short side (JPEG draft mode): enough for the
#: embedder after border stripping, and far faster than a full decode of a large photo.
QUERY_DECODE_SIZE = 512
#: Images of one batch prepared and verified concurrently.
JUDGE_THREADS = 2


@dataclass(frozen=True)
class QueryOptions:
    """What one query call searches and how it judges (see ``Engine`` for the defaults).

    ``regions``: True for every indexed region, False for the whole-image vectors alone,
    or a set of region numbers. ``face_scales``: the sizes of the query's face squares
    (the index's subject squares). ``sources``: the candidate sources consulted, by name.
    The thresholds are the index's (calibrated or default; ``Engine.query_options``).
    """

    similar_threshold: float
    copy_threshold: float
    mirror: bool = True
    strip_borders: bool = True
    photo_regions: bool = True
    face_scales: tuple[float, ...] = ()
    discs: bool = True
    circles: bool = True
    regions: bool | frozenset[int] = True
    sources: frozenset[str] = frozenset({"vectors", "pdq", "keypoints"})
    verify: bool = True
    verify_more: bool = True
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


def run_queries(store: IndexStore, embedder, sources: Sequence[CandidateSource], images: Sequence[ImageSource],
                top_k: int, options: QueryOptions, errors: str) -> list[Any]:
    """One result (or, with ``errors="return"``, an ImageLoadError) per image, in order."""
    started = time.perf_counter()
    # keypoint votes only propose candidates for verification: without it they are wasted work
    wanted = options.sources if options.verify else options.sources - {"keypoints"}
    active = [source for source in sources if source.name in wanted]

    def prepare(image: ImageSource):
        try:
            decoded = load_image(image, limits=options.limits, target_size=QUERY_DECODE_SIZE).image
            views = query_views(decoded, mirror=options.mirror,
                                strip=options.strip_borders, photos=options.photo_regions,
                                face_scales=options.face_scales, disc=options.discs, circles=options.circles)
        except ImageLoadError as exc:
            if errors == "raise":
                raise
            return exc
        return views, np.stack([embedder.preprocessing.to_array(view.image) for view in views])

    with ThreadPoolExecutor(JUDGE_THREADS) as pool:
        # decoding, view crops and resizing release the GIL too: a batch prepares images side by side
        outcomes: list = list((pool.map if len(images) > 1 else map)(prepare, images))
        loaded = [number for number, outcome in enumerate(outcomes) if not isinstance(outcome, ImageLoadError)]
        features = [QueryFeatures(outcomes[number][0]) for number in loaded]
        if loaded:
            vectors = embedder.embed_arrays(np.concatenate([outcomes[number][1] for number in loaded]))
            starts = np.cumsum([0] + [len(image_features.views) for image_features in features])
            batch = QueryBatch(vectors, starts, features, options.searched_regions, pool)
            # in registration order: vectors, then PDQ, then the keypoint votes, which start
            # SIFT threads (beside them FAISS's threads searching the hashes only compete)
            hits = [source.search(batch) for source in active]

        def judge(position: int, pool: ThreadPoolExecutor | None = None) -> QueryResult:
            query_started = time.perf_counter()
            candidates = fusion.fuse(hit for per_source in hits for hit in per_source[position])
            name = describe_source(images[loaded[position]])
            result = _judge(store, name, features[position], candidates, top_k, options, pool)
            return _with_seconds(result, time.perf_counter() - query_started)

        # keypoints and RANSAC release the GIL: a batch verifies images side by side, a
        # single image its candidates
        if len(loaded) > 1:
            results = list(pool.map(judge, range(len(loaded))))
        else:
            results = [judge(0, pool)] if loaded else []
    # decoding, embedding and search are shared by the batch; verification may overlap
    shared = max(0.0, time.perf_counter() - started - sum(result.seconds for result in results)) / max(1, len(loaded))
    for number, result in zip(loaded, results):
        outcomes[number] = _with_seconds(result, result.seconds + shared)
    return outcomes


def _judge(store: IndexStore, name: str, features: QueryFeatures, candidates: dict[int, Candidate], top_k: int,
           options: QueryOptions, pool: ThreadPoolExecutor | None) -> QueryResult:
    if options.verify:
        ranked = fusion.by_similarity(candidates)
        verify_candidates(fusion.first_round(ranked), features, store.load_keypoints, pool)
        if options.verify_more:
            verify_candidates(fusion.second_round(ranked), features, store.load_keypoints, pool)
    best = sorted(candidates.values(), key=lambda candidate: (-candidate.score(), candidate.ref_id))[:top_k]
    references = store.metadata.get(candidate.ref_id for candidate in best)
    matches = []
    for candidate in best:
        reference = references.get(candidate.ref_id)
        if reference is None:  # removed after the search started
            continue
        verdict = candidate.verdict(options.similar_threshold, options.copy_threshold)
        matches.append(match_from(candidate, reference, verdict, features.views))
    thresholds = {"similar": options.similar_threshold, "copy": options.copy_threshold}
    return QueryResult(name, matches[0].verdict if matches else VERDICT_NO_MATCH, matches,
                       query_size=features.views[0].image.size, thresholds=thresholds)


def _with_seconds(result: QueryResult, seconds: float) -> QueryResult:
    return dataclasses.replace(result, seconds=seconds)
