"""Fusing the candidate sources' hits, and choosing which candidates to verify.

One place decides what reaches geometric verification, whatever proposed it:

* the best :data:`VERIFY_CANDIDATES` by embedding similarity;
* every PDQ near-duplicate (cheap to confirm, and it may not embed close: a rotation);
* the best :data:`VOTE_CANDIDATES` by shared visual words (keypoint source), and the first
  :data:`VOTE_LIST_DEPTH` of each of its lists (one per voting view), each verified on the
  view that voted too: a copy under stickers or captions keeps its keypoints while its
  embedding drifts, and a small avatar on a screenshot puts its reference near the top of
  its own list only;
* the best :data:`CORRELATED_CANDIDATES` by thumbnail correlation (thumbnail source), on
  the small view that correlated: a tiny avatar's true reference is often far down the
  embedding's ranking;
* when none of those verifies and the embedding's ranking is not decisive (the best
  similarity is not clearly above the next ones), the next :data:`MORE_CANDIDATES` by
  similarity: a tight avatar's true reference often ranks 7th-12th behind other
  photos of similar-looking people; and those tied with the last of them within the
  stored vectors' precision (:data:`QUANTISATION_SLACK`).
"""

from __future__ import annotations

from typing import Iterable

from ..matching import Candidate
from .sources import Hit

#: References verified geometrically per query in the first round (best by similarity).
VERIFY_CANDIDATES = 6
#: References verified in the first round for their visual-word votes (besides the above).
VOTE_CANDIDATES = 3
#: The first this many of every vote list are verified: a small avatar's list often puts
#: its reference second, behind another face its few words fit as well.
VOTE_LIST_DEPTH = 2
#: A keypoint-source hit with more votes than this was among the first
#: :data:`VOTE_LIST_DEPTH` of one of its lists (votes are ``1 / (1 + rank + behind)``, a list
#: less than a place behind: search/local.py).
FIRST_OF_A_LIST = 1.0 / (1.0 + VOTE_LIST_DEPTH)
#: References verified for their thumbnail correlation (the escalation's, besides the above).
CORRELATED_CANDIDATES = 2
#: Further references verified when the first round finds no copy and the margin is small.
MORE_CANDIDATES = 6
#: The embedding's ranking is decisive when the best similarity exceeds the
#: ``VERIFY_CANDIDATES``-th by this much (cosine); then a second round is not needed.
DECISIVE_MARGIN = 0.15
#: Stored vectors are 4-bit codes: a similarity is known to about this much (cosine; the
#: mean error is about 0.003, hardly any exceeds 0.015). The second round also verifies up
#: to :data:`TIED_CANDIDATES` candidates this close to its last one: their order is noise.
QUANTISATION_SLACK = 0.01
TIED_CANDIDATES = 3


def fuse(hits: Iterable[Hit]) -> dict[int, Candidate]:
    """One candidate per reference: the best similarity (and its view), the smallest PDQ distance."""
    candidates: dict[int, Candidate] = {}
    for hit in hits:
        candidate = candidates.setdefault(hit.ref_id, Candidate(hit.ref_id))
        if hit.similarity is not None and hit.similarity > candidate.similarity:
            candidate.similarity, candidate.view = float(hit.similarity), int(hit.view)
        if hit.pdq_distance is not None and (candidate.pdq_distance is None or hit.pdq_distance < candidate.pdq_distance):
            candidate.pdq_distance = int(hit.pdq_distance)
        if hit.votes is not None and (candidate.votes is None or hit.votes > candidate.votes):
            candidate.votes, candidate.vote_view = float(hit.votes), int(hit.view)
        if hit.correlation is not None and (candidate.correlation is None or hit.correlation > candidate.correlation):
            candidate.correlation, candidate.correlation_view = float(hit.correlation), hit.correlation_view
    return candidates


def by_similarity(candidates: dict[int, Candidate]) -> list[Candidate]:
    return sorted(candidates.values(), key=lambda candidate: (-candidate.similarity, candidate.ref_id))


def first_round(ranked: list[Candidate]) -> list[Candidate]:
    """The candidates every query verifies."""
    chosen = ranked[:VERIFY_CANDIDATES] + [c for c in ranked[VERIFY_CANDIDATES:] if c.pdq_distance is not None]
    chosen_ids = {candidate.ref_id for candidate in chosen}
    voted = sorted((c for c in ranked if c.votes is not None), key=lambda c: (-c.votes, c.ref_id))
    voted = voted[:VOTE_CANDIDATES] + [c for c in voted[VOTE_CANDIDATES:] if c.votes > FIRST_OF_A_LIST]
    return chosen + [c for c in voted if c.ref_id not in chosen_ids]


def correlated(ranked: list[Candidate]) -> list[Candidate]:
    """The best-correlated candidates not verified yet (the escalation verifies them)."""
    scored = sorted((c for c in ranked if c.correlation is not None), key=lambda c: (-c.correlation, c.ref_id))
    return [c for c in scored[:CORRELATED_CANDIDATES] if not c.is_copy]


def second_round(ranked: list[Candidate]) -> list[Candidate]:
    """Candidates to verify when the first round found no copy (empty when the ranking is decisive)."""
    if any(candidate.is_copy for candidate in ranked) or len(ranked) <= VERIFY_CANDIDATES:
        return []
    if ranked[0].similarity - ranked[VERIFY_CANDIDATES - 1].similarity > DECISIVE_MARGIN:
        return []
    last = VERIFY_CANDIDATES + MORE_CANDIDATES
    chosen = ranked[VERIFY_CANDIDATES:last]
    if len(ranked) > last:
        cut = ranked[last - 1].similarity - QUANTISATION_SLACK
        chosen += [c for c in ranked[last:last + TIED_CANDIDATES] if c.similarity >= cut]
    return [c for c in chosen if c.verification is None]
