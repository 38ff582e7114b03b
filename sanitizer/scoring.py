"""Per-record scores, thresholds, reasons and the per-contributor summary.

Every collected record gets a **suspicion** score in [0, 1], 1 = most likely poisoned:

* ``agreement(probs, labels)`` -- the overlap ``sum_c min(label_c, prob_c)`` between the record's
  (possibly soft) label and a network's prediction: 1 when they are the same distribution, 0
  when they share no mass. For a hard label it is simply the probability of that class.
* ``support(probs, labels)`` -- how fully a prediction backs the class the label names (its top
  class ``c``): ``min(1, p_c / label_c)``, so a soft label at 0.6 is fully backed by ``p_c = 0.6``.
* ``disagreement(probs, labels)`` -- ``(1 - support) * confidence``: how confidently the
  healed network (which has never learned from unvetted records) predicts another class.
  Records above a threshold are *suspects*.
* the **suspicion** is the *lift* from the engine's cross-fitted backdoor test
  (:mod:`sanitizer.heal_and_select`, :func:`lift`): how much more a probe fine-tuned on *other*
  suspects backs the record's labelled class than the healed network does. A poisoned label
  transfers from other poisoned records like a backdoor; a hard clean record's label does not.
  The probe's learned shift of class priors is taken out first (:func:`undo_prior_shift`).

``flag`` turns scores into flags by one of three rules (a score threshold, an expected
contamination rate, or top-k); without one it takes the valley of the score histogram
(:func:`auto_threshold`). Scores are ranked, 1 = most suspect, like cleanlab's label-issue
ranking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

def agreement(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Overlap ``sum_c min(label_c, prob_c)`` of each label with the prediction, in [0, 1]."""
    return torch.minimum(probs, labels).sum(dim=1).clamp_(0.0, 1.0)


