"""Metrics against hand-computed values and brute-force definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sanitizer.metrics import (
    accuracy,
    attack_success_rate,
    auroc,
    average_precision,
    detection_report,
    precision_at_k,
    precision_recall_f1,
    rankdata,
    recall_at_k,
)


def brute_force_auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting 1/2, over all pairs."""
    pos, neg = scores[positive], scores[~positive]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return (greater + 0.5 * ties) / (len(pos) * len(neg))


def brute_force_average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    total, prev_recall = 0.0, 0.0
    for t in np.unique(scores)[::-1]:
        flagged = scores >= t
        tp = (flagged & positive).sum()
        recall = tp / positive.sum()
        total += (recall - prev_recall) * tp / flagged.sum()
        prev_recall = recall
    return total


def test_accuracy_and_asr_by_hand():
    assert accuracy(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])) == 0.75
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert accuracy(scores, np.array([0, 1, 1])) == pytest.approx(2 / 3)
    assert accuracy(scores, np.array([[1, 0], [0, 1], [0, 1]])) == pytest.approx(2 / 3)
    assert attack_success_rate(np.array([3, 3, 1, 3, 0]), np.full(5, 3)) == 0.6
    assert attack_success_rate(np.array([1, 2, 0]), np.array([1, 2, 1])) == pytest.approx(2 / 3)
    assert math.isnan(accuracy(np.array([], dtype=int), np.array([], dtype=int)))
    assert math.isnan(attack_success_rate(np.array([], dtype=int), np.array([], dtype=int)))
    with pytest.raises(ValueError, match="lengths"):
        accuracy(np.array([0, 1]), np.array([0]))


def test_rankdata_averages_ties():
    np.testing.assert_array_equal(rankdata(np.array([10.0, 20.0, 10.0, 30.0])), [1.5, 3, 1.5, 4])
    np.testing.assert_array_equal(rankdata(np.array([5, 5, 5])), [2, 2, 2])
    np.testing.assert_array_equal(rankdata(np.array([3.0, 1.0, 2.0])), [3, 1, 2])
    try:
        from scipy.stats import rankdata as scipy_rankdata
    except ImportError:
        return
    values = np.random.default_rng(0).integers(0, 20, size=500).astype(float)
    np.testing.assert_allclose(rankdata(values), scipy_rankdata(values))


def test_auroc_by_hand():
    # Positive 0.9 beats both negatives (2), positive 0.8 ties one (0.5) and beats one (1): 3.5/4.
    assert auroc(np.array([0.9, 0.8, 0.8, 0.1]), np.array([True, False, True, False])) == 0.875
    assert auroc(np.array([3, 2, 1, 0]), np.array([1, 1, 0, 0])) == 1.0
    assert auroc(np.array([0, 1, 2, 3]), np.array([1, 1, 0, 0])) == 0.0
    assert auroc(np.full(6, 0.3), np.array([1, 0, 1, 0, 0, 0])) == 0.5
    assert math.isnan(auroc(np.array([0.1, 0.2]), np.array([False, False])))
    assert math.isnan(auroc(np.array([0.1, 0.2]), np.array([True, True])))


@pytest.mark.parametrize("seed", range(5))
def test_auroc_with_ties_matches_pairwise_count(seed):
    rng = np.random.default_rng(seed)
    n = 400
    positive = rng.random(n) < 0.2
    # Few distinct values -> many ties, both within and across the two groups.
    scores = rng.integers(0, 8, size=n) + 2.0 * positive * rng.random(n).round(1)
    assert auroc(scores, positive) == pytest.approx(brute_force_auroc(scores, positive), abs=1e-12)
    assert average_precision(scores, positive) == pytest.approx(
        brute_force_average_precision(scores, positive), abs=1e-12)


def test_average_precision_by_hand():
    # Ranking P N P N: precision at the two positives is 1 and 2/3 -> AP = (1 + 2/3) / 2.
    scores = np.array([4.0, 3.0, 2.0, 1.0])
    positive = np.array([True, False, True, False])
    assert average_precision(scores, positive) == pytest.approx(5 / 6)
    assert average_precision(np.array([2.0, 1.0]), np.array([True, False])) == 1.0
    # Everything tied: one threshold flagging all; AP = positive fraction.
    assert average_precision(np.ones(4), np.array([1, 0, 0, 0])) == 0.25
    assert math.isnan(average_precision(np.ones(3), np.zeros(3)))


def test_precision_recall_f1_by_hand():
    flagged = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    positive = np.array([1, 1, 0, 1, 0, 0, 0, 0])
    out = precision_recall_f1(flagged, positive)
    assert (out["tp"], out["fp"], out["fn"]) == (2, 2, 1)
    assert out["precision"] == 0.5
    assert out["recall"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    nothing = precision_recall_f1(np.zeros(4), np.array([1, 0, 0, 0]))
    assert (nothing["precision"], nothing["recall"], nothing["f1"]) == (0.0, 0.0, 0.0)


def test_recall_and_precision_at_k_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    positive = np.array([1, 0, 1, 0, 0, 1], dtype=bool)
    assert recall_at_k(scores, positive, 1) == pytest.approx(1 / 3)
    assert recall_at_k(scores, positive, 3) == pytest.approx(2 / 3)
    assert recall_at_k(scores, positive, 6) == 1.0
    assert recall_at_k(scores, positive, 100) == 1.0
    assert recall_at_k(scores, positive, 0) == 0.0
    assert precision_at_k(scores, positive, 3) == pytest.approx(2 / 3)
    assert math.isnan(precision_at_k(scores, positive, 0))
    assert math.isnan(recall_at_k(scores, np.zeros(6, dtype=bool), 2))


def test_recall_at_k_splits_ties_in_expectation():
    # Top-3 of [5, 3, 3, 3, 1]: the 5 surely, then 2 of the three tied 3s (one positive among
    # them): expected positives = 1 (the 5) + 1 * 2/3.
    scores = np.array([5.0, 3.0, 3.0, 3.0, 1.0])
    positive = np.array([True, True, False, False, True])
    assert recall_at_k(scores, positive, 3) == pytest.approx((1 + 2 / 3) / 3)
    # All scores equal: chance level whatever the order of the records.
    flat = np.zeros(10)
    first = np.arange(10) < 2
    last = np.arange(10) >= 8
    assert recall_at_k(flat, first, 5) == recall_at_k(flat, last, 5) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(3))
def test_recall_at_k_matches_brute_force_without_ties(seed):
    rng = np.random.default_rng(seed)
    scores = rng.random(300)
    positive = rng.random(300) < 0.1
    for k in (1, 10, 30, 299):
        top = np.argsort(-scores)[:k]
        assert recall_at_k(scores, positive, k) == pytest.approx(positive[top].sum() / positive.sum())


def test_detection_report():
    scores = np.array([0.9, 0.8, 0.8, 0.1, 0.05])
    positive = np.array([True, False, True, False, False])
    flagged = scores > 0.5
    report = detection_report(scores, flagged, positive)
    assert report["auroc"] == pytest.approx(brute_force_auroc(scores, positive))
    assert report["precision"] == pytest.approx(2 / 3)
    assert report["recall"] == 1.0
    assert report["f1"] == pytest.approx(0.8)
    assert (report["records"], report["positives"], report["flagged"]) == (5, 2, 3)
    assert (report["tp"], report["fp"], report["fn"]) == (2, 1, 0)
    assert report["recall_at_positives"] == pytest.approx((1 + 0.5) / 2)
    assert report["average_precision"] == pytest.approx(
        brute_force_average_precision(scores, positive))
