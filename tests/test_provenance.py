"""The provenance test (sanitizer/provenance.py): hand-checked helpers, and on real Fashion-MNIST
a clean-label patch that no label-reading signal sees is ranked above clean records, while
clean collected records stay indistinguishable from held-out trusted ones."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from sanitizer.attacks import AttackConfig, poison
from sanitizer.metrics import auroc
from sanitizer.heal_and_select import heal_and_select, set_apart_floor
from sanitizer.provenance import (beyond_trusted, beyond_trusted_spread, binomial_log_cdf,
                                 class_matched_repeats, document_counts, fold_count, planted_shares,
                                 provenance_scores, refined_provenance_scores, shifted_classes,
                                 trusted_spreads)
from sanitizer.records import Records, concat, one_hot
from sanitizer.scoring import support
from test_defense import FAST


def test_class_matched_repeats_weigh_each_trusted_class_like_its_collected_records():
    trusted = np.array([0, 0, 1, 2])
    collected = np.array([0] * 10 + [1] * 3 + [2] * 0)
    # class 0: 10 collected / 2 trusted -> 5 each; class 1: 3 / 1 -> 3; class 2: none -> 1
    assert class_matched_repeats(trusted, collected, 3).tolist() == [5, 5, 3, 1]


def test_beyond_trusted_flags_only_what_outscores_every_trusted_record():
    flags = beyond_trusted(np.array([0.2, 0.91, 0.9, 0.95]), np.array([0.5, 0.9]))
    assert flags.tolist() == [False, True, False, True]
    assert not beyond_trusted(np.array([0.99]), np.array([])).any()


def test_provenance_needs_records_on_both_sides():
    x = np.zeros((6, 1, 8, 8), np.uint8)
    records = Records(x, one_hot(np.array([0, 1] * 3), 2), np.array([f"r{i}" for i in range(6)], dtype=object),
                      np.array([True] + [False] * 5), ["a", "b"], "image")
    with pytest.raises(ValueError, match="at least 2 trusted"):
        provenance_scores(records, device="cpu")


def _records(fmnist, n: int, trusted_share: float, seed: int = 7) -> Records:
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(fmnist["x_train"]))[:n]
    y = fmnist["y_train"][pick].astype(np.int64)
    trusted = np.zeros(n, bool)
    for c in range(10):  # class-balanced, as the benchmark's trusted sets
        members = np.flatnonzero(y == c)
        trusted[rng.permutation(members)[: int(trusted_share * n / 10)]] = True
    return Records(fmnist["x_train"][pick][:, None], one_hot(y, 10),
                   np.array([f"r{i}" for i in range(n)], dtype=object), trusted,
                   [str(c) for c in fmnist["class_names"]], "image")


def test_provenance_ranks_a_clean_label_trigger_and_not_clean_records(fmnist):
    records = _records(fmnist, 4000, 0.05)
    result = poison(records, AttackConfig(kind="badnets", target=0, clean_label=True, rate=0.1, seed=3))
    scores, trusted_scores = provenance_scores(result.records, seed=0, device="cpu")
    truth = result.poisoned[~records.trusted]
    clean = scores[~truth]
    detection = auroc(scores, truth)
    shift = auroc(np.r_[clean, trusted_scores], np.r_[np.ones(len(clean)), np.zeros(len(trusted_scores))])
    print(f"clean-label BadNets: detection AUROC {detection:.3f}, clean vs trusted AUROC {shift:.3f}")
    # every poisoned label is correct here (the patch is on 373 of the ~380 collected records of
    # class 0, as in the benchmark): the engine's label-reading scores rank these near chance.
    # Measured: detection AUROC 0.965, clean vs trusted 0.54 (half as many poisoned: 0.85).
    assert truth.sum() >= 300
    assert detection >= 0.9
    assert 0.35 <= shift <= 0.65, "clean collected records should look like held-out trusted ones"


def test_fold_count_trains_each_classifier_on_enough_trusted_records():
    # two folds already train on 100 of 200; 150 need three, 140 four; a set of 100 or fewer
    # cannot give 100, so each classifier trains on all but a tenth (10 folds)
    assert [fold_count(n) for n in (1200, 200, 150, 140, 100, 50)] == [2, 2, 3, 4, 10, 10]
    assert fold_count(0) == fold_count(2) == 2 and fold_count(5) == 5  # at most leave-one-out
    for n in range(3, 400):
        k = fold_count(n)
        trained = n * (k - 1) / k
        assert trained >= min(100, n * 9 / 10) or k == n
        assert k == 2 or n * (k - 2) / (k - 1) < min(100, n * 9 / 10)  # the fewest that do


def test_more_folds_let_a_small_trusted_set_rank_a_trigger(fmnist):
    # 40 trusted images (1% of 4,000): two folds train each classifier on 20 of them
    records = _records(fmnist, 4000, 0.01)
    result = poison(records, AttackConfig(kind="badnets", target=0, clean_label=True, rate=0.1, seed=3))
    truth = result.poisoned[~records.trusted]
    folds = fold_count(int(records.trusted.sum()))
    ranked = {k: auroc(provenance_scores(result.records, folds=k, seed=0, device="cpu")[0], truth)
              for k in (2, folds)}
    print(f"clean-label BadNets, 40 trusted: AUROC {ranked[2]:.3f} with 2 folds, "
          f"{ranked[folds]:.3f} with {folds}")
    # measured: 0.760 with 2 folds, 0.843 with 10 (the classifiers memorise 20 vetted images and
    # held-out trusted ones score as "collected" as the rest; 36 of them, less so)
    assert folds == 10
    assert ranked[folds] >= ranked[2] + 0.05
    assert ranked[folds] >= 0.8


def test_the_second_pass_sharpens_an_all_to_all_trigger_and_not_clean_records(fmnist):
    records = _records(fmnist, 4000, 0.05)
    result = poison(records, AttackConfig(kind="badnets", target=None, rate=0.1, seed=3))
    truth = result.poisoned[~records.trusted]
    first, first_trusted = provenance_scores(result.records, seed=0, device="cpu")
    second, second_trusted = refined_provenance_scores(result.records, first, first_trusted, z=2.0,
                                                       seed=0, device="cpu")
    caught = [(beyond_trusted_spread(c, t, 2.5) & truth).sum() for c, t in
              ((first, first_trusted), (second, second_trusted))]
    # clean records: what the second pass gives clean collected records against held-out trusted
    clean, clean_trusted = provenance_scores(records, seed=0, device="cpu")
    refined, refined_trusted = refined_provenance_scores(records, clean, clean_trusted, z=2.0, seed=0,
                                                         device="cpu")
    apart = beyond_trusted_spread(refined, refined_trusted, 2.5).mean()
    print(f"all-to-all BadNets: AUROC {auroc(first, truth):.3f} -> {auroc(second, truth):.3f}, "
          f"beyond 2.5 trusted spreads {caught[0]} -> {caught[1]} of {truth.sum()} poisoned; "
          f"clean data: {apart:.3f} of the collected records set apart")
    # measured: AUROC 0.975 -> 0.996, 263 -> 396 of 400 beyond 2.5 spreads; clean data 0.040
    # (the first pass beyond 2 spreads sets apart 0.03-0.04 of clean Fashion-MNIST records)
    assert auroc(second, truth) >= 0.98 and auroc(second, truth) > auroc(first, truth)
    assert caught[1] >= 0.9 * truth.sum()
    assert apart <= 0.06


def test_the_second_pass_keeps_the_first_when_there_are_no_outliers():
    x = np.random.default_rng(0).integers(0, 255, (12, 1, 8, 8), dtype=np.uint8)
    records = Records(x, one_hot(np.array([0, 1] * 6), 2), np.array([f"r{i}" for i in range(12)], dtype=object),
                      np.array([True] * 4 + [False] * 8), ["a", "b"], "image")
    first, first_trusted = np.full(8, 0.5), np.array([0.4, 0.5, 0.6, 0.5])
    second, second_trusted = refined_provenance_scores(records, first, first_trusted, z=2.0, device="cpu")
    assert second is first and second_trusted is first_trusted


def test_trusted_spreads_measure_log_odds_in_trusted_deviations():
    trusted = np.array([0.5, 0.5, 0.5, 0.5, 0.73105858, 0.26894142])  # log-odds 0,0,0,0,1,-1
    sd = np.sqrt(2 / 6)
    collected = np.array([0.5, 0.73105858, 0.26894142])
    assert np.allclose(trusted_spreads(collected, trusted), [0.0, 1 / sd, -1 / sd], atol=1e-6)
    assert np.isnan(trusted_spreads(collected, np.array([0.5]))).all()       # one trusted score
    assert np.isnan(trusted_spreads(collected, np.array([0.7, 0.7]))).all()  # no spread


def test_beyond_trusted_spread_cuts_in_log_odds_at_z_trusted_deviations():
    trusted = np.array([0.5, 0.5, 0.5, 0.5, 0.73105858, 0.26894142])  # log-odds 0,0,0,0,1,-1
    sd = np.sqrt(2 / 6)
    just_below, just_above = 1 / (1 + np.exp(-(2 * sd - 0.01))), 1 / (1 + np.exp(-(2 * sd + 0.01)))
    flags = beyond_trusted_spread(np.array([just_below, just_above, 0.999999]), trusted, z=2)
    assert flags.tolist() == [False, True, True]
    assert not beyond_trusted_spread(np.array([0.9]), np.array([0.5]), z=2).any()  # no spread to measure


def test_shifted_classes_are_those_with_almost_no_record_below_the_trusted_median():
    trusted = np.linspace(0.1, 0.9, 9)                     # median 0.5
    rng = np.random.default_rng(0)
    clean = rng.uniform(0.1, 0.9, 100)                     # class 0: about half below
    stamped = np.r_[rng.uniform(0.6, 1.0, 95), [0.2] * 5]  # class 1: 5% below
    mixed = np.r_[rng.uniform(0.6, 1.0, 70), [0.2] * 30]   # class 2: 30% below (all-to-one target)
    few = rng.uniform(0.6, 1.0, 20)                        # class 3: shifted, but only 20 records
    scores = np.r_[clean, stamped, mixed, few]
    classes = np.repeat([0, 1, 2, 3], [100, 100, 100, 20])
    assert shifted_classes(scores, trusted, classes, 5, floor=0.1).tolist() == [False, True, False, False, False]
    assert shifted_classes(scores, trusted, classes, 5, floor=0.1, min_records=10)[3]
    assert not shifted_classes(scores, trusted, classes, 5, floor=0).any()        # off
    assert not shifted_classes(scores, trusted[:1], classes, 5, floor=0.1).any()  # no median to trust


def test_binomial_log_cdf_is_the_exact_lower_tail():
    for k, n, p in [(0, 76, 0.16), (3, 20, 0.5), (7, 7, 0.3), (2, 220, 0.05)]:
        exact = sum(math.comb(n, j) * p ** j * (1 - p) ** (n - j) for j in range(k + 1))
        assert binomial_log_cdf(np.array([k]), n, np.array([p]))[0] == pytest.approx(math.log(exact), rel=1e-9)


def test_document_counts_count_each_record_once_and_never_the_padding():
    ids = np.array([[3, 3, 1, 0], [1, 2, 0, 0], [3, 0, 0, 0]])
    counts = document_counts(ids, np.array([0, 1, 1]), 2, 4)
    assert counts.tolist() == [[0, 1, 0, 1], [0, 1, 1, 1]]


def _texts(rng, n: int, vocabulary: range, length: int = 12) -> np.ndarray:
    return rng.choice(np.array(vocabulary), size=(n, length))


def test_planted_shares_find_a_planted_word_and_nothing_in_clean_texts():
    rng = np.random.default_rng(0)
    n, n_trusted = 2000, 100
    # two classes with their own words (ids 10-59 and 60-109) and shared ones (110-159); the
    # trusted set is class-balanced (50 + 50), the collected texts 80% class 0
    classes = np.r_[np.zeros(1560, np.int64), np.ones(340, np.int64), np.zeros(50, np.int64), np.ones(50, np.int64)]
    ids = np.where(rng.random((n, 12)) < 0.5, _texts(rng, n, range(110, 160)),
                   np.where(classes[:, None] == 0, _texts(rng, n, range(10, 60)), _texts(rng, n, range(60, 110))))
    trusted = np.r_[np.zeros(1900, bool), np.ones(n_trusted, bool)]
    # clean: neither the skewed class mix nor sampling noise over 150 words makes a suspect
    assert not planted_shares(ids, trusted, classes, 2, 200).any()
    planted = ids.copy()
    carriers = rng.permutation(1900)[:190]           # 10% of the collected texts
    planted[carriers, rng.integers(0, 12, 190)] = 7   # a word no trusted text has
    found = planted_shares(planted, trusted, classes, 2, 200)
    assert np.flatnonzero(found).tolist() == [7] and found[7] == 1.0  # no trusted text carries it
    assert not planted_shares(planted, trusted, classes, 2, 200, alpha=0).any()  # off
    # too few trusted texts to expect the word in many (10 of them, 1 expected): nothing found
    few = np.r_[np.zeros(1990, bool), np.ones(10, bool)]
    assert not planted_shares(planted, few, classes, 2, 200)[7]
    # the same word in trusted texts at the collected rate is no suspect
    planted[1900 + rng.permutation(n_trusted)[:10], 0] = 7
    assert not planted_shares(planted, trusted, classes, 2, 200)[7]


def test_the_engine_leaves_out_what_the_provenance_test_sets_apart(fmnist):
    records = _records(fmnist, 4000, 0.05)
    result = poison(records, AttackConfig(kind="badnets", target=0, clean_label=True, rate=0.1, seed=3))
    config = dataclasses.replace(FAST, provenance_z=2.0)
    res = heal_and_select(result.records, config)
    truth = result.poisoned[res.collected_index]
    accepted = res.selected_history[0]
    print(f"accepted: poisoned {accepted[truth].mean():.2f}, clean {accepted[~truth].mean():.2f}; "
          f"left out for provenance {res.metrics['left_out_for_provenance']}")
    # the labels are right, so without the test nearly every poisoned record is accepted. The
    # per-record cut alone left 0.37 of them accepted; the patch is on 373 of the ~380 collected
    # class-0 records, so class 0 is set apart whole (measured: 0 poisoned records accepted).
    assert res.metrics["shifted_classes"] == [records.class_names[0]]
    assert accepted[truth].mean() <= 0.05
    assert accepted[~truth].mean() >= 0.85
    # a set-apart record scores at least (1 - the last healed network's support)^power, in full
    # for the class set apart whole, for the others weighted by the distance beyond the cut or,
    # when higher, by how nearly the network rules their label out
    labels = result.records.labels[res.collected_index]
    against = 1 - support(torch.as_tensor(res.probs), torch.as_tensor(labels)).numpy()
    whole = labels.argmax(1) == 0
    distance = np.clip((res.provenance_spreads - config.refine_z) / config.shifted_ramp, 0, 1)
    ramp = np.where(whole, 1.0, np.maximum(
        distance, np.clip(1 - (1 - against) / config.shifted_unsupported, 0, 1)))
    floor = against ** config.shifted_power * ramp
    assert (res.scores[res.shifted] >= floor[res.shifted] - 1e-5).all()
    assert (res.scores[res.shifted] > floor[res.shifted] + 1e-5).any()
    assert (res.shifted == (whole | (res.provenance_spreads > config.refine_z))).all()
    # ... and a record of the class set apart whole scores at least its own distance beyond the
    # cut: the network backs its true label, so support alone would leave it unflagged
    assert (res.scores[whole] >= distance[whole] - 1e-5).all()
    print(f"patched records beyond the cut {(distance[whole & truth] > 0).mean():.3f}, "
          f"a ramp beyond it {(distance[whole & truth] >= 1).mean():.3f}; "
          f"detection AUROC {auroc(res.scores, truth):.4f}")
    assert (distance[whole & truth] > 0).mean() >= 0.9  # measured: 0.995 (0.633 a ramp beyond)
    assert auroc(res.scores, truth) >= 0.99             # measured: 0.9998


def test_the_set_apart_floor_reads_support_and_the_distance_beyond_the_cut():
    sup = torch.tensor([0.0, 0.5, 0.0, 0.0, 0.0, 1.0])
    beyond = torch.tensor([3.0, 3.0, 0.5, 0.0, -1.0, 3.0])  # trusted std beyond the cut
    whole = torch.tensor([False, False, False, False, True, False])
    floor = set_apart_floor(sup, beyond, whole, power=2, ramp=1.0)
    assert floor.tolist() == [1.0, 0.25, 0.5, 0.0, 1.0, 0.0]
    # ramp 0: every set-apart record counts fully
    assert set_apart_floor(sup, beyond, whole, power=2, ramp=0).tolist() == [1.0, 0.25, 1.0, 1.0, 1.0, 0.0]
    # set apart with its class (a clean-label trigger took the class over): the network backs the
    # true label, so a record's own distance counts too, whatever its support; only beyond the cut
    by_class = torch.tensor([False, False, False, False, True, True])
    floor = set_apart_floor(sup, beyond, whole | by_class, power=2, ramp=1.0, by_class=by_class)
    assert floor.tolist() == [1.0, 0.25, 0.5, 0.0, 1.0, 1.0]
    by_class = torch.tensor([False, True, True, True, False, False])
    assert set_apart_floor(torch.ones(6), beyond, by_class, power=2, ramp=2.0,
                           by_class=by_class).tolist() == [0.0, 1.0, 0.25, 0.0, 0.0, 0.0]
    # a label the network all but rules out counts (nearly) fully however near the cut: the
    # weight is the higher of the distance and 1 - support / unsupported
    sup = torch.tensor([0.0, 0.025, 0.05, 0.5, 0.0])
    beyond = torch.tensor([0.1, 0.1, 0.1, 0.1, 3.0])
    none = torch.zeros(5, dtype=torch.bool)
    floor = set_apart_floor(sup, beyond, none, power=1, ramp=2.0, unsupported=0.05)
    assert torch.allclose(floor, torch.tensor([1.0, 0.975 * 0.5, 0.95 * 0.05, 0.5 * 0.05, 1.0]))
    assert torch.allclose(set_apart_floor(sup, beyond, none, power=1, ramp=2.0),  # off: distance only
                          (1 - sup) * torch.tensor([0.05, 0.05, 0.05, 0.05, 1.0]))


def test_records_carry_each_whole_texts_token_set():
    ids = np.array([[3, 4], [5, 0], [6, 3]])
    sets = np.array([[3, 4, 9], [5, 0, 0], [3, 6, 0]], dtype=np.int32)
    records = Records(ids, one_hot(np.array([0, 1, 0]), 2), np.array(["a", "b", "c"], dtype=object),
                      np.array([True, False, False]), ["x", "y"], "text", vocabulary_size=10,
                      token_sets=sets)
    assert records.subset(np.array([2, 0])).token_sets.tolist() == [[3, 6, 0], [3, 4, 9]]
    assert records.collected.token_sets.tolist() == [[5, 0, 0], [3, 6, 0]]
    assert records.with_features(ids + 1).token_sets is sets  # the same vocabulary: kept
    assert records.with_features(ids, vocabulary_size=20).token_sets is None  # new ids: dropped
    narrow = records.subset(np.array([1])).with_features(ids[:1], token_sets=sets[1:2, :1])
    assert concat([records, narrow]).token_sets.tolist() == [*sets.tolist(), [5, 0, 0]]
    with pytest.raises(ValueError, match="token_sets has 2 rows"):
        Records(ids, records.labels, records.ids, records.trusted, ["x", "y"], "text", token_sets=sets[:2])


def test_the_engine_counts_a_planted_word_past_the_truncation():
    """A trigger word in the part of each text the network does not read (past max_tokens) is
    still counted in the whole texts' token sets: every carrier is set apart and scores 1."""
    rng = np.random.default_rng(0)
    n, n_trusted = 1200, 100
    classes = np.r_[np.zeros(550, np.int64), np.ones(550, np.int64), np.zeros(50, np.int64), np.ones(50, np.int64)]
    ids = np.where(classes[:, None] == 0, _texts(rng, n, range(10, 60)), _texts(rng, n, range(60, 110)))
    trusted = np.r_[np.zeros(n - n_trusted, bool), np.ones(n_trusted, bool)]
    carriers = rng.permutation(n - n_trusted)[:110]
    sets = np.concatenate([ids, np.zeros((n, 1), np.int64)], axis=1)
    sets[carriers, -1] = 7  # read by the word count only: `features` stop before it
    records = Records(ids, one_hot(classes, 2), np.array([f"r{i}" for i in range(n)], dtype=object),
                      trusted, ["a", "b"], "text", vocabulary_size=200, token_sets=sets)
    config = dataclasses.replace(FAST, provenance_z=0.0)  # the word count alone
    res = heal_and_select(records, config)
    assert res.metrics["planted_tokens"] == [7]
    carrying = np.isin(res.collected_index, carriers)
    assert (res.planted_token[carrying] == 7).all() and not res.planted_token[~carrying].any()
    assert res.shifted[carrying].all() and (res.scores[carrying] >= 1.0).all()
    # without the token sets the engine reads the truncated ids: the word is invisible
    blind = heal_and_select(dataclasses.replace(records, token_sets=None), config)
    assert blind.metrics["planted_tokens"] == [] and not blind.shifted.any()


