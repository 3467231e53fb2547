"""One committed state of an index as queries read it: live segments, tombstones, word statistics.

A :class:`Snapshot` never changes. A reader that follows a writer opens a new one (reusing
the segments both share) and swaps it in; queries that started on the old one finish on
it, so no query ever waits for a reload or sees half of one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterator, Sequence

import numpy as np

from .. import visual_words as vw
from .codecs import Codecs
from .ivf import depth_for
from .segment_writer import idf_squared
from .segments import Segment
from .vectors import MAX_REGIONS, reference_ids

#: Candidates re-scored per query vector across the large segments, in units of
#: :func:`~.ivf.depth_for`: the fast-scan codes (8 dimensions per 4-bit code) rank coarsely,
#: and at a million padded references twice that depth kept recall@10 above 0.99 (0.985 at once).
POOLED_DEPTH = 2
#: Postings a query's word set may gather for its votes (:meth:`Snapshot.informative`).
VOTE_POSTINGS = 1 << 18


@dataclass(frozen=True, eq=False)
class Snapshot:
    """The live segments (oldest first), the removed references (sorted) and the codecs of one generation."""

    generation: int
    segments: tuple[Segment, ...]
    removed: np.ndarray
    references: int
    codecs: Codecs | None
    vector_count: int = 0
    ivf: Any = None  # the IVF codec of the large segments' companions (provenance.index.ivf), if trained

    # -- vectors -------------------------------------------------------------------------
    def search_vectors(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (inner products, vector ids) per query over every live vector, best first."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        # removed references may fill some of a segment's hits: fetch that many more
        depth = k + min(k, MAX_REGIONS * len(self.removed))
        parts = [segment.search_vectors(queries, depth) for segment in self.segments if len(segment) and not segment.approximate]
        approximate = [segment for segment in self.segments if segment.approximate]
        if approximate:
            parts.append(self._approximate_search(queries, approximate, max(depth, POOLED_DEPTH * depth_for(self.vector_count))))
        if not parts:
            return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
        scores = np.concatenate([part[0] for part in parts], axis=1)
        ids = np.concatenate([part[1] for part in parts], axis=1)
        if len(self.removed):
            hidden = np.isin(reference_ids(ids), self.removed)
            scores, ids = np.where(hidden, -np.inf, scores), np.where(hidden, -1, ids)
        # ties go to the smaller id, whatever the segment order
        order = np.lexsort((ids, -scores), axis=1)[:, :k] if ids.size else np.zeros((len(queries), 0), np.int64)
        top_scores = np.take_along_axis(scores, order, axis=1)
        top_ids = np.take_along_axis(ids, order, axis=1)
        top_ids[~np.isfinite(top_scores)] = -1
        return top_scores.astype(np.float32), top_ids.astype(np.int64)

    def _approximate_search(self, queries: np.ndarray, segments: list[Segment], depth: int) -> tuple[np.ndarray, np.ndarray]:
        """The large segments' IVF candidates, pooled: the best ``depth`` per query by their
        approximate scores over all those segments (one codec: the scores compare), then
        re-scored from the segments' codes. The same depth as one index of the collection
        would use, however many segments hold it."""
        lists = segments[0].coarse_lists(queries)  # one codec, one coarse quantiser: assigned once
        found = [segment.ivf_candidates(queries, depth, lists) for segment in segments]
        approximate = np.concatenate([scores for scores, _ in found], axis=1)
        rows = np.concatenate([candidates for _, candidates in found], axis=1)
        owner = np.concatenate([np.full(candidates.shape, number) for number, (_, candidates) in enumerate(found)], axis=1)
        keep = min(depth, approximate.shape[1])
        best = np.argpartition(-approximate, keep - 1, axis=1)[:, :keep]
        rows, owner = np.take_along_axis(rows, best, axis=1), np.take_along_axis(owner, best, axis=1)
        exact = np.full(rows.shape, -np.inf, np.float32)
        ids = np.full(rows.shape, -1, np.int64)
        query_of = np.broadcast_to(np.arange(len(queries))[:, None], rows.shape)
        for number, segment in enumerate(segments):
            mine = (owner == number) & (rows >= 0)
            if mine.any():
                exact[mine] = segment.rescore(queries, query_of[mine], rows[mine])
                ids[mine] = segment.vector_ids[rows[mine]]
        return exact, ids

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Every live ``(vector id, float32 vector)``, by ascending id, decoded from the codes."""
        ids, blocks = [], []
        for segment in self.segments:
            rows = np.flatnonzero(~np.isin(reference_ids(segment.vector_ids), self.removed))
            ids.append(segment.vector_ids[rows])
            blocks.append(segment.decode_vectors(rows))
        if not ids:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        all_ids, all_vectors = np.concatenate(ids), np.concatenate(blocks)
        order = np.argsort(all_ids, kind="stable")
        return all_ids[order], all_vectors[order]

    # -- hashes --------------------------------------------------------------------------
    def search_pdq(self, variants: np.ndarray, k: int, max_distance: int) -> list[tuple[int, int]]:
        """(distance, reference id), nearest first, at most ``k`` references, each once."""
        best: dict[int, int] = {}
        for segment in self.segments:
            for distance, ref_id in segment.search_pdq(variants, k * len(variants), max_distance):
                if distance < best.get(ref_id, 1 << 30):
                    best[ref_id] = distance
        alive = [(distance, ref_id) for ref_id, distance in best.items() if not self.is_removed(ref_id)]
        return sorted(alive)[:k]

    def pdq_hashes(self) -> Iterator[tuple[int, bytes]]:
        """(reference id, 33 bytes of hash and quality) of every live reference, by segment."""
        for segment in self.segments:
            rows = segment.pdq_rows()
            for row, ref_id in enumerate(segment.refs.tolist()):
                if not self.is_removed(ref_id):
                    yield ref_id, rows[row].tobytes()

    # -- words ---------------------------------------------------------------------------
    @cached_property
    def document_frequency(self) -> np.ndarray:
        total = np.zeros(vw.WORDS, np.int64)
        for segment in self.segments:
            total += segment.document_frequency
        return total

    @cached_property
    def word_weights(self) -> np.ndarray:
        """Squared idf of every visual word over the live collection."""
        return idf_squared(self.document_frequency, self.references)

    def vote(self, query_words: Sequence[np.ndarray], candidates: int) -> list[tuple[int, float, int]]:
        """(reference id, score, which word set) of the ``candidates`` references sharing the most
        idf-weighted words with the best of ``query_words`` (several sets: views, mirrors)."""
        weights = self.word_weights
        query_words = [self.informative(words) for words in query_words]
        found: list[tuple[float, int, int]] = []
        for segment in self.segments:
            if not query_words or not len(segment):
                continue
            scores = np.stack([segment.word_scores(words, weights) for words in query_words])
            best = scores.max(axis=0)
            if len(self.removed):
                best[np.isin(segment.refs, self.removed)] = 0.0
            rows = _best_rows(best, candidates)
            which = scores[:, rows].argmax(axis=0)  # the first set with the highest score: ties go to the earlier set
            found += [(float(best[row]), int(segment.refs[row]), int(number)) for row, number in zip(rows, which)]
        found.sort(key=lambda item: (-item[0], item[1]))
        return [(ref_id, score, which) for score, ref_id, which in found[:candidates]]

    def informative(self, words: np.ndarray) -> np.ndarray:
        """The rarest of ``words`` whose postings add up to at most :data:`VOTE_POSTINGS`.

        A posting list grows with the collection (about 7,000 references per word at a million),
        so a word set's votes would cost in proportion to it; the rarest words carry the largest
        idf weights, so a query keeps them and drops the common ones first. In a small index
        every word stays.
        """
        frequency = self.document_frequency[words.astype(np.int64)]
        if frequency.sum() <= VOTE_POSTINGS:
            return words
        order = np.argsort(frequency, kind="stable")
        kept = order[np.cumsum(frequency[order]) <= VOTE_POSTINGS]
        return np.sort(words[kept])

    # -- per reference -------------------------------------------------------------------
    def is_removed(self, ref_id: int) -> bool:
        position = int(np.searchsorted(self.removed, ref_id))
        return position < len(self.removed) and int(self.removed[position]) == ref_id

    def locate(self, ref_id: int) -> tuple[Segment, int] | None:
        """The segment and row holding a live reference."""
        if self.is_removed(ref_id):
            return None
        for segment in self.segments:
            info = segment.info
            if info["first"] <= ref_id <= info["last"]:
                row = segment.row_of(ref_id)
                if row is not None:
                    return segment, row
        return None

    def local_features(self, ref_id: int):
        """The stored keypoints of a live reference, decoded, or None (see :mod:`provenance.features`)."""
        from ..features import decode_local_features

        found = self.locate(ref_id)
        if found is None:
            return None
        segment, row = found
        return decode_local_features(segment.features(row), self.codecs if segment.info["codec"] != "raw" else None)

    def reference_data(self, ref_id: int) -> dict[str, bytes] | None:
        """What a live reference's segment stores besides its vectors: the local-feature record
        (``features``), the hash with its quality (``pdq``) and the thumbnail (``thumb``)."""
        found = self.locate(ref_id)
        if found is None:
            return None
        segment, row = found
        return {"features": segment.features(row), "pdq": segment.pdq_rows()[row].tobytes(), "thumb": segment.thumbnail(row)}

    def thumbnail(self, ref_id: int) -> bytes | None:
        found = self.locate(ref_id)
        return None if found is None else (found[0].thumbnail(found[1]) or None)

    def pdq(self, ref_id: int) -> bytes | None:
        found = self.locate(ref_id)
        return None if found is None else found[0].pdq_rows()[found[1]].tobytes()


def _best_rows(scores: np.ndarray, count: int) -> np.ndarray:
    """The rows of the ``count`` highest positive ``scores``, best first, ties by row: what a
    stable sort of the whole segment gives, without sorting a million rows' zeros."""
    rows = np.flatnonzero(scores > 0)
    if len(rows) > count > 0:
        kept = scores[rows]
        cut = np.partition(kept, len(rows) - count)[len(rows) - count]  # the count-th highest
        tied = rows[kept == cut][: count - int((kept > cut).sum())]
        rows = np.concatenate([rows[kept > cut], tied])
    elif count <= 0:
        return rows[:0]
    return rows[np.lexsort((rows, -scores[rows]))]
