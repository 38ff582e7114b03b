"""Numbers that say how well a model and a defense did.

Two questions are asked of a defense against backdoor poisoning:

1. **Is the final model any good, and is the backdoor gone?** Clean :func:`accuracy` on an
   untouched test set, and the :func:`attack_success_rate` (ASR): the share of triggered test
   inputs (see :func:`sanitizer.attacks.triggered_test_set`) that the model sends to the
   attacker's target class. A successful defense keeps accuracy and drives ASR towards the
   rate at which clean inputs are mistaken for the target anyway.
2. **Did it find the poisoned records?** Treat detection as ranking: the defense gives every
   record a suspicion score and a yes/no flag. :func:`auroc` and :func:`average_precision`
   judge the scores regardless of a threshold; :func:`precision_recall_f1` judges the flags;
   :func:`recall_at_k` / :func:`precision_at_k` answer "if a human reviews the ``k`` most
   suspicious records, how many of the poisoned ones do they see?". :func:`detection_report`
   bundles them.

Conventions: *higher score = more suspicious*; ``is_positive`` is the ground truth (``True`` =
poisoned). Predictions and labels may be class indices ``(N,)`` or score/probability rows
``(N, K)`` (the argmax is taken). Metrics that are undefined for the input (an empty set, no
positives or no negatives for AUROC) return ``nan`` rather than raising, so a report over many
runs does not stop on a degenerate one. Everything is pure numpy.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "accuracy",
    "attack_success_rate",
    "auroc",
    "average_precision",
    "precision_recall_f1",
    "recall_at_k",
    "precision_at_k",
    "detection_report",
    "rankdata",
]


def _as_classes(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return x.argmax(axis=1) if x.ndim == 2 else x.astype(np.int64)


def _as_bool(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {x.shape}")
    return x.astype(bool)


def _check_same_length(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{names} have different lengths: {len(a)} vs {len(b)}")


def accuracy(pred: np.ndarray, true: np.ndarray) -> float:
    """Fraction of records whose predicted class equals the true class.

    ``pred`` and ``true`` are class indices ``(N,)`` or score rows ``(N, K)``. ``nan`` if empty.

    >>> accuracy(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2]))
    0.75
    """
    pred, true = _as_classes(pred), _as_classes(true)
    _check_same_length(pred, true, "pred and true")
    if len(pred) == 0:
        return float("nan")
    return float(np.mean(pred == true))


def attack_success_rate(pred_on_triggered: np.ndarray, target_labels: np.ndarray) -> float:
    """Attack success rate: the fraction of triggered inputs classified as the attacker's target.

    ``pred_on_triggered`` are the model's predictions on a triggered test set -- records whose
    true class is *not* the target, with the trigger stamped on -- and ``target_labels`` the
    class the attacker wants for each (a constant for all-to-one, ``(y + 1) % K`` for
    all-to-all). An undefended BadNets model typically scores > 0.9; a clean model scores about
    its natural confusion rate into the target. ``nan`` if empty.
    """
    pred, target = _as_classes(pred_on_triggered), _as_classes(target_labels)
    _check_same_length(pred, target, "predictions and target labels")
    if len(pred) == 0:
        return float("nan")
    return float(np.mean(pred == target))


def rankdata(values: np.ndarray) -> np.ndarray:
    """Ranks ``1..N`` of ``values`` (ascending), tied values sharing the average of their ranks.

    The same as ``scipy.stats.rankdata(values, method="average")``, in numpy.

    >>> rankdata(np.array([10.0, 20.0, 10.0, 30.0]))
    array([1.5, 3. , 1.5, 4. ])
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    n = len(values)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start of each run of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], n]  # exclusive
    # Ranks of a run covering sorted positions [s, e) are s+1..e; their mean is (s + 1 + e) / 2.
    run_rank = (starts + 1 + ends) / 2.0
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def auroc(scores: np.ndarray, is_positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for separating positives from negatives.

    Equals the probability that a randomly chosen positive (poisoned record) scores higher than
    a randomly chosen negative, ties counting one half: the Mann-Whitney statistic
    ``U / (n_pos * n_neg)`` with ``U = sum(ranks of positives) - n_pos (n_pos + 1) / 2`` and
    average ranks for ties. 1.0 is a perfect ranking, 0.5 is chance (or all scores equal),
    0.0 is a perfectly inverted ranking. ``nan`` when there are no positives or no negatives.

    >>> auroc(np.array([0.9, 0.8, 0.8, 0.1]), np.array([True, False, True, False]))
    0.875
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = _as_bool(is_positive, "is_positive")
    _check_same_length(scores, positive, "scores and is_positive")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def average_precision(scores: np.ndarray, is_positive: np.ndarray) -> float:
    """Area under the precision-recall curve, as the step sum ``sum_t (R_t - R_{t-1}) P_t``.

    Thresholds ``t`` run over the distinct scores from high to low; at each, every record scoring
    at least ``t`` is flagged (so tied records enter together), ``P_t`` and ``R_t`` are the
    precision and recall of that flag set. This is scikit-learn's ``average_precision_score``.
    It rewards putting the poisoned records at the very top more than AUROC does and, unlike
    AUROC, its chance level is the positive fraction. ``nan`` when there are no positives.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = _as_bool(is_positive, "is_positive")
    _check_same_length(scores, positive, "scores and is_positive")
    n_pos = int(positive.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    s, p = scores[order], positive[order]
    # Last index of each run of equal scores: the flag set at that threshold ends there.
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    tp = np.cumsum(p)[last]
    flagged = last + 1
    precision = tp / flagged
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def precision_recall_f1(flagged: np.ndarray, is_positive: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of a yes/no flag against the ground truth.

    * precision = TP / (TP + FP): of the records flagged, the share truly poisoned;
    * recall    = TP / (TP + FN): of the poisoned records, the share flagged;
    * F1        = their harmonic mean, 2PR / (P + R).

    A zero denominator gives 0.0 (flagging nothing has precision 0, recall 0), the common
    convention. Also returns the raw counts ``tp``, ``fp``, ``fn``.

    >>> precision_recall_f1(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))["f1"]
    0.5
    """
    flagged = _as_bool(flagged, "flagged")
    positive = _as_bool(is_positive, "is_positive")
    _check_same_length(flagged, positive, "flagged and is_positive")
    tp = int(np.sum(flagged & positive))
    fp = int(np.sum(flagged & ~positive))
    fn = int(np.sum(~flagged & positive))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


def _positives_in_top_k(scores: np.ndarray, positive: np.ndarray, k: int) -> float:
    """Expected number of positives among the ``k`` highest scores, ties split uniformly.

    Records scoring strictly above the k-th highest score are all in the top k; the run of
    records tied *at* that score fills the remaining slots, and since any of them could be
    picked, each contributes ``slots_left / run_length`` of a positive. This makes the metric
    independent of record order (a defense that scores everything equal gets chance recall).
    """
    n = len(scores)
    k = int(k)
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    k = min(k, n)
    if k == 0:
        return 0.0
    kth = np.sort(scores)[::-1][k - 1]
    above = scores > kth
    tied = scores == kth
    slots_left = k - int(above.sum())
    return float(np.sum(positive & above) + np.sum(positive & tied) * slots_left / tied.sum())


def recall_at_k(scores: np.ndarray, is_positive: np.ndarray, k: int) -> float:
    """Share of all positives found among the ``k`` highest-scoring records.

    "If a reviewer inspects the ``k`` most suspicious records, what fraction of the poisoned ones
    do they see?" Ties at the cut-off are split in expectation (see the source of
    ``_positives_in_top_k``). With ``k`` equal to the number of positives this is the
    R-precision, and a perfect ranking scores 1.0. ``nan`` when there are no positives.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = _as_bool(is_positive, "is_positive")
    _check_same_length(scores, positive, "scores and is_positive")
    n_pos = int(positive.sum())
    if n_pos == 0:
        return float("nan")
    return _positives_in_top_k(scores, positive, k) / n_pos


def precision_at_k(scores: np.ndarray, is_positive: np.ndarray, k: int) -> float:
    """Share of the ``k`` highest-scoring records that are positives (ties split in expectation).

    ``nan`` when ``k`` is 0 or there are no records.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = _as_bool(is_positive, "is_positive")
    _check_same_length(scores, positive, "scores and is_positive")
    k_eff = min(int(k), len(scores))
    if k_eff <= 0:
        return float("nan")
    return _positives_in_top_k(scores, positive, k_eff) / k_eff


def detection_report(
    scores: np.ndarray, flagged: np.ndarray, is_positive: np.ndarray
) -> dict[str, float | int]:
    """Everything about how well a defense found the poisoned records, as one flat dict.

    ``scores`` (higher = more suspicious) are judged by ``auroc``, ``average_precision`` and
    ``recall_at_positives`` (recall among the top ``positives`` records, i.e. R-precision);
    the defense's own yes/no ``flagged`` decision by ``precision``, ``recall`` and ``f1``.
    Also reports the counts ``records``, ``positives`` (truly poisoned), ``flagged``, ``tp``,
    ``fp`` and ``fn``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    flagged_b = _as_bool(flagged, "flagged")
    positive = _as_bool(is_positive, "is_positive")
    _check_same_length(scores, positive, "scores and is_positive")
    prf = precision_recall_f1(flagged_b, positive)
    n_pos = int(positive.sum())
    return {
        "auroc": auroc(scores, positive),
        "average_precision": average_precision(scores, positive),
        "recall_at_positives": recall_at_k(scores, positive, n_pos) if n_pos else float("nan"),
        "precision": prf["precision"],
        "recall": prf["recall"],
        "f1": prf["f1"],
        "records": int(len(positive)),
        "positives": n_pos,
        "flagged": int(flagged_b.sum()),
        "tp": prf["tp"],
        "fp": prf["fp"],
        "fn": prf["fn"],
    }
