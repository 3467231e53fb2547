"""Pure scoring functions: numpy arrays in, numbers out.

Conventions (as in the ISC21/DISC21 matching track):

* every query contributes at most one prediction, its top-1 reference and score;
  negatives' predictions are always wrong, and so is a positive query's top-1 when it
  names another reference;
* predictions are pooled and ranked globally by descending score; among equal scores
  the wrong ones come first (the pessimistic order ISC21 uses, so ties never help);
* precision is counted over the ranked predictions, recall over the number of
  *positive queries* (a positive without a prediction is simply never recalled).
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

#: The group of queries that are other crops of a reference's photograph (shared pixels).
PARTIAL_COPY_GROUP = "partial_copy_same_photo"
#: Verdicts that do not flag a copy; any other verdict does ("match", "copy", ...).
UNFLAGGED_VERDICTS = frozenset({"no_match", "similar"})


def _pooled(correct: Sequence[bool], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Drop missing predictions (NaN scores) and sort pessimistically."""
    correct = np.asarray(correct, dtype=bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if correct.shape != scores.shape:
        raise ValueError(f"correct and scores differ in length ({correct.size} vs {scores.size})")
    keep = ~np.isnan(scores)
    correct, scores = correct[keep], scores[keep]
    order = np.lexsort((correct, -scores))  # primary: score descending; ties: wrong first
    return correct[order], scores[order]


def precision_recall_curve(
    correct: Sequence[bool], scores: Sequence[float], num_positives: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and score after each prediction in the pooled ranking (ISC21)."""
    correct, scores = _pooled(correct, scores)
    true_positives = np.cumsum(correct)
    precisions = true_positives / np.arange(1, correct.size + 1)
    recalls = true_positives / num_positives if num_positives > 0 else np.zeros(correct.size)
    return precisions, recalls, scores


def micro_average_precision(correct: Sequence[bool], scores: Sequence[float], num_positives: int) -> float:
    """Micro-average precision (µAP) of ISC21: sum of (recall step) x precision."""
    precisions, recalls, _ = precision_recall_curve(correct, scores, num_positives)
    if recalls.size == 0:
        return 0.0
    steps = np.diff(np.concatenate([[0.0], recalls]))
    return float(np.sum(steps * precisions))


def recall_at_precision(
    correct: Sequence[bool], scores: Sequence[float], num_positives: int, min_precision: float
) -> tuple[float, float | None]:
    """Highest recall whose precision is >= ``min_precision``, and its threshold.

    Only real operating points are considered: accepting every prediction with score
    >= threshold (a cut inside a group of equal scores is not one). Among thresholds
    with the same best recall, the highest is returned. ``(0.0, None)`` when no
    threshold reaches the precision.
    """
    precisions, recalls, thresholds = precision_recall_curve(correct, scores, num_positives)
    if thresholds.size == 0:
        return 0.0, None
    group_ends = np.flatnonzero(np.r_[thresholds[1:] != thresholds[:-1], True])
    valid = group_ends[precisions[group_ends] >= min_precision - 1e-12]
    if valid.size == 0 or recalls[valid].max() <= 0:
        return 0.0, None
    best = valid[int(np.argmax(recalls[valid]))]
    return float(recalls[best]), float(thresholds[best])


def accepted(scores: Sequence[float], threshold: float | None) -> np.ndarray:
    """Which scores are accepted at ``threshold`` (``None`` accepts nothing; NaN never)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if threshold is None:
        return np.zeros(scores.size, dtype=bool)
    with np.errstate(invalid="ignore"):
        return scores >= threshold


def rate(mask: Sequence[bool]) -> float | None:
    """Fraction of True in ``mask``; ``None`` when it is empty."""
    mask = np.asarray(mask, dtype=bool).ravel()
    return float(mask.mean()) if mask.size else None


def truth_ranks(candidates: Sequence[Sequence], truths: Sequence) -> np.ndarray:
    """0-based position of each query's true reference in its candidate list, -1 if absent."""
    ranks = np.full(len(truths), -1, dtype=np.int64)
    for i, (found, truth) in enumerate(zip(candidates, truths)):
        for position, candidate in enumerate(found):
            if candidate == truth:
                ranks[i] = position
                break
    return ranks


def recall_at_k(ranks: Sequence[int], k: int) -> float:
    """Fraction of positive queries whose true reference is among the first ``k`` candidates."""
    ranks = np.asarray(ranks, dtype=np.int64).ravel()
    if ranks.size == 0:
        return 0.0
    return float(np.mean((ranks >= 0) & (ranks < k)))


def is_flagged(verdict: str | None) -> bool:
    """Whether a verdict claims a copy (anything but no_match/similar/none)."""
    return verdict is not None and verdict not in UNFLAGGED_VERDICTS


def verdict_precision_recall(
    flagged: Sequence[bool], correct: Sequence[bool], num_positives: int
) -> tuple[float | None, float]:
    """Precision and recall of a yes/no decision: a flag is right only when the flagged
    top-1 reference is the true one. Precision is ``None`` when nothing was flagged."""
    flagged = np.asarray(flagged, dtype=bool).ravel()
    correct = np.asarray(correct, dtype=bool).ravel()
    hits = int(np.sum(flagged & correct))
    precision = hits / int(flagged.sum()) if flagged.any() else None
    recall = hits / num_positives if num_positives > 0 else 0.0
    return precision, recall


def latency_stats(seconds: Sequence[float]) -> dict[str, float | None]:
    """Median, 95th percentile and mean of per-query times, in milliseconds."""
    values = np.asarray(seconds, dtype=np.float64).ravel()
    if values.size == 0:
        return {"median_ms": None, "p95_ms": None, "mean_ms": None}
    return {
        "median_ms": float(np.median(values) * 1000),
        "p95_ms": float(np.percentile(values, 95) * 1000),
        "mean_ms": float(values.mean() * 1000),
    }


def summarize(
    *,
    positive: Sequence[bool],
    group: Sequence[str],
    correct: Sequence[bool],
    scores: Sequence[float],
    ranks: Sequence[int],
    verdicts: Sequence[str | None] | None = None,
) -> dict:
    """All accuracy metrics for one system, one row per query.

    ``positive``: the query is a copy of a reference; ``group``: its family (positives)
    or negative kind; ``correct``: its top-1 is the true reference (always False for
    negatives); ``scores``: top-1 score (NaN without prediction); ``ranks``: position of
    the true reference among the candidates (-1 if absent; ignored for negatives);
    ``verdicts``: the system's own top-1 verdict, or ``None`` for systems without one.
    """
    positive = np.asarray(positive, dtype=bool)
    group = np.asarray(group, dtype=object)
    correct = np.asarray(correct, dtype=bool) & positive
    scores = np.asarray(scores, dtype=np.float64)
    ranks = np.asarray(ranks, dtype=np.int64)
    num_positives = int(positive.sum())
    out: dict = {
        "queries": int(positive.size),
        "positives": num_positives,
        "negatives": int((~positive).sum()),
        "micro_ap": micro_average_precision(correct, scores, num_positives),
        "recall_at_1": recall_at_k(ranks[positive], 1),
        "recall_at_5": recall_at_k(ranks[positive], 5),
    }
    thresholds = {}
    for label, level in (("p90", 0.90), ("p99", 0.99)):
        recall, threshold = recall_at_precision(correct, scores, num_positives, level)
        out[f"recall_at_{label}"], out[f"threshold_at_{label}"] = recall, threshold
        thresholds[label] = threshold
    out["per_family"] = _per_family(positive, group, correct, scores, ranks, thresholds)
    out["negatives_fpr"] = _per_negative_kind(positive, group, scores, thresholds)
    out["verdict"] = None if verdicts is None else _verdict_block(positive, group, correct, verdicts)
    return out


def _per_family(positive, group, correct, scores, ranks, thresholds) -> dict:
    families = {}
    for name in sorted(set(group[positive])):
        rows = positive & (group == name)
        entry = {"queries": int(rows.sum()), "recall_at_1": recall_at_k(ranks[rows], 1)}
        for label, threshold in thresholds.items():
            entry[f"recall_at_{label}"] = rate(correct[rows] & accepted(scores[rows], threshold))
        families[str(name)] = entry
    return families


def _per_negative_kind(positive, group, scores, thresholds) -> dict:
    kinds = {}
    for name in sorted(set(group[~positive])):
        rows = ~positive & (group == name)
        entry = {"queries": int(rows.sum())}
        for label, threshold in thresholds.items():
            entry[f"fpr_at_{label}"] = rate(accepted(scores[rows], threshold))
        kinds[str(name)] = entry
    return kinds


def _verdict_block(positive, group, correct, verdicts) -> dict:
    verdicts = list(verdicts)
    flagged = np.array([is_flagged(v) for v in verdicts], dtype=bool)
    precision, recall = verdict_precision_recall(flagged, correct, int(positive.sum()))
    counts: dict[str, Counter] = {}
    for is_positive, name, ok, verdict in zip(positive, group, correct, verdicts):
        key = ("positive_correct_top1" if ok else "positive_wrong_top1") if is_positive else f"negative:{name}"
        counts.setdefault(key, Counter())[str(verdict)] += 1
    per_family = {}
    for name in sorted(set(group[positive])):
        rows = positive & (group == name)
        per_family[str(name)] = rate(flagged[rows] & correct[rows])
    return {
        "precision": precision,
        "recall": recall,
        "flagged": int(flagged.sum()),
        "counts": {key: dict(sorted(value.items())) for key, value in sorted(counts.items())},
        "per_family_recall": per_family,
    }


def partial_copy_block(records: Sequence[dict], system: str = "engine") -> dict:
    """Outcomes for partial copies of the same photograph: ``copy`` of the reference they
    share pixels with (right), not flagged (acceptable), or flagged as a copy of another
    reference (wrong); with the median coverage of the right ones' boxes."""
    answers = [record["systems"][system] for record in records]
    right = [a for a in answers if is_flagged(a["verdict"]) and a["correct"]]
    wrong = [a for a in answers if is_flagged(a["verdict"]) and not a["correct"]]
    coverages = [a["coverage"] for a in right if a.get("coverage") is not None]
    return {"queries": len(answers), "copy_of_shared_reference": len(right), "not_flagged": len(answers) - len(right) - len(wrong),
            "copy_of_other_reference": len(wrong), "median_coverage": float(np.median(coverages)) if coverages else None}
