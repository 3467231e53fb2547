"""The keypoint vote source: references that share many visual words with the query.

A second, local-feature candidate source beside the global vectors. A copy under emoji
stickers or caption bands, or a tight crop, keeps many of the reference's SIFT keypoints
while its global embedding drifts towards other photos of similar people. Each reference
stores the visual words of its keypoints (:mod:`provenance.visual_words`); this source
keeps an inverted file of them (built on first use, like the PDQ index) and scores every
reference by the idf-weighted words it shares with the query's keypoints (plain and
mirrored; each query descriptor votes for its 4 nearest cells), normalised by the
reference's own word weight. The best :data:`~.fusion.VOTE_CANDIDATES` (the
number fusion verifies) are proposed.

The query keypoints are the ones verification extracts anyway (the whole query, and the
square inside a round avatar or a circle when the query has one).
"""

from __future__ import annotations

import threading
from typing import Any, Sequence

import numpy as np

from .. import visual_words as vw
from ..index.store import IndexStore
from .fusion import VOTE_CANDIDATES
from .sources import CandidateSource, Hit, QueryBatch, register_source
#: Query views whose keypoints vote (besides the whole query): a round avatar's inside.
VOTING_VIEWS = ("disc", "circle0")


class _InvertedFile:
    """Words -> references, as CSR arrays, with idf weights and per-reference norms."""

    def __init__(self, ref_ids: list[int], words: list[np.ndarray]):
        self.ref_ids = np.asarray(ref_ids, dtype=np.int64)
        counts = np.array([len(w) for w in words], dtype=np.int64)
        flat_words = np.concatenate(words) if words else np.zeros(0, np.int64)
        owners = np.repeat(np.arange(len(words), dtype=np.int32), counts)
        order = np.argsort(flat_words, kind="stable")
        self.postings = owners[order]  # int32: 4 bytes per (reference, word), ~1.1 KB per reference
        self.starts = np.searchsorted(flat_words[order], np.arange(vw.WORDS + 1))
        frequency = np.diff(self.starts)
        self.idf2 = np.log((len(words) + 1) / (frequency + 1)) ** 2
        self.norms = np.sqrt(np.array([self.idf2[w].sum() for w in words])) + 1e-9 if words else np.zeros(0)

    def scores(self, query_words: np.ndarray) -> np.ndarray:
        starts, ends = self.starts[query_words], self.starts[query_words + 1]
        lengths = ends - starts
        if not lengths.sum():
            return np.zeros(len(self.ref_ids))
        # every posting of every query word, gathered without a Python loop
        offsets = np.repeat(starts - np.cumsum(np.concatenate([[0], lengths[:-1]])), lengths)
        owners = self.postings[np.arange(lengths.sum()) + offsets]
        weights = np.repeat(self.idf2[query_words], lengths)
        return np.bincount(owners, weights=weights, minlength=len(self.ref_ids)) / self.norms


def _voting_views(features) -> list[int]:
    return [0] + [number for number, view in enumerate(features.views) if view.name in VOTING_VIEWS]


@register_source
class KeypointVoteSource(CandidateSource):
    """References sharing the most idf-weighted visual words with the query (see module docstring)."""

    name = "keypoints"

    def __init__(self, store: IndexStore, candidates: int = VOTE_CANDIDATES):
        self._store = store
        self.candidates = candidates
        self._lock = threading.Lock()
        self._index: _InvertedFile | None = None
        self._codebook: np.ndarray | None = None
        self._removed: set[int] = set()
        self._stale = True

    @classmethod
    def from_store(cls, store: IndexStore, candidates: int = VOTE_CANDIDATES, **_: Any) -> "KeypointVoteSource":
        return cls(store, candidates)

    def _built(self) -> _InvertedFile | None:
        with self._lock:
            if self._stale:
                text = self._store.metadata.get_state(vw.CODEBOOK_STATE)
                try:
                    self._codebook = None if text is None else vw.codebook_from_text(text)
                except ValueError as exc:
                    raise self._store.corrupt(f"the keypoint codebook is unreadable ({exc})") from None
                ref_ids, words = [], []
                if self._codebook is not None:
                    for batch in self._store.metadata.iter_blobs(vw.WORDS_BLOB):
                        for ref_id, blob in batch:
                            ref_ids.append(ref_id)
                            words.append(self._words(ref_id, blob))
                self._index = _InvertedFile(ref_ids, words) if ref_ids else None
                self._removed, self._stale = set(), False
            return self._index

    def _words(self, ref_id: int, blob: bytes) -> np.ndarray:
        try:
            return vw.words_from_bytes(blob)
        except ValueError as exc:
            raise self._store.corrupt(f"the visual words of reference {ref_id} are unreadable ({exc})") from None

    def search(self, batch: QueryBatch) -> list[list[Hit]]:
        index = self._built()
        if index is None or self._codebook is None:
            return [[] for _ in range(len(batch))]
        if batch.pool is not None:  # every image's SIFT side by side, before the first vote waits
            for features in batch.features:
                features.prefetch(_voting_views(features), batch.pool)
        return [self._vote(index, features) for features in batch.features]

    def _vote(self, index: _InvertedFile, features) -> list[Hit]:
        best = np.zeros(len(index.ref_ids))
        best_view = np.zeros(len(index.ref_ids), dtype=np.int64)
        for view in _voting_views(features):
            for keypoints in features.keypoints(view):
                if not len(keypoints):
                    continue
                scores = index.scores(vw.quantise(keypoints.root_sift, self._codebook, per_half=2).astype(np.int64))
                better = scores > best
                best[better], best_view[better] = scores[better], view
        with self._lock:
            removed = list(self._removed)
        if removed:
            best[np.isin(index.ref_ids, removed)] = 0.0
        top = np.argsort(-best, kind="stable")[: self.candidates]
        return [Hit(int(index.ref_ids[row]), self.name, view=int(best_view[row]), votes=float(best[row]))
                for row in top if best[row] > 0]

    def added(self, ref_id: int, blobs: dict[str, bytes]) -> None:
        if vw.WORDS_BLOB in blobs:
            with self._lock:
                self._stale = True  # rebuilt on the next search (a writer adds in batches)

    def removed(self, ref_ids: Sequence[int]) -> None:
        with self._lock:
            self._removed.update(int(ref_id) for ref_id in ref_ids)

    def reset(self) -> None:
        with self._lock:
            self._stale = True
