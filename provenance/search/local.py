"""The keypoint vote source: references that share many visual words with the query.

A second, local-feature candidate source beside the global vectors. A copy under emoji
stickers or caption bands, or a tight crop, keeps many of the reference's SIFT keypoints
while its global embedding drifts towards other photos of similar people. Each segment
keeps the postings of its references' visual words (:mod:`provenance.visual_words`,
:mod:`provenance.index.segments`); this source scores every reference by the idf-weighted
words it shares with the query's keypoints (plain and mirrored; each query descriptor
votes for its 4 nearest cells), normalised by the reference's own word weight. The best
:data:`~.fusion.VOTE_CANDIDATES` of each list (below) are proposed.

The query keypoints are the ones verification extracts anyway: the whole query, the
square inside a round avatar or a circle when the query has one, and the query's small
photo boxes (an avatar on a screenshot). Each view votes on its own list, and the
lists merge by rank, the whole query's first: a 60 px avatar shares a few dozen words
with its reference, which no whole screenshot's score would let through, while its own
list often puts the reference first or second. Fusion verifies the first
:data:`~.fusion.VOTE_LIST_DEPTH` of every list, on the view that voted.

A query with caption bands (:mod:`provenance.verify.captions`) votes twice: with all its
keypoints, and with the whole query's keypoints outside the bands, whose letters would vote
for every reference that holds text. A strip the detector takes for a band may be the photo
itself (a profile page's avatar between two full-width edges of the page), so neither vote
replaces the other: a hit's votes are its reciprocal rank in its list, the band-free list
half a place ahead (its keypoints are the ones that can match a reference), and the best of
both reach verification: the band-free first, the full list's first, the band-free second.
"""

from __future__ import annotations

from typing import Any

from .. import visual_words as vw
from ..index.store import IndexStore
from ..regions import PHOTO_VIEW, small_views
from ..verify.captions import caption_bands, outside_bands
from .fusion import VOTE_CANDIDATES
from .sources import CandidateSource, Hit, QueryBatch, register_source

#: Query views whose keypoints vote (besides the whole query): a round avatar's inside.
VOTING_VIEWS = ("disc", "circle0")


def _voting_views(features) -> list[int]:
    named = [number for number, view in enumerate(features.views) if view.name in VOTING_VIEWS]
    # a small photo box is an avatar on a page; further circles are mostly a page's icons
    avatars = [number for number in small_views(features.views) if features.views[number].name.startswith(PHOTO_VIEW)]
    return list(dict.fromkeys([0, *named, *avatars]))


@register_source
class KeypointVoteSource(CandidateSource):
    """References sharing the most idf-weighted visual words with the query (see module docstring)."""

    name = "keypoints"

    def __init__(self, store: IndexStore, candidates: int = VOTE_CANDIDATES):
        self._store = store
        self.candidates = candidates

    @classmethod
    def from_store(cls, store: IndexStore, candidates: int = VOTE_CANDIDATES, **_: Any) -> "KeypointVoteSource":
        return cls(store, candidates)

    def search(self, batch: QueryBatch) -> list[list[Hit]]:
        snapshot = self._store.snapshot
        if snapshot.codecs is None:  # no codebook yet: no words stored
            return [[] for _ in range(len(batch))]
        if batch.pool is not None:  # every image's SIFT side by side, before the first vote waits
            for features in batch.features:
                features.prefetch(_voting_views(features), batch.pool)
        return [self._vote(snapshot, features) for features in batch.features]

    def _vote(self, snapshot, features) -> list[Hit]:
        voting = [view for view in _voting_views(features) if any(len(keypoints) for keypoints in features.keypoints(view))]
        if not voting:
            return []
        plain, mirrored = features.keypoints(0)
        bands = caption_bands(features.views[0].image, plain)
        captionless = [outside_bands(keypoints, bands) for keypoints in (plain, mirrored)] if bands else []
        lists, lead = [], 0.0
        if captionless and len(captionless[0]):
            sets = [self._words(snapshot, keypoints) for keypoints in captionless]  # bands are rows: a mirror keeps them
            lists, lead = [self._ranked_hits(snapshot.vote(sets, self.candidates), 0)], 0.5  # the band-free list ahead
        # one list per view (plain and mirrored together), each a fraction of a place behind the one before,
        # all within half a place of the lead, so less than a place behind: a list's rank r keeps more than
        # 1 / (2 + r) of a vote (fusion.FIRST_OF_A_LIST)
        lists += [self._ranked_hits(self._view_votes(snapshot, features, view), view, behind=lead + 0.5 * number / len(voting))
                  for number, view in enumerate(voting)]
        best: dict[int, Hit] = {}
        for hit in (hit for hits in lists for hit in hits):
            if hit.ref_id not in best or hit.votes > best[hit.ref_id].votes:
                best[hit.ref_id] = hit
        return sorted(best.values(), key=lambda hit: (-hit.votes, hit.ref_id))

    def _view_votes(self, snapshot, features, view: int) -> list[tuple[int, float, int]]:
        sets = [self._words(snapshot, keypoints) for keypoints in features.keypoints(view) if len(keypoints)]
        return snapshot.vote(sets, self.candidates)

    def _ranked_hits(self, voted: list[tuple[int, float, int]], view: int, behind: float = 0.0) -> list[Hit]:
        """Hits of ``view`` whose votes are ``1 / (1 + rank + behind)`` in their list: lists of
        different word sets merge by rank, a list ``behind`` by that many places."""
        return [Hit(ref_id, self.name, view=view, votes=1.0 / (1.0 + rank + behind)) for rank, (ref_id, _, _) in enumerate(voted)]

    @staticmethod
    def _words(snapshot, keypoints):
        return vw.quantise(keypoints.root_sift, snapshot.codecs.word_codebook, per_half=2)
