"""Evaluation metrics on hand-computed toy rankings."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from provenance.evaluation import metrics as M


def test_micro_ap_with_a_negative_between_positives():
    # ranking T(0.9) F(0.8, a negative) T(0.7) T(0.6); four positive queries, one never predicted
    correct = [True, False, True, True]
    scores = [0.9, 0.8, 0.7, 0.6]
    expected = 0.25 * 1 + 0.25 * (2 / 3) + 0.25 * (3 / 4)
    assert M.micro_average_precision(correct, scores, 4) == pytest.approx(expected)


def test_micro_ap_does_not_depend_on_input_order():
    correct = np.array([True, False, True, True])
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    order = [2, 0, 3, 1]
    assert M.micro_average_precision(correct[order], scores[order], 4) == pytest.approx(
        M.micro_average_precision(correct, scores, 4)
    )


def test_perfect_ranking_has_ap_one_and_missing_positives_lower_it():
    assert M.micro_average_precision([True, True], [0.9, 0.5], 2) == pytest.approx(1.0)
    assert M.micro_average_precision([True, True], [0.9, 0.5], 4) == pytest.approx(0.5)


def test_wrong_reference_at_top1_counts_against_precision():
    # a positive query whose top-1 names the wrong reference is a false positive
    correct = [False, True, True]
    scores = [0.95, 0.9, 0.8]
    assert M.micro_average_precision(correct, scores, 3) == pytest.approx(1 / 3 * 1 / 2 + 1 / 3 * 2 / 3)
    assert M.recall_at_precision(correct, scores, 3, 0.9) == (0.0, None)
    recall, threshold = M.recall_at_precision(correct, scores, 3, 0.6)
    assert (recall, threshold) == (pytest.approx(2 / 3), 0.8)


def test_ties_are_pessimistic_in_ap():
    # wrong predictions come first among equal scores
    correct = [True, True, False]
    scores = [0.9, 0.8, 0.8]
    assert M.micro_average_precision(correct, scores, 2) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert M.micro_average_precision([True, False], [0.5, 0.5], 1) == pytest.approx(0.5)


def test_threshold_never_cuts_inside_a_tie():
    # at 0.8 one right and one wrong prediction tie: the cut is either above or below both
    correct = [True, True, False]
    scores = [0.9, 0.8, 0.8]
    assert M.recall_at_precision(correct, scores, 2, 0.9) == (pytest.approx(0.5), 0.9)
    assert M.recall_at_precision(correct, scores, 2, 0.6) == (pytest.approx(1.0), 0.8)
    assert M.recall_at_precision([True, False], [0.5, 0.5], 1, 0.9) == (0.0, None)


def test_recall_at_precision_picks_highest_recall_and_its_threshold():
    correct = [True, True, False, True, False]
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    assert M.recall_at_precision(correct, scores, 4, 0.9) == (pytest.approx(0.5), 0.8)
    assert M.recall_at_precision(correct, scores, 4, 0.7) == (pytest.approx(0.75), 0.6)
    # same best recall at 0.6 and 0.5: the higher threshold is reported
    assert M.recall_at_precision(correct, scores, 4, 0.5) == (pytest.approx(0.75), 0.6)


def test_precision_exactly_at_the_level_counts():
    # after ten predictions precision is exactly 9/10
    correct = [True] * 8 + [False, True]
    scores = list(np.linspace(1.0, 0.1, 10))
    recall, threshold = M.recall_at_precision(correct, scores, 10, 0.9)
    assert recall == pytest.approx(0.9) and threshold == pytest.approx(0.1)
    recall, threshold = M.recall_at_precision(correct, scores, 10, 0.91)
    assert recall == pytest.approx(0.8) and threshold == pytest.approx(scores[7])


def test_no_precision_reached_gives_zero_recall_and_no_threshold():
    assert M.recall_at_precision([False, False, True], [0.9, 0.8, 0.7], 1, 0.99) == (0.0, None)
    assert M.recall_at_precision([], [], 3, 0.9) == (0.0, None)
    assert M.micro_average_precision([], [], 3) == 0.0
    assert M.micro_average_precision([True], [0.5], 0) == 0.0


def test_missing_predictions_are_ignored():
    correct = [True, False, True]
    scores = [0.9, math.nan, 0.5]
    assert M.micro_average_precision(correct, scores, 3) == pytest.approx(2 / 3)


def test_accepted_and_rate():
    assert M.accepted([0.5, 0.7, math.nan], 0.6).tolist() == [False, True, False]
    assert M.accepted([0.5, 0.7], None).tolist() == [False, False]
    assert M.rate([True, False, False, True]) == 0.5
    assert M.rate([]) is None


def test_truth_ranks_and_recall_at_k():
    ranks = M.truth_ranks([["a", "b"], ["b", "c", "a"], ["c"], []], ["a", "a", "a", "a"])
    assert ranks.tolist() == [0, 2, -1, -1]
    assert M.recall_at_k(ranks, 1) == 0.25
    assert M.recall_at_k(ranks, 3) == 0.5
    assert M.recall_at_k([], 5) == 0.0


def test_verdict_precision_recall():
    precision, recall = M.verdict_precision_recall([True, True, False, True], [True, False, False, False], 3)
    assert precision == pytest.approx(1 / 3) and recall == pytest.approx(1 / 3)
    assert M.verdict_precision_recall([False, False], [True, False], 2) == (None, 0.0)
    assert M.is_flagged("match") and M.is_flagged("copy")
    assert not M.is_flagged("no_match") and not M.is_flagged("similar") and not M.is_flagged(None)


def test_latency_stats():
    stats = M.latency_stats([0.01, 0.02, 0.03, 0.04, 1.0])
    assert stats["median_ms"] == pytest.approx(30.0)
    assert stats["p95_ms"] == pytest.approx(np.percentile([10, 20, 30, 40, 1000], 95))
    assert M.latency_stats([])["median_ms"] is None


def test_summarize_groups_families_and_negative_kinds():
    result = M.summarize(
        positive=[True, True, True, False, False],
        group=["crop", "crop", "blur", "general", "same_subject_other_photo"],
        correct=[True, False, True, False, True],  # a negative can never be correct
        scores=[0.95, 0.9, 0.5, 0.6, 0.99],
        ranks=[0, 3, 0, -1, -1],
        verdicts=["match", "match", "no_match", "no_match", "match"],
    )
    assert result["positives"] == 3 and result["negatives"] == 2
    # ranking: F(0.99 negative) T(0.95) F(0.9 wrong ref) F(0.6) T(0.5)
    assert result["micro_ap"] == pytest.approx(1 / 3 * 1 / 2 + 1 / 3 * 2 / 5)
    assert result["recall_at_p90"] == 0.0 and result["threshold_at_p90"] is None
    assert result["recall_at_1"] == pytest.approx(2 / 3)
    assert result["recall_at_5"] == pytest.approx(1.0)
    assert result["per_family"]["crop"] == {"queries": 2, "recall_at_1": 0.5, "recall_at_p90": 0.0, "recall_at_p99": 0.0}
    assert result["negatives_fpr"]["general"]["fpr_at_p99"] == 0.0
    verdict = result["verdict"]
    assert verdict["flagged"] == 3
    assert verdict["precision"] == pytest.approx(1 / 3) and verdict["recall"] == pytest.approx(1 / 3)
    assert verdict["counts"]["negative:same_subject_other_photo"] == {"match": 1}
    assert verdict["counts"]["positive_wrong_top1"] == {"match": 1}


def test_summarize_thresholds_apply_per_family_and_kind():
    result = M.summarize(
        positive=[True, True, True, False],
        group=["crop", "crop", "blur", "general"],
        correct=[True, True, True, False],
        scores=[0.9, 0.8, 0.6, 0.7],
        ranks=[0, 0, 0, -1],
    )
    assert result["threshold_at_p99"] == 0.8
    assert result["per_family"]["crop"]["recall_at_p99"] == 1.0
    assert result["per_family"]["blur"]["recall_at_p99"] == 0.0
    assert result["threshold_at_p90"] == 0.8  # 3/4 < 0.9 at 0.6
    assert result["negatives_fpr"]["general"]["fpr_at_p99"] == 0.0
    assert result["verdict"] is None


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=1, max_size=30), st.integers(0, 10))
def test_ap_and_operating_points_are_bounded_and_consistent(rows, extra_positives):
    correct = [ok for ok, _ in rows]
    scores = [float(s) for _, s in rows]
    num_positives = sum(correct) + extra_positives
    ap = M.micro_average_precision(correct, scores, num_positives)
    assert 0.0 <= ap <= 1.0 + 1e-12
    for level in (0.5, 0.9, 0.99):
        recall, threshold = M.recall_at_precision(correct, scores, num_positives, level)
        if threshold is None:
            assert recall == 0.0
            continue
        kept = np.asarray(scores) >= threshold
        hits = int(np.sum(kept & np.asarray(correct)))
        assert hits / kept.sum() >= level - 1e-12
        assert recall == pytest.approx(hits / num_positives)