def test_spoken_digits_provenance_does_not_memorise_the_vetted_clips(shared_data):
    # Real spoken digits (FSDD, its training recordings), 5% vetted per class, a clean-label
    # 100 ms tone on class 0. The first pass trains on ~65 vetted clips, repeated to weigh as
    # much as ~1,200 collected ones: unshifted, it memorised them (held-out trusted clips scored
    # P(collected) 0.99, as the collected ones) and ranked the tone at AUROC 0.75 (benchmark
    # split, seed 1). Shifted in time by up to 50 ms it cannot, and the tone's class has no
    # collected clip below the trusted median: set apart whole. Measured on this split: AUROC
    # 0.949, held-out trusted median P(collected) 0.933, class 0's share below it 0.00
    # (unshifted, audio_shift_s=0: 0.749, 0.996, 0.18 -- this test then fails).
    from connectors.audio_files import read_audio_records
    wav = shared_data / "fsdd" / "wav"
    if not wav.is_dir():
        pytest.skip(f"{wav} is absent")
    records, _, _ = read_audio_records(wav)
    take = np.array([int(i.rsplit("_", 1)[1].split(".")[0]) >= 5 for i in records.ids])
    records = records.subset(take)
    y = records.hard_labels.astype(np.int64)
    rng = np.random.default_rng(2)
    trusted = np.zeros(len(y), bool)
    for c in range(10):
        trusted[rng.permutation(np.flatnonzero(y == c))[:14]] = True
    records = dataclasses.replace(records, trusted=trusted)
    result = poison(records, AttackConfig(kind="tone", target=0, clean_label=True, rate=0.1, seed=1))
    scores, trusted_scores = provenance_scores(result.records, seed=1, device="cpu")
    truth = result.poisoned[~trusted]
    detection = auroc(scores, truth)
    labels = y[~trusted]
    below = [(scores[labels == c] < np.median(trusted_scores)).mean() for c in range(10)]
    print(f"clean-label tone: AUROC {detection:.3f}, held-out trusted median P(collected) "
          f"{np.median(trusted_scores):.3f}, share below the trusted median per class {np.round(below, 2)}")
    assert truth.sum() >= 200 and (labels[truth] == 0).all()
    assert detection >= 0.9
    assert shifted_classes(scores, trusted_scores, labels, 10, 0.1).tolist() == [True] + [False] * 9


