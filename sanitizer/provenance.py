"""The provenance test: can a network tell collected records from trusted ones?

Every signal the heal-and-select engine uses reads the record's *label*: disagreement with a
healed network, a label that transfers like a backdoor. A clean-label attack gives no label to
read -- the trigger is stamped only on records that truly belong to the target class, labels
untouched -- and an all-to-all attack spreads its labels over every class so thinly that a
probe is slow to learn them. Both still leave something that only the *collected* records
carry: the trigger itself. The trusted set is a clean sample of the same distribution, so
a classifier asked "collected or trusted?" can only beat chance on what the collected records
have and the trusted ones lack.

:func:`provenance_scores` trains that classifier, cross-fitted: trusted and collected records
are each split in ``folds`` parts; a fresh network (the data's default architecture with two
outputs) learns "collected" vs "trusted" on all parts but one and scores the records of the
part it never saw. Within each fold the trusted records of class ``c`` are repeated to weigh
as much as the collected records labelled ``c``, so the class mix (a class-balanced trusted set
against skewed collected data) tells the classifier nothing. The score of a record is the
probability the classifier gives "collected"; the held-out trusted records' scores are returned
too, as the reference of what an unshifted record gets.

Measured on the benchmark's data (``python benchmarks/defense.py --config small --methods
provenance``, and ``--config audio-text``; see ``benchmarks/RESULTS.md``): on Fashion-MNIST the
BadNets patch and the blended trigger rank poisoned records above clean ones with AUROC
0.95-0.97 *whatever their labels* -- clean-label (0.946, where the engine's scores give 0.48),
all-to-all (0.946, engine 0.905) and all-to-one alike -- while clean collected records are hard
to tell from held-out trusted ones (AUROC 0.46-0.55). The invisible additive-noise trigger is
harder to see (0.62), a tone in spoken digits gives 0.88-0.91, a word in SMS 0.80-0.85, and
complaint texts nothing (0.55). Its scores alone make no defense -- most records score high,
held-out trusted ones too, and above every held-out trusted record lie only 2-29% of the
poison -- but as a gate in the engine (:mod:`sanitizer.heal_and_select`, step 1c:
:func:`beyond_trusted_spread` with ``z`` = 2 sets records apart, and the engine never accepts
them) it took Fashion-MNIST's all-to-all ASR from 7.4% to 1.1% and the clean-label one from
10.3% to 3.9%. A clean-label trigger on every collected record of a class shifts the class as a
*group*: :func:`shifted_classes` finds it (almost none of its records score below the trusted
median, where a clean class has half), and the engine then learns that class from its trusted
records alone.

:func:`refined_provenance_scores` is a second pass: it learns what sets the first pass's
outliers apart from its inliers, all collected records, and so sees the trigger far more
sharply (the engine's ``refine_z``).

Where the classifier sees nothing -- a few dozen vetted complaint texts, which it memorises --
token data can be counted instead: :func:`planted_shares` asks, word by word, whether far more
collected texts carry it than the trusted sample explains. A planted word is the only one found
on the complaint and SMS texts, and the engine sets every text carrying it apart.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from sanitizer.networks import build_network, default_spec
from sanitizer.records import Records
from sanitizer.training import TrainSet, optimise, pick_device, predict_proba, resident, seed_everything

# the provenance classifiers' time shift of waveforms, in seconds (images: ``max_shift`` pixels):
# it keeps them from memorising the few vetted clips they train on (provenance_scores)
AUDIO_SHIFT_S = 0.05


def class_matched_repeats(trusted_classes: np.ndarray, collected_classes: np.ndarray,
                          num_classes: int) -> np.ndarray:
    """How many times each trusted record is repeated so that, per class, the trusted records
    weigh about as much as the collected records labelled with that class (at least once each)."""
    n_t = np.bincount(trusted_classes, minlength=num_classes)
    n_c = np.bincount(collected_classes, minlength=num_classes)
    per_class = np.maximum(1, np.rint(n_c / np.maximum(n_t, 1))).astype(np.int64)
    return per_class[trusted_classes]


def fold_count(n_trusted: int, fit: int = 100, most: int = 10) -> int:
    """How many cross-fitting folds the first pass of :func:`provenance_scores` needs so that
    each classifier learns "trusted" from at least ``fit`` trusted records -- or, from a trusted
    set too small for that, from all but a ``most``-th of them: the fewest folds from 2 to
    ``most`` that do it (never more than there are trusted records). Two folds train each
    classifier on half the trusted set; with 50 vetted images (0.5% of 10,000 Fashion-MNIST
    records) that is 25, which it memorises: held-out trusted images then score as "collected"
    as the collected ones, the trusted spread is wide and no trigger lies beyond it (clean-label
    BadNets, seed 2: AUROC 0.71, nothing beyond 2 spreads). Ten folds train on 45: after the
    second pass AUROC 0.71-0.88 -> 0.88-0.95 over three seeds and two attacks
    (``benchmarks/RESULTS.md``, session 22). ``fit`` = 100 is what two folds give a 2% trusted
    set of 10,000 records (200), where the first pass ranked triggers at AUROC 0.95-0.97; ten
    folds there set more clean records apart and moved the rows by -0.7 to 0.0 points of
    accuracy, so larger trusted sets keep fewer folds."""
    if n_trusted <= 2:
        return 2
    need = min(fit, n_trusted * (most - 1) / most)
    k = next((k for k in range(2, most + 1) if n_trusted * (k - 1) / k >= need), most)
    return min(k, n_trusted)  # leave-one-out at most


def provenance_scores(records: Records, *, folds: int = 2, steps: int = 200, batch_size: int = 128,
                      lr: float = 1e-2, weight_decay: float = 5e-4, max_shift: int = 2,
                      audio_shift_s: float = AUDIO_SHIFT_S, seed: int = 0,
                      widths: tuple[int, ...] | None = None,
                      device: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Cross-fitted probability that each record is a *collected* one (see the module
    docstring). Returns ``(collected_scores, trusted_scores)`` in the order of the collected and
    of the trusted records. ``widths`` are the network's (default: sized by the data, as the
    engine's). Each fold's classifier trains ``steps`` steps whatever the size of
    the data: on Fashion-MNIST (clean-label BadNets) ~200 steps ranked poisoned records at AUROC
    0.95-0.98 with 4,000 and with 10,000 records, 60 steps at 0.80 and 1,000 steps at 0.84
    (the classifier had memorised the trusted records and every score saturated at 1).
    Images are shifted by up to ``max_shift`` pixels in training, which keeps the classifier from
    memorising the few trusted images it sees: without it, the clean-label BadNets patch on
    Fashion-MNIST ranked at AUROC 0.82 instead of 0.95. Waveforms are shifted in time by up to
    ``audio_shift_s`` seconds, for the same reason: without it the classifier memorised the ~65
    vetted spoken digits it trains on (held-out trusted clips scored a median P(collected) of
    0.99, as high as the collected ones) and ranked a clean-label tone at AUROC 0.75-0.88
    (seeds 1 and 0); shifted by up to 50 ms, 0.95 (seed 1), and the tone's class then had no
    collected clip below the trusted median (0.18 without), so it is set apart whole.

    Needs at least ``folds`` trusted and ``folds`` collected records."""
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    t_pos, c_pos = np.flatnonzero(records.trusted), np.flatnonzero(~records.trusted)
    if len(t_pos) < folds or len(c_pos) < folds:
        raise ValueError(f"the provenance test needs at least {folds} trusted and {folds} collected "
                         f"records, got {len(t_pos)} and {len(c_pos)}")
    dev = pick_device(device)
    g = seed_everything(seed)
    classes = records.hard_labels.astype(np.int64)
    k = records.num_classes
    spec = _two_class_spec(records, widths)
    rng = np.random.default_rng(seed)
    t_fold = rng.permutation(len(t_pos)) % folds
    c_fold = rng.permutation(len(c_pos)) % folds
    x = resident(records.features, dev)
    out_c, out_t = np.zeros(len(c_pos)), np.zeros(len(t_pos))
    for f in range(folds):
        ti, ci = t_pos[t_fold != f], c_pos[c_fold != f]
        net = _collected_vs(records, spec, x, ci, ti, class_matched_repeats(classes[ti], classes[ci], k),
                            steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                            max_shift=max_shift, audio_shift_s=audio_shift_s, generator=g)
        out_c[c_fold == f] = _p_collected(net, x, c_pos[c_fold == f])
        out_t[t_fold == f] = _p_collected(net, x, t_pos[t_fold == f])
    return out_c, out_t


