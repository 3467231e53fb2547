"""Candidate sources: every way of proposing references for a query, behind one contract.

A source answers a :class:`QueryBatch` with, per image, the references it proposes and
its evidence for each (:class:`Hit`). :func:`provenance.search.fusion.fuse` merges the
sources' hits into one candidate per reference; verification then decides. Like
python-threatexchange's ``SignalTypeIndex``, every source has the same small life cycle:
built over an index store (:meth:`CandidateSource.from_store`), whose committed segments it
reads at every search through the store's current snapshot: nothing is built in RAM, and
a writer's commit or a followed save is seen by the next search.

Sources:

* ``vectors``: the global embeddings of every query view against every indexed region;
* ``pdq``: near-exact PDQ hashes (the 8 rotations and flips of the query);
* ``keypoints``: votes of the query's SIFT keypoints over the references' visual words
  (:mod:`provenance.search.local`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np

from ..index.store import IndexStore
from ..index.vectors import reference_ids, region_numbers


@dataclass(frozen=True)
class Hit:
    """One source's evidence that ``ref_id`` may be what a query copies.

    ``similarity``: best cosine similarity over the query's views and the reference's
    regions (vector source), with the ``view`` that gave it; ``pdq_distance``: Hamming
    distance of the closest PDQ variant (PDQ source); ``votes``: ``1 / (1 + rank)`` by the
    idf-weighted visual words shared with the query (keypoint source; its lists merge by
    rank, :mod:`.local`); ``correlation``: the best normalised
    cross-correlation of the small query view ``correlation_view`` with the reference's
    thumbnail (thumbnail source).
    """

    ref_id: int
    source: str
    similarity: float | None = None
    view: int = 0
    pdq_distance: int | None = None
    votes: float | None = None
    correlation: float | None = None
    correlation_view: int | None = None


@dataclass
class QueryBatch:
    """What sources may read about a batch of queries.

    ``vectors`` holds the embeddings of every view of every image, image after image;
    ``view_starts[i]`` is the row of image ``i``'s first view. ``features[i]`` computes
    image ``i``'s local features and hashes on demand (:class:`~provenance.matching.QueryFeatures`).
    ``regions``: the indexed regions this call searches (None: all). ``pool``: an executor
    on which a source may start work on ``features`` (``QueryFeatures.prefetch``) before
    waiting on it.
    """

    vectors: np.ndarray
    view_starts: np.ndarray
    features: Sequence[Any]
    regions: frozenset[int] | None = None
    pool: Any = None

    def __len__(self) -> int:
        return len(self.features)

    def rows(self, image: int) -> slice:
        return slice(int(self.view_starts[image]), int(self.view_starts[image + 1]))


class CandidateSource(ABC):
    """Proposes references for queries; see the module docstring for the life cycle."""

    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def from_store(cls, store: IndexStore, **options: Any) -> "CandidateSource":
        """A source over the committed contents of ``store``."""

    @abstractmethod
    def search(self, batch: QueryBatch) -> list[list[Hit]]:
        """Per image of ``batch``, the references proposed (any order, one hit per reference).

        Called beside the other sources of the same stage on other threads, with the same
        ``batch``: a source may read the batch's features and extract their keypoints (the
        same whichever thread extracts them), but must not change what another source reads.
        """


#: name -> source class; :func:`register_source` adds to it.
SOURCES: dict[str, type[CandidateSource]] = {}


def register_source(cls: type[CandidateSource]) -> type[CandidateSource]:
    """Class decorator: make a source available by its ``name``."""
    if cls.name in SOURCES:
        raise ValueError(f"candidate source {cls.name!r} registered twice")
    SOURCES[cls.name] = cls
    return cls


@register_source
class VectorSource(CandidateSource):
    """Global embeddings: the best similarity per reference over (query view, region) pairs.

    ``depth`` hits are fetched per view; ``regions`` (None: all) restricts the indexed
    regions that count (ablations: ``{0}`` is the whole-image vector alone).
    """

    name = "vectors"

    def __init__(self, store: IndexStore, depth: int, regions: frozenset[int] | None = None):
        self._store = store
        self.depth = depth
        self.regions = regions

    @classmethod
    def from_store(cls, store: IndexStore, depth: int = 32, regions: frozenset[int] | None = None, **_: Any) -> "VectorSource":
        return cls(store, depth, regions)

    def search(self, batch: QueryBatch) -> list[list[Hit]]:
        if not len(batch):
            return []
        scores, ids = self._store.snapshot.search_vectors(batch.vectors, self.depth)
        regions = batch.regions if batch.regions is not None else self.regions
        if regions is not None:
            ids = np.where(np.isin(region_numbers(ids), list(regions)), ids, -1)
        refs = reference_ids(ids)
        hits = []
        for image in range(len(batch)):
            rows = batch.rows(image)
            hits.append(_best_per_reference(scores[rows], refs[rows], self.name))
        return hits


def _best_per_reference(scores: np.ndarray, refs: np.ndarray, source: str) -> list[Hit]:
    best: dict[int, tuple[float, int]] = {}
    for view in range(scores.shape[0]):
        for score, ref_id in zip(scores[view].tolist(), refs[view].tolist()):
            if ref_id >= 0 and score > best.get(ref_id, (-2.0, 0))[0]:
                best[ref_id] = (score, view)
    return [Hit(ref_id, source, similarity=score, view=view) for ref_id, (score, view) in best.items()]


@register_source
class PdqSource(CandidateSource):
    """References whose PDQ hash is within the match threshold of a rotation or flip of the query.

    Flat, low-quality hashes are left out on both sides (each segment holds only its
    searchable hashes).
    """

    name = "pdq"

    def __init__(self, store: IndexStore, k: int = 8):
        self._store = store
        self.k = k

    @classmethod
    def from_store(cls, store: IndexStore, k: int = 8, **_: Any) -> "PdqSource":
        return cls(store, k)

    def search(self, batch: QueryBatch) -> list[list[Hit]]:
        from ..verify.pdq import MATCH_THRESHOLD

        snapshot = self._store.snapshot
        hits = []
        for features in batch.features:
            variants = features.pdq_variants()
            if not variants:
                hits.append([])
                continue
            codes = np.frombuffer(b"".join(variants), np.uint8).reshape(len(variants), 32)
            found = snapshot.search_pdq(codes, self.k, MATCH_THRESHOLD)
            hits.append([Hit(int(ref_id), self.name, pdq_distance=int(distance)) for distance, ref_id in found])
        return hits