def _top_class(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each label's top class (as an index column) and its weight."""
    top = labels.argmax(dim=1, keepdim=True)
    return top, labels.gather(1, top).squeeze(1).clamp_min(1e-6)


def _gain(probe_probs: torch.Tensor, healed_probs: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """How much more the probe than the healed network backs class ``cls`` (an index tensor
    with one entry per row along the last axis, as ``gather`` takes it)."""
    return probe_probs.gather(-1, cls) - healed_probs.gather(-1, cls)


def support(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """How fully a prediction backs the label's top class ``c``: ``min(1, p_c / label_c)``. For a
    hard label it is ``p_c``; a soft label (``c`` at 0.6) is fully backed at ``p_c = 0.6``."""
    top, weight = _top_class(labels)
    return (probs.gather(1, top).squeeze(1) / weight).clamp_(0.0, 1.0)


def disagreement(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(1 - support) * confidence``: how confidently a network predicts something other than
    the label's class, in [0, 1]. A clean record the network merely finds hard (low confidence)
    scores lower than one it confidently assigns to another class."""
    return ((1.0 - support(probs, labels)) * probs.max(dim=1).values).clamp_(0.0, 1.0)


def lift(probe_probs: torch.Tensor, healed_probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """How much more a probe backs each record's labelled class than the healed network does,
    relative to how strongly the label itself backs it: ``(p_probe(c) - p_healed(c)) / label_c``
    for the label's top class ``c``, clipped to [0, 1]. For a hard label that is the plain gain in
    probability; a "low-confidence" label (``c`` at 0.6) reaches 1 when the probe has learned to
    send the record to ``c`` as confidently as the label does, so soft poisoned labels score as
    high as hard ones."""
    top, weight = _top_class(labels)
    gain = _gain(probe_probs, healed_probs, top).squeeze(1)
    return (gain / weight).clamp_(0.0, 1.0)


def scale_by_dominance(scores: torch.Tensor, dominance: torch.Tensor, full: float) -> torch.Tensor:
    """``scores`` times ``min(1, dominance / full)`` (negative dominance counts as 0).

    *Dominance* is how firmly a probe that has learned the suspects' labels still predicts a
    record's label when the record is superimposed on a clean record of the class the healed
    network believes in (the engine's step 2c). A trigger dominates whatever it is laid over,
    as STRIP (arXiv 1902.06531) observed of backdoored inputs; the label of a hard clean record
    rests on the record's own content and gives way to the partner's. Measured on the engine's
    last backdoor test (mean over 4 partners): poisoned Fashion-MNIST records with a blended
    trigger kept a median of 0.96, the clean records with lift >= 0.3 kept 0.14; a noise burst
    in spoken digits 0.99 against 0.20.
    A word trigger in text dominates less (median 0.62 on SMS) because the partner's words
    compete in the pooled features (clean records: 0.01), which is why ``full`` is low: only a record whose label
    all but vanishes on superposition is demoted."""
    return scores * (dominance.clamp(min=0.0) / full).clamp(max=1.0)


def specific_lift(probe_probs: torch.Tensor, healed_probs: torch.Tensor, labels: torch.Tensor,
                  alike_probe: torch.Tensor, alike_healed: torch.Tensor,
                  alike_labels: torch.Tensor) -> torch.Tensor:
    """How much of each record's lift is its own: the probe's gain on the record's labelled class
    ``c`` less the mean gain towards ``c`` on its *look-alikes* that are labelled otherwise
    (a mean below 0 counts as 0), relative to the label's weight on ``c``, clipped to [0, 1].

    ``probe_probs``, ``healed_probs``, ``labels``: ``(n, K)`` for the records; ``alike_*``:
    ``(n, k, K)`` for each record's ``k`` look-alikes (records the healed network saw as similar
    that were not suspects). A look-alike with the record's own class is ignored (its label is
    backed already); a record with none labelled otherwise keeps its whole lift.

    A trigger's lift is specific: a probe that learned "trigger -> target" backs the target on
    the triggered record and not on clean records of the same content. A *content* rule is not:
    when two classes look alike and the trusted set shows few of either (debt-collection
    complaints that read like credit-report complaints), a probe fine-tuned on the hard members
    of one class also pulls the other class's look-alikes towards it. Measured on clean
    complaints (no poison, 76 trusted records), the first round's rejected records kept a
    median lift of 0.72 while their look-alikes gained 0.34; a BadNets patch on Fashion-MNIST
    kept 0.98 against 0.05."""
    top, weight = _top_class(labels)
    own = _gain(probe_probs, healed_probs, top).squeeze(1)
    alike_gain = _gain(alike_probe, alike_healed,
                       top[:, None, :].expand(-1, alike_probe.shape[1], 1)).squeeze(2)
    other = (alike_labels.argmax(dim=2) != top).to(alike_gain.dtype)
    shared = ((alike_gain * other).sum(dim=1) / other.sum(dim=1).clamp(min=1)).clamp(min=0.0)
    return ((own - shared) / weight).clamp_(0.0, 1.0)


def vouched(features: torch.Tensor, labels: torch.Tensor, trusted_features: torch.Tensor,
            trusted_classes: torch.Tensor, k: int) -> torch.Tensor:
    """Whether a trusted record of each record's labelled class is among its ``k`` nearest
    trusted records: its *vouchers*. Nearness is the dot product of the rows of ``features``
    ``(n, d)`` and ``trusted_features`` ``(m, d)`` -- cosine similarity when both are unit-norm,
    as :func:`sanitizer.training.embed` gives them; ``labels`` is ``(n, K)``, ``trusted_classes``
    the ``m`` trusted records' class indices. ``k <= 0`` vouches for no one.

    The look-alike test's second question (:mod:`sanitizer.heal_and_select`, step 2d). A record
    whose lift its look-alikes share (:func:`specific_lift`) is either a clean member of a class
    that naturally overlaps another -- and then vetted members of its own class lie close by --
    or a record an attacker relabelled wholesale (SMS spam labelled "ham": three quarters of
    the collected spam at 10% poison), which sits among vetted records of its true class and
    has no voucher. Measured with the benchmark's engine (seed 0, 10 vouchers, over both rounds):
    of the 294 poisoned SMS messages whose lift the look-alikes shared, none had a voucher; of
    126 such clean complaints (no poison; debt collection vs credit reporting), 95 had one."""
    k = min(k, len(trusted_classes))
    if k <= 0:
        return torch.zeros(len(features), dtype=torch.bool, device=features.device)
    nearest = trusted_classes[(features @ trusted_features.T).topk(k, dim=1).indices]
    return (nearest == labels.argmax(dim=1, keepdim=True)).any(dim=1)


def _reweight(probs: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """Each prediction times a per-class ``ratio`` of priors, renormalised per record: the prior
    adjustment both :func:`undo_prior_shift` and :func:`to_collected_priors` make."""
    adjusted = probs * ratio
    return adjusted / adjusted.sum(dim=1, keepdim=True).clamp_min(1e-12)


def undo_prior_shift(probe_probs: torch.Tensor, probe_reference: torch.Tensor,
                     healed_reference: torch.Tensor, max_division: float = math.inf) -> torch.Tensor:
    """Take out of a probe's predictions the shift of class priors it learned in fine-tuning.

    A probe fine-tuned on suspects -- most of them labelled with the attacker's class in an
    all-to-one attack, or with a class the trusted set under-represents -- learns to predict
    those classes more often *everywhere*, which lifts clean records labelled with them as well.
    That shift is a change of priors, not a trigger: measured on reference records (the
    non-suspects, which carry no trigger, mostly), the ratio of the healed network's to the
    probe's mean probability of each class reweights the probe's predictions, renormalised per
    record (the prior adjustment of Saerens, Latinne & Decaestecker, 2002). What remains of the
    lift is record-specific transfer, which is what a backdoor is.

    ``max_division`` bounds how far a class is divided down (the ratio is kept at or above its
    inverse). Without a bound, a class the healed network hardly ever predicts on the reference
    records -- one that is absent from the collected data, like a complaint category whose few
    records are all trusted -- would be divided to nothing in the probe, and the poisoned
    records labelled with it would lose their lift."""
    ratio = healed_reference.mean(dim=0) / probe_reference.mean(dim=0).clamp_min(1e-6)
    return _reweight(probe_probs, ratio.clamp_min(1.0 / max_division))


def to_collected_priors(probs: torch.Tensor, train_prior: torch.Tensor, steps: int = 50,
                        tol: float = 1e-6) -> torch.Tensor:
    """Predictions made under the class priors ``train_prior``, moved to the class priors of the
    records they are made on -- priors estimated from the predictions alone by EM (Saerens,
    Latinne & Decaestecker, 2002): reweight each prediction by ``prior / train_prior``,
    renormalise, take the mean as the new prior, repeat until it settles.

    A network healed on a trusted set learns that set's class mix, which is often balanced by
    design, while the collected records may be 87% one class (SMS: ham). Judged under the wrong
    priors, the common class's clean records look like disagreements. The collected *labels*
    cannot tell the true mix -- the attacker writes them (10% spam -> ham poison relabels three
    quarters of the spam) -- but the network's predictions on the records' contents can."""
    train_prior = train_prior.clamp_min(1e-6)
    prior = train_prior.clone()
    adjusted = probs
    for _ in range(steps):
        adjusted = _reweight(probs, prior / train_prior)
        new_prior = adjusted.mean(dim=0)
        if (new_prior - prior).abs().max() < tol:
            break
        prior = new_prior
    return adjusted


def auto_threshold(scores: np.ndarray, lo: float = 0.2, hi: float = 0.8, bins: int = 100) -> float:
    """The threshold between the two modes of the score histogram (Otsu's method: the cut that
    maximises the between-group variance), kept within ``[lo, hi]`` so a data set with no
    poison does not get half its records flagged."""
    if len(scores) == 0:
        return 0.5
    hist, edges = np.histogram(np.clip(scores, 0, 1), bins=bins, range=(0.0, 1.0))
    p = hist / hist.sum()
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * centres)
    mt = m0[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mt * w0 - m0) ** 2 / (w0 * (1 - w0))
    between[~np.isfinite(between)] = -1
    cut = edges[int(np.argmax(between)) + 1]
    return float(min(hi, max(lo, cut)))


@dataclass
class FlagRule:
    """How to turn scores into flags: exactly one of ``threshold``, ``contamination`` (the
    expected share of poisoned records) or ``top_k``; none means :func:`auto_threshold`."""

    threshold: float | None = None
    contamination: float | None = None
    top_k: int | None = None

    def __post_init__(self) -> None:
        given = [v for v in (self.threshold, self.contamination, self.top_k) if v is not None]
        if len(given) > 1:
            raise ValueError("give at most one of threshold, contamination and top_k")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.contamination is not None and not 0.0 <= self.contamination <= 1.0:
            raise ValueError(f"contamination must be in [0, 1], got {self.contamination}")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")

    def describe(self, scores: np.ndarray) -> str:
        if self.threshold is not None:
            return f"score >= {self.threshold:g}"
        if self.contamination is not None:
            return f"top {self.contamination:.1%} (expected contamination)"
        if self.top_k is not None:
            return f"top {self.top_k}"
        return f"score >= {auto_threshold(scores):.3f} (auto: valley of the score histogram)"


def rank(scores: np.ndarray) -> np.ndarray:
    """Rank 1 = highest score; ties broken by position so the order is stable."""
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[order] = np.arange(1, len(scores) + 1)
    return ranks


def flag(scores: np.ndarray, rule: FlagRule | None = None) -> np.ndarray:
    """Boolean flags for ``scores`` under ``rule`` (see :class:`FlagRule`)."""
    rule = rule or FlagRule()
    if rule.top_k is not None or rule.contamination is not None:
        k = rule.top_k if rule.top_k is not None else int(round(rule.contamination * len(scores)))
        return rank(scores) <= k
    t = rule.threshold if rule.threshold is not None else auto_threshold(scores)
    return scores >= t


def reasons(flags: np.ndarray, given: np.ndarray, predicted: np.ndarray, pred_conf: np.ndarray,
            heldout: np.ndarray, class_names: list[str], shifted: np.ndarray | None = None,
            planted: np.ndarray | None = None, held_back: np.ndarray | None = None) -> list[str]:
    """A short sentence per record saying why it was (or was not) flagged. ``heldout`` is the
    backdoor test's agreement of a probe trained on other suspects with the record's label;
    ``shifted`` marks records the provenance test set apart (:mod:`sanitizer.provenance`);
    ``planted`` names, for text, the over-represented word a record carries (``""``: none);
    ``held_back`` marks records the gate of few trusted images kept out (a doubted label, far out)."""
    out = []
    shifted = np.zeros(len(flags), dtype=bool) if shifted is None else shifted
    held_back = np.zeros(len(flags), dtype=bool) if held_back is None else held_back
    for i in range(len(flags)):
        g, p = class_names[given[i]], class_names[predicted[i]]
        if planted is not None and planted[i]:
            out.append(f"carries '{planted[i]}', a word far more collected texts carry than the trusted "
                       f"sample explains (a planted trigger?): left out of training; label says "
                       f"'{g}', healed model says '{p}' ({pred_conf[i]:.0%})")
        elif shifted[i] and not flags[i]:
            out.append("a classifier tells it (or its class's collected records as a group) from the "
                       "trusted records (something only collected records carry, e.g. a clean-label "
                       "trigger): left out of training, label not judged")
        elif held_back[i] and not flags[i]:
            out.append("the first judge (healed on the trusted set alone) doubted its label and a "
                       "classifier puts it farther from the trusted records than most: kept out of "
                       "training, not judged a backdoor")
        elif flags[i]:
            apart = ("a classifier tells the record from the trusted ones and the model never "
                     "trained on it; " if shifted[i] else "")
            out.append(f"healed model says '{p}' ({pred_conf[i]:.0%}), label says '{g}'; {apart}a probe "
                       f"trained on other suspects agrees with the label ({heldout[i]:.0%}): backdoor-like")
        elif g == p:
            out.append("healed model agrees with the label")
        else:
            out.append(f"healed model says '{p}', but the label does not transfer like a backdoor "
                       f"({heldout[i]:.0%}): a hard or mislabelled record")
    return out


def contributor_summary(contributors: np.ndarray, flags: np.ndarray) -> list[dict]:
    """Per contributor: records, flagged, flagged rate, and how surprising that many flags are
    against the overall rate (one-sided binomial test, normal approximation with continuity
    correction: ``z`` and ``p_value``). Sorted by ``p_value``, most suspicious first."""
    overall = float(flags.mean()) if len(flags) else 0.0
    rows = []
    keys = np.where(contributors == None, "(none)", contributors).astype(str)  # noqa: E711
    uniq, inverse = np.unique(keys, return_inverse=True)
    n = np.bincount(inverse)
    k = np.bincount(inverse, weights=flags.astype(float))
    for name, ni, ki in zip(uniq, n, k):
        var = ni * overall * (1 - overall)
        z = (ki - 0.5 - ni * overall) / math.sqrt(var) if var > 0 else 0.0
        p_value = 0.5 * math.erfc(z / math.sqrt(2)) if var > 0 else 1.0
        rows.append({"contributor": str(name), "records": int(ni), "flagged": int(ki),
                     "flagged_rate": float(ki / ni), "z": float(z), "p_value": float(min(1.0, p_value))})
    rows.sort(key=lambda r: (r["p_value"], -r["flagged_rate"]))
    return rows
