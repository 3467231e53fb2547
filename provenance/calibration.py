"""Thresholds from data: score distributions of known non-copies.

``calibrate`` queries images that are known not to be copies of any reference and picks,
for a target false-positive rate, the lowest thresholds that keep the share of those
negatives above them at or below the target:

* ``similar``: cosine similarity at or above which an unverified candidate is ``similar``;
* ``copy``: the score a geometrically verified candidate needs to be called a ``copy``
  (1.0 unless some negatives verified; then it rises above their scores).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from .errors import BadInputError, ImageLoadError
from .search.batch import query_stream
from .sources import scan_source

if TYPE_CHECKING:
    from .engine import Engine


@dataclass(frozen=True)
class CalibrationReport:
    """What calibration measured and the thresholds it stored."""

    negatives: int
    failed: int
    target_fpr: float
    thresholds: dict[str, float]
    flagged_by_kind: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> {copy, similar, total}
    seconds: float = 0.0


#: Steps of the scores' precision a threshold sits above the negative score it excludes: the
#: same image may embed a rounding step apart in a batch and alone (kernels chosen by batch
#: size), and must stay below the threshold either way.
ROUNDING_STEPS = 8


def threshold_for_fpr(negative_scores: np.ndarray, target_fpr: float, floor: float,
                      precision: type = np.float64) -> float:
    """Smallest threshold >= ``floor`` with at most ``target_fpr`` of the scores at or above it.

    Thresholds sit :data:`ROUNDING_STEPS` steps of the ``precision`` the scores were computed
    in (similarities are float32 cosines) above a negative score, so ties never leak through.
    """
    scores = np.sort(np.asarray(negative_scores, dtype=np.float64))[::-1]
    allowed = int(np.floor(target_fpr * len(scores)))
    if allowed >= len(scores):
        return floor
    above = precision(scores[allowed])
    for _ in range(ROUNDING_STEPS):
        above = np.nextafter(above, precision(np.inf))
    return max(floor, float(above))


def calibrate(engine: "Engine", negatives: str | os.PathLike, target_fpr: float = 0.001,
              progress: Callable[[int, int], None] | None = None, batch_size: int = 16) -> CalibrationReport:
    """Measure ``engine`` on known non-copies and store thresholds in its manifest."""
    if not 0 <= target_fpr < 1:
        raise BadInputError("target_fpr must lie in [0, 1)")
    started = time.perf_counter()
    records = scan_source(negatives)
    if not records:
        raise BadInputError(f"{negatives}: no negatives to calibrate on")
    similarities, copy_scores, kinds, failed = [], [], [], 0
    answers = query_stream(engine, records, top_k=5, batch_size=batch_size, image_of=lambda record: record.file)
    for done, (record, result) in enumerate(answers, 1):
        if isinstance(result, ImageLoadError):
            failed += 1
        else:
            similarities.append(max((m.similarity for m in result.matches), default=-1.0))
            copy_scores.append(max((m.score for m in result.matches if m.verdict == "copy"), default=0.0))
            kinds.append(str(record.extra.get("kind") or record.collection or "negative"))
        if progress is not None and (done % batch_size == 0 or done == len(records)):
            progress(done, len(records))
    if not similarities:
        raise BadInputError(f"{negatives}: none of the negatives could be read")
    thresholds = {
        "similar": threshold_for_fpr(np.array(similarities), target_fpr, floor=-1.0, precision=np.float32),
        "copy": threshold_for_fpr(np.array(copy_scores), target_fpr, floor=1.0),
    }
    engine.set_thresholds(thresholds, target_fpr=target_fpr, negatives=len(similarities))
    flagged: dict[str, dict[str, int]] = {}
    for kind, similarity, copy_score in zip(kinds, similarities, copy_scores):
        counts = flagged.setdefault(kind, {"total": 0, "copy": 0, "similar": 0})
        counts["total"] += 1
        counts["copy"] += int(copy_score >= thresholds["copy"])
        counts["similar"] += int(copy_score < thresholds["copy"] and similarity >= thresholds["similar"])
    return CalibrationReport(len(similarities), failed, target_fpr, thresholds, flagged, time.perf_counter() - started)