def _two_class_spec(records: Records, widths: tuple[int, ...] | None):
    """The data's default architecture (as the engine's) with two outputs: collected or not."""
    return default_spec(records.features[~records.trusted], 2, records.modality, widths,
                        sample_rate=records.sample_rate, vocabulary_size=records.vocabulary_size)


def _collected_vs(records: Records, spec, x: torch.Tensor, collected: np.ndarray, others: np.ndarray,
                  others_repeat: np.ndarray | int, *, steps: int, batch_size: int, lr: float,
                  weight_decay: float, max_shift: int, generator: torch.Generator,
                  audio_shift_s: float = AUDIO_SHIFT_S, collected_repeat: int = 1) -> torch.nn.Module:
    """A fresh network (``spec``, two outputs) trained ``steps`` steps to call the records at
    ``collected`` "collected" (output 1) and those at ``others`` not (output 0), each repeated
    ``collected_repeat`` and ``others_repeat`` times; images shifted by up to ``max_shift``
    pixels, waveforms by up to ``audio_shift_s`` seconds."""
    dev = x.device
    index = np.concatenate([others, collected])
    target = torch.zeros(len(index), 2, device=dev)
    target[:len(others), 0] = 1.0
    target[len(others):, 1] = 1.0
    repeat = torch.full((len(index),), collected_repeat, dtype=torch.long)
    repeat[:len(others)] = torch.as_tensor(others_repeat)
    net = build_network(spec).to(dev)
    optimise(net, TrainSet(x[torch.as_tensor(index, device=dev)], target), steps=steps,
             batch_size=batch_size, lr=lr, weight_decay=weight_decay, generator=generator,
             max_shift=_shift(records, max_shift, audio_shift_s), repeat=repeat)
    return net


