"""Result types returned by the library API."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

VERDICT_COPY = "copy"  # geometrically verified, or a near-exact PDQ hash
VERDICT_SIMILAR = "similar"  # close embedding, no geometric proof (same shoot, same person)
VERDICT_NO_MATCH = "no_match"


@dataclass(frozen=True)
class Transform:
    """How a verified copy was derived from its reference."""

    scale: float  # query pixels per reference pixel
    rotation_deg: float  # counter-clockwise rotation of the content in the query
    mirrored: bool
    model: str  # similarity, stretch or affine


@dataclass(frozen=True)
class Match:
    """One candidate reference for a query, with its score and verdict.

    ``score`` orders all candidates of all queries: above 1 for a ``copy`` (1 + evidence
    strength), otherwise ``similarity``, the best cosine similarity of the embeddings.
    A ``copy`` also has ``box`` (x0, y0, x1, y1 in reference pixels: the part of the
    reference the query shows), ``coverage`` (that part's fraction of the reference),
    ``inliers`` and ``transform``; ``pdq_distance`` is set when the PDQ hashes are close.
    """

    ref_id: int
    path: str
    score: float
    verdict: str
    similarity: float
    subject: str | None = None
    source_url: str | None = None
    collection: str | None = None
    sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    inliers: int = 0
    box: tuple[float, float, float, float] | None = None
    coverage: float | None = None
    transform: Transform | None = None
    pdq_distance: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class QueryResult:
    """Answer for one query image; ``verdict`` is the best match's verdict."""

    query: str
    verdict: str
    matches: list[Match]
    seconds: float = 0.0

    @property
    def best(self) -> Match | None:
        return self.matches[0] if self.matches else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "verdict": self.verdict,
            "matches": [match.to_dict() for match in self.matches],
            "seconds": round(self.seconds, 4),
        }


@dataclass(frozen=True)
class ReindexSummary:
    """What a reindex did."""

    added: int
    skipped: int
    replaced: int
    failed: int
    seconds: float
    errors: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.added / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class IndexInfo:
    """What is in an index."""

    directory: str
    embedder: dict[str, Any]
    references: int
    vectors: int
    collections: dict[str, int]
    disk_bytes: int
    created_at: float
    updated_at: float
    vector_index: dict[str, Any]
    thresholds: dict[str, float]
