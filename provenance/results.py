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
    #: row-major 2x3 matrix mapping the query view's pixel (edge) coordinates to the
    #: reference's (``Match.reference_frame``); it includes the reflection when mirrored
    matrix: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Match:
    """One candidate reference for a query, with its score and verdict.

    ``score`` orders all candidates of all queries: above 1 for a ``copy`` (1 + evidence
    strength), otherwise ``similarity``, the best cosine similarity of the embeddings.
    A ``copy`` also has ``box`` (x0, y0, x1, y1 in reference pixels: the part of the
    reference the query shows), ``coverage`` (that part's fraction of the reference),
    ``inliers`` and ``transform``; ``pdq_distance`` is set when the PDQ hashes are close.
    A verified copy also says where in the query it was found: ``query_view`` (``full``,
    ``stripped`` of borders, ``disc`` inside a round avatar, ``circle0`` on a page,
    ``photo0`` in a screenshot, ...) and ``query_box`` (that view in the query's pixels,
    ``QueryResult.query_size``); ``reference_frame`` is the (width, height) that ``box``
    and the transform's matrix refer to (the reference as decoded for indexing).
    ``refusal`` says why keypoints that agree were not taken as proof of a copy
    (``"compact_support"``: they span only a logo-, text- or sticker-sized patch of both
    pictures; ``support`` is the larger share of either picture they span).
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
    query_view: str | None = None
    query_box: tuple[int, int, int, int] | None = None
    reference_frame: tuple[int, int] | None = None
    refusal: str | None = None
    support: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Match":
        """The match a ``to_dict`` (or ``query --json``) wrote; unknown keys are ignored."""
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        for name in ("box", "query_box", "reference_frame"):
            if known.get(name) is not None:
                known[name] = tuple(known[name])
        if known.get("transform") is not None:
            transform = dict(known["transform"])
            if transform.get("matrix") is not None:
                transform["matrix"] = tuple(transform["matrix"])
            known["transform"] = Transform(**{k: v for k, v in transform.items() if k in Transform.__dataclass_fields__})
        return cls(**known)


@dataclass(frozen=True)
class QueryResult:
    """Answer for one query image; ``verdict`` is the best match's verdict."""

    query: str
    verdict: str
    matches: list[Match]
    seconds: float = 0.0
    #: (width, height) of the query as decoded for searching: ``Match.query_box`` refers to it
    query_size: tuple[int, int] | None = None
    #: the thresholds the verdicts were judged against
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def best(self) -> Match | None:
        return self.matches[0] if self.matches else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "verdict": self.verdict,
            "matches": [match.to_dict() for match in self.matches],
            "seconds": round(self.seconds, 4),
            "query_size": list(self.query_size) if self.query_size else None,
            "thresholds": dict(self.thresholds),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QueryResult":
        """The result a ``to_dict`` (one line of ``query --json``) wrote."""
        size = data.get("query_size")
        return cls(str(data["query"]), str(data["verdict"]), [Match.from_dict(m) for m in data.get("matches", [])],
                   float(data.get("seconds") or 0.0), tuple(size) if size else None, dict(data.get("thresholds") or {}))


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