def test_waveforms_shift_in_time_with_edge_fill():
    from sanitizer.training import random_translate
    x = torch.arange(80, dtype=torch.float32).reshape(8, 10)
    out = random_translate(x, 3, torch.Generator().manual_seed(0))
    moved = []
    for row, shifted in zip(x, out):
        # each clip is itself moved by one offset in [-3, 3], its ends repeated
        offsets = [d for d in range(-3, 4)
                   if torch.equal(shifted, row[(torch.arange(10) + d).clamp(0, 9)])]
        assert len(offsets) == 1
        moved += offsets
    assert len(set(moved)) > 1  # clips move independently
    assert torch.equal(random_translate(x, 0, torch.Generator()), x)


def test_the_first_round_holds_back_suspects_the_provenance_test_puts_far_out(fmnist, reuse_provenance):
    # a small trusted set (1%, 4 images a class) judges poorly: the network healed on it alone
    # doubts many clean records, and the probes cannot tell those from all-to-all poison
    records = _records(fmnist, 4000, 0.01)
    result = poison(records, AttackConfig(kind="badnets", target=None, rate=0.1, seed=3))
    # two provenance folds (not the ten a set this small gets by default, tested above): five
    # times less training, and the provenance test's spreads are what the gate reads either way
    config = dataclasses.replace(FAST, provenance_z=2.0, iterations=2, train_epochs=1,
                                 provenance_folds=2)
    stages = []

    class Stages:  # which training stages ran
        def stage(self, name, total):
            stages.append(name)

        def advance(self):
            pass

    gated = heal_and_select(result.records, config, progress=Stages())
    plain = heal_and_select(result.records, dataclasses.replace(config, suspect_z=0.0))
    truth = result.poisoned[gated.collected_index]
    held_back = plain.selected_history[0] & ~gated.selected_history[0]
    print(f"first round held back {held_back.sum()} ({truth[held_back].mean():.2f} poisoned); "
          f"accepted poisoned {plain.selected_history[0][truth].sum()} -> "
          f"{gated.selected_history[0][truth].sum()}")
    # the same run up to the first selection: the gate only takes records out, and only far ones
    assert not (gated.selected_history[0] & ~plain.selected_history[0]).any()
    assert held_back.sum() == gated.metrics["first_round_far_suspects"] > 0
    assert (gated.provenance_spreads[held_back] > config.suspect_z).all()
    assert plain.metrics["first_round_far_suspects"] == 0
    # what it holds back is poison far above the 10% base rate (measured with these two folds:
    # 0.40, 348 -> 292 poisoned records accepted; with the ten folds of the default, which set
    # more apart: 0.37, 77 -> 32 on an AMD EPYC host, 0.38, 63 -> 28 on session 22's)
    assert truth[held_back].mean() >= 0.3
    assert gated.selected_history[0][truth].sum() < plain.selected_history[0][truth].sum()
    # 40 trusted images are few (few_trusted, 100): what the gate held back stays out in the
    # second round, whose judge has learned from the first round's accepted records -- without
    # the gate that judge accepts some of them -- and no heal follows the first
    assert gated.metrics["few_trusted"] and not (held_back & ~gated.held_back).any()
    assert not (gated.selected_history[1] & gated.held_back).any()
    assert plain.selected_history[1][held_back].any()
    assert stages.count("heal") == 1 and stages.count("train") == 2