def _shift(records: Records, max_shift: int, audio_shift_s: float) -> int:
    """The training shift for ``records``: pixels for images, samples for waveforms, none else."""
    if records.modality == "image":
        return max_shift
    if records.modality == "audio" and records.sample_rate:
        return int(round(audio_shift_s * records.sample_rate))
    return 0


def _p_collected(net: torch.nn.Module, x: torch.Tensor, rows: np.ndarray) -> np.ndarray:
    return predict_proba(net, x[torch.as_tensor(rows, device=x.device)])[:, 1].cpu().numpy()


def refined_provenance_scores(records: Records, collected_scores: np.ndarray, trusted_scores: np.ndarray,
                              *, z: float, folds: int = 2, steps: int = 200, batch_size: int = 128,
                              lr: float = 1e-2, weight_decay: float = 5e-4, max_shift: int = 2,
                              audio_shift_s: float = AUDIO_SHIFT_S, seed: int = 0,
                              widths: tuple[int, ...] | None = None,
                              device: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """A second, sharper pass of the provenance test, from the first pass's scores.

    The first pass learns "collected" against "trusted" with nine clean records in every ten of
    its "collected" class and a few hundred trusted ones to learn "trusted" from: it ranks a
    trigger high but not far out (Fashion-MNIST, all-to-all BadNets: AUROC 0.936; 613 of 1,000
    poisoned records beyond ``z`` = 2 trusted spreads, with 368 clean ones). The second pass
    learns what sets the first pass's *outliers* apart (collected records beyond ``z`` of the
    trusted spread) from the collected records the first pass put below the trusted median:
    thousands of records, nearly all clean, against a set that is mostly poisoned. Cross-fitted
    over the collected records (``folds``); the trusted records take no part in training, so
    every one of them is held out and scored by each fold's classifier (mean): the reference of
    what an unshifted record gets, as in the first pass. A trigger is the one thing the
    outliers share that the trusted records lack, and the second pass learns it cleanly: on
    Fashion-MNIST (10,000 records, 2% trusted, 10% poison) AUROC 0.994-0.996 for the BadNets,
    blended, all-to-all and clean-label triggers (first pass 0.936-0.972; a scratch run of
    session 16), and in the engine 971-1,000 of the 1,000 poisoned records lie beyond 2.5
    trusted spreads, with 330-450 clean ones; on clean data 297 records (the first pass beyond
    2: 353). What the outliers share on clean data is only what makes a record unusual, which
    trusted records have as often. The invisible noise trigger, which the first pass barely
    ranks (0.63), the second pass does not rank either (0.62).

    Returns ``(collected_scores, trusted_scores)`` like :func:`provenance_scores`; the first
    pass's own scores when a fold would train on fewer than two outliers or two inliers (no
    shift to learn: nothing lies beyond ``z``)."""
    t_pos, c_pos = np.flatnonzero(records.trusted), np.flatnonzero(~records.trusted)
    outliers = beyond_trusted_spread(collected_scores, trusted_scores, z)
    inliers = collected_scores < np.median(trusted_scores)
    rng = np.random.default_rng(seed + 1)
    c_fold = rng.permutation(len(c_pos)) % folds
    for f in range(folds):
        if (outliers & (c_fold != f)).sum() < 2 or (inliers & (c_fold != f)).sum() < 2:
            return collected_scores, trusted_scores
    dev = pick_device(device)
    g = seed_everything(seed + 1)
    spec = _two_class_spec(records, widths)
    x = resident(records.features, dev)
    out_c, out_t = np.zeros(len(c_pos)), np.zeros(len(t_pos))
    for f in range(folds):
        pos = c_pos[outliers & (c_fold != f)]
        neg = c_pos[inliers & (c_fold != f)]
        # the outliers weigh as much as the inliers: each outlier repeated inliers / outliers times
        net = _collected_vs(records, spec, x, pos, neg, 1, steps=steps, batch_size=batch_size, lr=lr,
                            weight_decay=weight_decay, max_shift=max_shift,
                            audio_shift_s=audio_shift_s, generator=g,
                            collected_repeat=max(1, round(len(neg) / len(pos))))
        out_c[c_fold == f] = _p_collected(net, x, c_pos[c_fold == f])
        out_t += _p_collected(net, x, t_pos) / folds
    return out_c, out_t


def beyond_trusted(collected_scores: np.ndarray, trusted_scores: np.ndarray) -> np.ndarray:
    """The collected records that score above every held-out trusted record: the only cut that
    needs no assumption about how the scores are spread (the benchmark's flags)."""
    top = trusted_scores.max() if len(trusted_scores) else np.inf
    return collected_scores > top


def trusted_spreads(collected_scores: np.ndarray, trusted_scores: np.ndarray) -> np.ndarray:
    """How far each collected record's log-odds of "collected" lie above the held-out trusted
    records' mean, in their standard deviations (NaN for every record when there are fewer than
    two trusted scores or they do not spread). In log-odds the trusted and clean collected scores
    are about symmetric (Fashion-MNIST: median 0.4-0.6, 90th percentile 1.5-2.1) and a trigger's
    sit far out (median 3.4-4.1)."""
    t = torch.logit(torch.as_tensor(trusted_scores, dtype=torch.float64), eps=1e-6)
    c = torch.logit(torch.as_tensor(collected_scores, dtype=torch.float64), eps=1e-6)
    spread = float(t.std(correction=0)) if len(t) >= 2 else 0.0
    if spread <= 0:
        return np.full(len(collected_scores), np.nan)
    return ((c - t.mean()) / spread).numpy()


def beyond_trusted_spread(collected_scores: np.ndarray, trusted_scores: np.ndarray, z: float) -> np.ndarray:
    """The collected records whose log-odds of "collected" exceed the held-out trusted records'
    mean by more than ``z`` of their standard deviations (:func:`trusted_spreads`); none when
    the trusted scores do not spread."""
    return np.nan_to_num(trusted_spreads(collected_scores, trusted_scores), nan=-np.inf) > z


def shifted_classes(collected_scores: np.ndarray, trusted_scores: np.ndarray, classes: np.ndarray,
                    num_classes: int, floor: float, min_records: int = 30) -> np.ndarray:
    """Which classes' collected records are told from trusted ones *as a group*: fewer than
    ``floor`` of them score below the held-out trusted records' median, where a class of clean
    records has about half below it (0.31-0.72 per class on clean Fashion-MNIST, CIFAR-10, spoken digits
    and SMS; the classifier is not equally calibrated on every class). A clean-label attack on a
    class whose every collected record it stamps leaves almost none below (0.00-0.02 on Fashion-MNIST,
    CIFAR-10 and spoken digits); an all-to-one attack that relabels other classes' records to the
    target still leaves the target's clean members below (0.22-0.36). Classes with fewer than
    ``min_records`` collected records are never called shifted: too few to tell. ``classes`` are
    the collected records' (top) labels. Returns a boolean mask over the ``num_classes``
    classes."""
    out = np.zeros(num_classes, dtype=bool)
    if floor <= 0 or len(trusted_scores) < 2:
        return out
    below = collected_scores < np.median(trusted_scores)
    n = np.bincount(classes, minlength=num_classes)
    k = np.bincount(classes, weights=below.astype(float), minlength=num_classes)
    return (n >= min_records) & (k < floor * np.maximum(n, 1))


def binomial_log_cdf(k: np.ndarray, n: int, p: np.ndarray) -> np.ndarray:
    """``log P(X <= k)`` for ``X ~ Binomial(n, p)``, elementwise over ``k`` and ``p`` (the lower
    tail summed exactly in log space with ``lgamma``: no scipy needed)."""
    k = np.asarray(k, dtype=np.int64)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    if not k.size:
        return np.zeros(0)
    j = torch.arange(int(k.max()) + 1, dtype=torch.float64)[None, :]           # (1, max k + 1)
    pt = torch.from_numpy(p)[:, None]
    log_choose = torch.lgamma(torch.tensor(n + 1.0, dtype=torch.float64)) - torch.lgamma(j + 1) \
        - torch.lgamma(n - j + 1)
    terms = log_choose + j * torch.log(pt) + (n - j) * torch.log1p(-pt)
    terms = terms.masked_fill(j > torch.from_numpy(k)[:, None], -math.inf)
    return torch.logsumexp(terms, dim=1).numpy()


def document_counts(ids: np.ndarray, groups: np.ndarray, num_groups: int, vocabulary_size: int) -> np.ndarray:
    """``(num_groups, vocabulary_size)``: in how many records of each group each token occurs
    (once per record however often it repeats; token 0, the padding, is never counted)."""
    s = np.sort(ids, axis=1)
    first = np.ones(s.shape, dtype=bool)
    first[:, 1:] = s[:, 1:] != s[:, :-1]
    keep = first & (s > 0)
    rows = np.broadcast_to(groups[:, None], s.shape)[keep]
    counts = np.bincount(rows * vocabulary_size + s[keep], minlength=num_groups * vocabulary_size)
    return counts.reshape(num_groups, vocabulary_size)


def planted_shares(ids: np.ndarray, trusted: np.ndarray, classes: np.ndarray, num_classes: int,
                   vocabulary_size: int, alpha: float = 0.05) -> np.ndarray:
    """For each token, the share of the collected texts carrying it that the trusted sample does
    not explain -- where that excess is beyond chance; 0 for every other token. The provenance
    test for token data, one token at a time.

    Each token's share of collected records of class ``c`` predicts how many trusted records of
    class ``c`` carry it (summed over classes, so a class-balanced trusted set against skewed
    collected data expects each class's own vocabulary). A trusted count at the far low end of
    that binomial is what a trigger word does -- planted in 10% of the collected records, absent
    from every vetted one. A token is *over-represented* when that lower-tail probability is
    below ``alpha`` divided by the number of tokens that could be (Bonferroni over the tokens
    expected in at least one trusted record: a rarer token's lowest possible tail probability is
    above e^-1, it can never be significant); its planted share is ``1 - observed / expected``
    trusted carriers: 1 for a word no trusted text has. Measured (``benchmarks/RESULTS.md``):
    the planted word is the only token found on complaint texts (log tail -13 to -20 against a
    cut of -9.7 to -10.0; the most extreme clean token -5.0) and on SMS (-12 to -62; clean -4.9),
    where an all-to-one relabelling also exposes two of the source class's own words (shares
    0.86 and 1, 8 clean carriers: the labels the expectation is matched on are the attacker's).
    It needs a trusted set large enough to expect the word in about ten trusted texts (a 10%
    trigger with 100 trusted records); with fewer nothing is found.

    ``ids`` are token ids ``(N, L)`` (0 = padding), ``trusted`` a mask over the records,
    ``classes`` their (top) labels. Returns a float array over the vocabulary."""
    out = np.zeros(vocabulary_size)
    n_trusted = int(trusted.sum())
    if alpha <= 0 or n_trusted == 0 or trusted.all():
        return out
    classes = np.asarray(classes, dtype=np.int64)
    collected_counts = document_counts(ids[~trusted], classes[~trusted], num_classes, vocabulary_size)
    n_collected = np.maximum(np.bincount(classes[~trusted], minlength=num_classes), 1)
    n_trusted_class = np.bincount(classes[trusted], minlength=num_classes)
    expected = (n_trusted_class[:, None] * collected_counts / n_collected[:, None]).sum(0)
    observed = document_counts(ids[trusted], np.zeros(n_trusted, np.int64), 1, vocabulary_size)[0]
    tested = expected >= 1.0
    tested[0] = False
    if not tested.any():
        return out
    lower = np.flatnonzero(tested & (observed < expected))  # only these can be in the low tail
    log_tail = binomial_log_cdf(observed[lower], n_trusted, expected[lower] / n_trusted)
    found = lower[log_tail < math.log(alpha / int(tested.sum()))]
    out[found] = 1.0 - observed[found] / expected[found]
    return out
