"""The scores the engine and the report are built on, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sanitizer.scoring import (FlagRule, agreement, auto_threshold, contributor_summary, disagreement,
                               flag, lift, rank, reasons, scale_by_dominance, specific_lift, support, vouched,
                               to_collected_priors, undo_prior_shift)


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def test_agreement_is_the_overlap_of_label_and_prediction():
    probs = t([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    hard = t([[1, 0, 0], [1, 0, 0]])
    soft = t([[0.6, 0.2, 0.2], [0.6, 0.2, 0.2]])
    assert agreement(probs, hard).tolist() == pytest.approx([0.7, 0.1])
    assert agreement(probs, soft).tolist() == pytest.approx([0.6 + 0.2 + 0.1, 0.1 + 0.1 + 0.2])


def test_support_backs_the_labels_class_up_to_its_own_weight():
    probs = t([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.1, 0.8, 0.1]])
    hard = t([[1, 0, 0]] * 3)
    soft = t([[0.6, 0.2, 0.2]] * 3)
    assert support(probs, hard).tolist() == pytest.approx([0.7, 0.5, 0.1])
    assert support(probs, soft).tolist() == pytest.approx([1.0, 0.5 / 0.6, 0.1 / 0.6])


def test_disagreement_of_a_soft_poisoned_label_is_as_high_as_a_hard_ones():
    # the healed network is sure of class 2; a poisoned label names class 0, hard or at 0.64
    probs = t([[0.0, 0.05, 0.95]])
    hard = t([[1, 0, 0]])
    soft = t([[0.64, 0.18, 0.18]])
    assert disagreement(probs, soft).item() == pytest.approx(disagreement(probs, hard).item())
    # the overlap would have let the soft label hide: 1 - agreement is only 1 - 0.23
    assert 1 - agreement(probs, soft).item() < 0.8


def test_disagreement_weighs_by_confidence():
    # both predict another class than the label; the confident one is the stronger suspect
    labels = t([[1, 0, 0], [1, 0, 0]])
    probs = t([[0.0, 1.0, 0.0], [0.2, 0.4, 0.4]])
    d = disagreement(probs, labels).tolist()
    assert d == pytest.approx([1.0, 0.8 * 0.4])
    assert d[0] > d[1]


def test_lift_of_hard_labels_is_the_gain_in_probability():
    labels = t([[0, 1, 0], [0, 1, 0], [0, 1, 0]])
    healed = t([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.5, 0.3, 0.2]])
    probe = t([[0.1, 0.85, 0.05], [0.1, 0.6, 0.3], [0.4, 0.5, 0.1]])
    # 0.85 - 0.05; a loss is clipped to 0; 0.5 - 0.3
    assert lift(probe, healed, labels).tolist() == pytest.approx([0.8, 0.0, 0.2])


def test_lift_scales_soft_labels_to_their_own_weight():
    # a low-confidence poisoned label: 0.6 on class 1. A probe that sends the record to class 1
    # as surely as the label does (0.6) lifts it as high as a hard label fully learned.
    soft = t([[0.2, 0.6, 0.2]])
    healed = t([[0.9, 0.0, 0.1]])
    probe = t([[0.2, 0.6, 0.2]])
    assert lift(probe, healed, soft).item() == pytest.approx(1.0)
    half = t([[0.6, 0.3, 0.1]])
    assert lift(half, healed, soft).item() == pytest.approx(0.5)
    # the unscaled gain would have been 0.6 and 0.3: under the engine's 0.5 threshold at half
    assert (half[0, 1] - healed[0, 1]).item() < 0.5


def test_scale_by_dominance_keeps_dominant_labels_and_demotes_those_that_give_way():
    scores = t([0.9, 0.9, 0.9, 0.6, 1.0])
    dominance = t([0.95, 0.2, 0.1, 0.05, -0.3])
    # at or above `full` nothing changes; below it the score falls in proportion; negative = 0
    assert scale_by_dominance(scores, dominance, 0.2).tolist() == pytest.approx(
        [0.9, 0.9, 0.45, 0.15, 0.0])
    assert scale_by_dominance(scores, dominance, 1.0).tolist() == pytest.approx(
        [0.855, 0.18, 0.09, 0.03, 0.0])


def test_specific_lift_subtracts_what_look_alikes_labelled_otherwise_gain():
    # three records labelled class 0 (the third softly, 0.6), each with two look-alikes
    healed = t([[0.1, 0.9], [0.1, 0.9], [0.2, 0.8]])
    probe = t([[0.9, 0.1], [0.8, 0.2], [0.5, 0.5]])            # own gains 0.8, 0.7, 0.3
    labels = t([[1, 0], [1, 0], [0.6, 0.4]])
    alike_healed = t([[[0.1, 0.9], [0.2, 0.8]],
                      [[0.1, 0.9], [0.3, 0.7]],
                      [[0.2, 0.8], [0.2, 0.8]]])
    alike_probe = t([[[0.15, 0.85], [0.25, 0.75]],            # look-alikes barely move: a trigger
                     [[0.6, 0.4], [0.9, 0.1]],                # they move too: a content rule
                     [[0.1, 0.9], [0.1, 0.9]]])               # they move away: counts as 0
    alike_labels = t([[[0, 1], [0, 1]],
                      [[0, 1], [1, 0]],                       # the second shares class 0: ignored
                      [[0, 1], [0, 1]]])
    got = specific_lift(probe, healed, labels, alike_probe, alike_healed, alike_labels)
    # 0.8 - 0.05; 0.7 - 0.5 (only the look-alike labelled 1 counts); (0.3 - 0) / 0.6
    assert got.tolist() == pytest.approx([0.75, 0.2, 0.5])
    # no look-alike labelled otherwise: the whole lift is the record's own
    same = t([[[1, 0], [1, 0]]] * 3)
    assert specific_lift(probe, healed, labels, alike_probe, alike_healed, same).tolist() == \
        pytest.approx([0.8, 0.7, 0.5])


def test_undo_prior_shift_removes_a_shift_of_priors_and_keeps_a_trigger():
    # The healed network and a probe on the same two trigger-free reference records: the probe
    # has learned to say class 0 twice as often (0.6 vs 0.3 on average), a shift of priors.
    healed_ref = t([[0.2, 0.8], [0.4, 0.6]])
    probe_ref = t([[0.5, 0.5], [0.7, 0.3]])
    ratio = torch.tensor([0.3 / 0.6, 0.7 / 0.4])
    # a clean record the probe moved only by the prior, and a triggered one it is sure of
    probe = t([[0.6, 0.4], [0.99, 0.01]])
    out = undo_prior_shift(probe, probe_ref, healed_ref)
    expected = probe * ratio
    expected = expected / expected.sum(1, keepdim=True)
    assert out.tolist() == [pytest.approx(r) for r in expected.tolist()]
    assert out.sum(1).tolist() == pytest.approx([1.0, 1.0])
    # the clean record falls back to 0.6 * 0.5 / (0.3 + 0.7) = 0.3; the triggered one stays sure
    assert out[0, 0].item() == pytest.approx(0.3)
    assert out[1, 0].item() > 0.96
    # after the correction the reference records' mean is the healed network's, class by class
    assert undo_prior_shift(probe_ref, probe_ref, healed_ref).mean(0).tolist() == pytest.approx(
        healed_ref.mean(0).tolist(), abs=0.05)
    # a probe with no shift is left alone
    assert undo_prior_shift(probe, healed_ref, healed_ref).tolist() == [
        pytest.approx(r) for r in probe.tolist()]


def test_undo_prior_shift_divides_no_class_by_more_than_max_division():
    # the healed network hardly ever predicts class 0 on the references (a class absent from the
    # collected data); the probe, fine-tuned on records labelled 0, predicts it on a quarter
    healed_ref = t([[0.001, 0.999], [0.001, 0.999]])
    probe_ref = t([[0.25, 0.75], [0.25, 0.75]])
    poisoned = t([[0.9, 0.1]])
    unbounded = undo_prior_shift(poisoned, probe_ref, healed_ref)
    assert unbounded[0, 0].item() < 0.05        # divided 250-fold: the poisoned record's lift is gone
    bounded = undo_prior_shift(poisoned, probe_ref, healed_ref, max_division=2.0)
    ratio = torch.tensor([0.5, 0.999 / 0.75])    # class 0 halved at most
    expected = poisoned * ratio
    assert bounded.tolist() == [pytest.approx(r) for r in (expected / expected.sum(1, keepdim=True)).tolist()]
    assert bounded[0, 0].item() > 0.75


def test_to_collected_priors_recovers_the_class_mix_of_the_records():
    # A calibrated two-class model trained under balanced priors, predicting records that are
    # 87% class 0: its raw mean overstates class 1; EM moves it to the records' own mix.
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(20000, generator=g) < 0.13).long()
    x = torch.randn(20000, generator=g) + 2.0 * y
    p1 = torch.sigmoid(2.0 * x - 2.0)             # exact posterior under equal priors
    probs = torch.stack([1 - p1, p1], dim=1)
    assert probs.mean(0)[1].item() > 0.2
    adjusted = to_collected_priors(probs, torch.tensor([0.5, 0.5]))
    assert adjusted.mean(0).tolist() == pytest.approx([0.87, 0.13], abs=0.01)
    assert adjusted.sum(1).tolist() == pytest.approx([1.0] * 20000)
    # more accurate than the raw predictions on the records' true classes (log loss)
    raw_loss = -probs[torch.arange(20000), y].log().mean()
    adj_loss = -adjusted[torch.arange(20000), y].log().mean()
    assert adj_loss < raw_loss - 0.05
    # predictions made on records with the training mix are left (nearly) as they are
    x_even = torch.randn(20000, generator=g) + 2.0 * (torch.arange(20000) % 2)
    p1_even = torch.sigmoid(2.0 * x_even - 2.0)
    balanced = torch.stack([1 - p1_even, p1_even], dim=1)
    assert (to_collected_priors(balanced, torch.tensor([0.5, 0.5])) - balanced).abs().max() < 0.03


def test_auto_threshold_cuts_between_two_modes_and_stays_in_bounds():
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.uniform(0.0, 0.15, 900), rng.uniform(0.85, 1.0, 100)])
    cut = auto_threshold(scores)
    assert 0.15 < cut < 0.85
    assert ((scores >= cut) == (np.arange(1000) >= 900)).all()
    assert 0.2 <= auto_threshold(rng.uniform(0.0, 0.05, 1000)) <= 0.8  # no poison: kept in bounds
    assert auto_threshold(np.array([])) == 0.5


def test_flag_rules_and_ranks():
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.0])
    assert rank(scores).tolist() == [4, 1, 3, 2, 5]  # ties broken by position
    assert flag(scores, FlagRule(threshold=0.5)).tolist() == [False, True, True, True, False]
    assert flag(scores, FlagRule(top_k=2)).tolist() == [False, True, False, True, False]
    assert flag(scores, FlagRule(contamination=0.2)).tolist() == [False, True, False, False, False]
    with pytest.raises(ValueError, match="at most one"):
        FlagRule(threshold=0.5, top_k=3)
    with pytest.raises(ValueError, match="threshold"):
        FlagRule(threshold=1.5)


def test_contributor_summary_puts_the_poisoner_first():
    contributors = np.array(["a"] * 50 + ["b"] * 50 + [None] * 10, dtype=object)
    flags = np.zeros(110, bool)
    flags[50:90] = True   # b: 40 of 50 flagged
    flags[0:2] = True     # a: 2 of 50
    rows = contributor_summary(contributors, flags)
    assert [r["contributor"] for r in rows][0] == "b"
    b = rows[0]
    assert (b["records"], b["flagged"], b["flagged_rate"]) == (50, 40, 0.8)
    assert b["p_value"] < 1e-6 and b["z"] > 5
    assert {r["contributor"] for r in rows} == {"a", "b", "(none)"}


def test_vouched_looks_for_the_label_among_the_nearest_trusted_records():
    trusted = torch.nn.functional.normalize(t([[1, 0], [0.9, 0.1], [0, 1], [-1, 0]]), dim=1)
    trusted_classes = torch.tensor([0, 0, 1, 2])
    features = torch.nn.functional.normalize(t([[1, 0.05], [1, 0.05], [0.1, 1], [-1, -0.2]]), dim=1)
    labels = t([[0, 1, 0],          # near the two class-0 records, labelled 1
                [1, 0, 0],          # the same place, labelled 0: vouched
                [0.3, 0.7, 0],      # soft label, top class 1, nearest is the class-1 record
                [0, 1, 0]])         # near class 2, labelled 1
    assert vouched(features, labels, trusted, trusted_classes, 1).tolist() == [False, True, True, False]
    # the class-1 record is the last one's second-nearest and the first one's third-nearest
    assert vouched(features, labels, trusted, trusted_classes, 2).tolist() == [False, True, True, True]
    assert vouched(features, labels, trusted, trusted_classes, 3).tolist() == [True, True, True, True]
    assert not vouched(features, labels, trusted, trusted_classes, 0).any()


def test_reasons_say_when_the_provenance_test_set_a_record_apart():
    flags = np.array([True, False, False])
    given, predicted = np.array([0, 1, 1]), np.array([1, 1, 1])
    out = reasons(flags, given, predicted, np.array([0.9, 0.8, 0.8]), np.array([0.7, 0.1, 0.1]),
                  ["cat", "dog"], shifted=np.array([True, True, False]))
    assert "backdoor-like" in out[0]  # a flag says why it is flagged, shifted or not
    assert "tells the record from the trusted ones" in out[0]
    assert "from the trusted records" in out[1] and "left out of training" in out[1]
    assert out[2] == "healed model agrees with the label"
    assert reasons(flags, given, predicted, np.ones(3), np.ones(3), ["cat", "dog"])[1] == \
        "healed model agrees with the label"


def test_reasons_say_when_the_first_round_held_a_record_back():
    flags = np.array([False, True, False])
    given, predicted = np.array([0, 0, 1]), np.array([1, 1, 1])
    out = reasons(flags, given, predicted, np.full(3, 0.8), np.array([0.2, 0.9, 0.1]),
                  ["cat", "dog"], held_back=np.array([True, True, False]))
    assert "kept out of training" in out[0] and "first judge" in out[0]
    assert "backdoor-like" in out[1]  # a flag says why it is flagged, held back or not
    assert out[2] == "healed model agrees with the label"


def test_reasons_name_the_planted_word_a_text_carries():
    flags = np.array([True, False, True])
    given, predicted = np.array([0, 0, 1]), np.array([0, 0, 0])
    out = reasons(flags, given, predicted, np.array([0.9, 0.8, 0.7]), np.array([0.7, 0.1, 0.9]),
                  ["ham", "spam"], shifted=np.array([True, False, False]),
                  planted=np.array(["cf", "", ""], dtype=object))
    # a clean-label carrier: its label is right, the word is why it is flagged
    assert out[0].startswith("carries 'cf'") and "label says 'ham'" in out[0]
    assert out[1] == "healed model agrees with the label"
    assert "backdoor-like" in out[2]  # no word: the usual reason
