"""End-to-end defense checks on real Fashion-MNIST with a planted backdoor of known ground truth.

Small and fast (a few thousand records, a small network, short schedules), so the thresholds
are set below what this configuration measures, with a margin, and far from what no defense
gives: the undefended network is trained in the same test and must be backdoored, or the test
proves nothing.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sanitizer.attacks import AttackConfig, poison, triggered_test_set
from sanitizer.heal_and_select import (OWN_LIFT_FROM, HealSelectConfig, accepts_suspects,
                                       balanced_core, can_superimpose, heal_and_select,
                                       later_heal_steps, own_lift_weight, superimpose,
                                       unlearns_set_apart_only)
from sanitizer.metrics import accuracy, attack_success_rate, auroc, recall_at_k
from sanitizer.plain_training import train_plain
from sanitizer.records import Records, one_hot
from sanitizer.training import predict_proba, resident

N, N_TEST, TRUSTED = 3000, 1000, 0.1
FAST = HealSelectConfig(widths=(8, 16, 32), seed_steps=150, train_epochs=2,
                        iterations=1, probe_steps=60, retrain=False, device="cpu")
# retrain=False (also the default for these records, not text): two passes would not train a
# served network afresh, and the engine keeps the retrain to the rounds' passes on purpose (longer
# let a backdoor in: RESULTS.md, session 15); the switch is tested below


def fmnist_records(fmnist) -> tuple[Records, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    pick = rng.permutation(len(fmnist["x_train"]))[:N]
    y = fmnist["y_train"][pick].astype(np.int64)
    trusted = np.zeros(N, bool)
    trusted[rng.permutation(N)[: int(TRUSTED * N)]] = True
    names = [str(c) for c in fmnist["class_names"]]
    records = Records(fmnist["x_train"][pick][:, None], one_hot(y, 10),
                      np.array([f"r{i}" for i in range(N)], dtype=object), trusted, names, "image")
    t = rng.permutation(len(fmnist["x_test"]))[:N_TEST]
    return records, fmnist["x_test"][t][:, None], fmnist["y_test"][t].astype(np.int64)


def served(model, x_test, y_test, result) -> tuple[float, float]:
    cpu = torch.device("cpu")
    acc = accuracy(predict_proba(model, resident(x_test, cpu)).argmax(1).numpy(), y_test)
    x_bd, y_bd, _ = triggered_test_set(x_test, y_test, result)
    asr = attack_success_rate(predict_proba(model, resident(x_bd, cpu)).argmax(1).numpy(), y_bd)
    return acc, asr


# Thresholds per attack: (min AUROC, min top-k recall, max ASR). Measured with this config on
# this machine (the engine's defaults for images: no heal after the round, session 25): BadNets
# AUROC 0.998, top-k 0.96, ASR 0.075, accuracy 0.718 (no defense 0.957; with the heal 0.997 /
# 0.96 / 0.120); low-confidence BadNets AUROC 0.997, top-k 0.96, ASR 0.075, accuracy 0.682 (no
# defense 0.376; with the heal 0.998 / 0.99 / 0.087). benchmarks/RESULTS.md has the full figures.
# The same check on a GPU, where there is one (CI has none: it runs on the CPU rows): the engine
# and plain training run there, the returned networks serve on the CPU.
ON_CUDA = pytest.mark.skipif(not torch.cuda.is_available(),
                             reason="no CUDA device: the GPU run of the defense check needs one")


@pytest.mark.parametrize("attack,limits,device", [
    (dict(kind="badnets"), (0.97, 0.90, 0.20), "cpu"),
    (dict(kind="badnets", low_confidence=0.64), (0.97, 0.90, 0.20), "cpu"),
    pytest.param(dict(kind="badnets"), (0.97, 0.90, 0.20), "cuda", marks=ON_CUDA),
])
def test_heal_and_select_stops_the_backdoor(fmnist, attack, limits, device):
    records, x_test, y_test = fmnist_records(fmnist)
    result = poison(records, AttackConfig(**attack, target=0, rate=0.1, seed=3))
    res = heal_and_select(result.records, dataclasses.replace(FAST, device=device))
    truth = result.poisoned[res.collected_index]

    det_auroc = auroc(res.scores, truth)
    top_k = recall_at_k(res.scores, truth, int(truth.sum()))
    acc, asr = served(res.model, x_test, y_test, result)
    plain, _ = train_plain(result.records, epochs=8, widths=FAST.widths,
                           device=device)
    plain_acc, plain_asr = served(plain, x_test, y_test, result)
    print(f"{attack}: AUROC {det_auroc:.4f} top-k recall {top_k:.3f} | served acc {acc:.3f} "
          f"ASR {asr:.3f} | no defense acc {plain_acc:.3f} ASR {plain_asr:.3f}")

    min_auroc, min_top_k, max_asr = limits
    assert plain_asr >= 0.3, "the attack did not take on the undefended network: nothing tested"
    # the target's clean collected records look like its trusted ones: the class is not set
    # apart whole (sanitizer.provenance.shifted_classes), only records one by one
    assert res.metrics["shifted_classes"] == []
    assert det_auroc >= min_auroc
    assert top_k >= min_top_k
    assert asr <= max_asr and asr < plain_asr / 2
    assert acc >= 0.65


def two_class_data(rng, n: int, share: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels with ``share`` of class 1, and 6 Gaussian features shifted by 1.5 for class 1."""
    y = (rng.random(n) < share).astype(np.int64)
    return y, (rng.normal(size=(n, 6)) + 1.5 * y[:, None]).astype(np.float32)


def tabular_records(x: np.ndarray, y: np.ndarray, trusted: np.ndarray) -> Records:
    return Records(x, one_hot(y, 2), np.array([f"r{i}" for i in range(len(y))], dtype=object),
                   trusted, ["a", "b"], "tabular")


def test_collected_priors_are_used_only_for_a_trusted_set_not_drawn_at_random():
    # Collected records 90% class 0. A class-balanced trusted set is 0.4 (total variation) from
    # their mix: the engine judges them under their own priors. A random trusted sample is not.
    rng = np.random.default_rng(0)
    y, x = two_class_data(rng, 2000, 0.1)
    balanced = np.zeros(2000, bool)
    for c in (0, 1):
        balanced[rng.permutation(np.flatnonzero(y == c))[:50]] = True
    # core_floor=0: every trusted record heals, so the gate sees each trusted set's own mix
    tiny = HealSelectConfig(seed_steps=20, heal_steps=2, train_epochs=0.2, iterations=1, probe_steps=5,
                            core_floor=0, device="cpu")

    def metrics(trusted, config=tiny):
        return heal_and_select(tabular_records(x, y, trusted), config).metrics

    for trusted, expected in ((balanced, True), (rng.random(2000) < 0.05, False)):
        m = metrics(trusted)
        assert m["collected_priors"] is expected, m
        # two classes: the total variation is the gap between the shares of class 1
        assert m["prior_gap"] == pytest.approx(abs(y[trusted].mean() - y[~trusted].mean()), abs=1e-5)
    # prior_gap = 1 turns it off whatever the mix
    never = HealSelectConfig(**{**tiny.to_dict(), "prior_gap": 1.0})
    assert metrics(balanced, never)["collected_priors"] is False


def test_images_skip_the_later_heals_unless_asked_for():
    # images: no heal after a round's training by default (it undid what the accepted records
    # taught: RESULTS.md, session 25); audio, text and tabular records heal; a set count wins
    default = HealSelectConfig()
    assert later_heal_steps(default, "image") == 0
    assert [later_heal_steps(default, m) for m in ("audio", "text", "tabular")] == [30, 30, 30]
    assert later_heal_steps(HealSelectConfig(heal_steps=12), "image") == 12
    assert later_heal_steps(HealSelectConfig(heal_steps=0), "text") == 0


def test_balanced_core_caps_each_class_at_the_rarest_or_the_floor():
    classes = np.repeat([0, 1, 2], [190, 31, 45])
    keep = balanced_core(classes, floor=30, seed=0)
    assert np.bincount(classes[keep]).tolist() == [31, 31, 31]   # the rarest class sets the cap
    assert keep[classes == 1].all()                               # ... and keeps every record
    assert np.bincount(classes[balanced_core(classes, floor=40, seed=0)]).tolist() == [40, 31, 40]
    assert balanced_core(classes, floor=0, seed=0).all()          # 0: every trusted record
    assert balanced_core(np.repeat([0, 1], [110, 110]), floor=30, seed=0).all()  # balanced: whole
    # not skewed (commonest <= 3x the rarest, as random samples of balanced data are): whole
    assert balanced_core(np.repeat([0, 1, 2], [40, 30, 14]), floor=30, seed=0).all()
    assert not balanced_core(np.repeat([0, 1, 2], [40, 30, 13]), floor=30, seed=0).all()
    # another seed draws other records of the common classes, never fewer of the rare one
    other = balanced_core(classes, floor=30, seed=1)
    assert (other != keep).any() and other[classes == 1].all()


def test_the_engine_judges_with_the_core_and_scores_only_collected_records():
    # a random trusted sample of data that is 90% class 0: the judging network heals on a core
    rng = np.random.default_rng(1)
    y, x = two_class_data(rng, 2000, 0.1)
    trusted = rng.random(2000) < 0.1
    records = tabular_records(x, y, trusted)
    tiny = HealSelectConfig(seed_steps=20, heal_steps=2, train_epochs=0.2, iterations=1, probe_steps=5,
                            device="cpu")
    core = balanced_core(y[trusted], tiny.core_floor, tiny.seed)
    assert 0 < core.sum() < trusted.sum()
    result = heal_and_select(records, tiny)
    assert result.metrics["healing_core"] == core.sum()
    # the gate measures the core's class mix, not the whole trusted set's
    core_share = y[np.flatnonzero(trusted)[core]].mean()
    assert result.metrics["prior_gap"] == pytest.approx(abs(core_share - y[~trusted].mean()), abs=1e-5)
    assert result.metrics["collected_priors"] is True
    # trusted records outside the core are not scored: the report covers collected records only
    assert len(result.scores) == (~trusted).sum()
    # core_floor=0: every trusted record heals, and nothing is spared by the second network
    whole = heal_and_select(records, HealSelectConfig(**{**tiny.to_dict(), "core_floor": 0}))
    assert whole.metrics["healing_core"] == trusted.sum() and whole.metrics["backed_not_unlearned"] == 0


def test_the_retrained_network_only_serves_the_scores_are_the_rounds():
    # step 4 trains the served network afresh after the rounds: every score, selection and
    # judging probability is what the rounds gave without it; the served predictions are new
    rng = np.random.default_rng(2)
    y, x = two_class_data(rng, 1500, 0.5)
    trusted = rng.random(1500) < 0.1
    records = tabular_records(x, y, trusted)
    tiny = HealSelectConfig(seed_steps=20, heal_steps=2, train_epochs=2, iterations=2, probe_steps=5,
                            device="cpu")
    assert tiny.retrain is None  # by default on text only: these tabular records are not retrained
    default = heal_and_select(records, tiny)
    on = heal_and_select(records, dataclasses.replace(tiny, retrain=True))
    off = heal_and_select(records, dataclasses.replace(tiny, retrain=False))
    assert not default.metrics["retrained"] and "retrain" not in default.timings
    np.testing.assert_array_equal(default.served_probs, off.served_probs)
    assert on.metrics["retrained"] and not off.metrics["retrained"]
    for field in ("scores", "score_history", "selected_history", "unlearned_history", "probs"):
        np.testing.assert_array_equal(getattr(on, field), getattr(off, field), err_msg=field)
    np.testing.assert_array_equal(off.served_probs, off.probs)
    assert np.abs(on.served_probs - on.probs).max() > 0.01
    assert on.timings["retrain"] > 0 and "retrain" not in off.timings
    # the retrained network learned the task (measured: 0.970, as the healed one; Bayes ~0.97)
    served_accuracy = (on.served_probs.argmax(1) == y[~trusted]).mean()
    print(f"served accuracy {served_accuracy:.3f}, healed {(on.probs.argmax(1) == y[~trusted]).mean():.3f}")
    assert served_accuracy >= 0.85


def test_superimpose_keeps_both_records_and_a_trigger_where_it_was():
    a = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    a[:, :, -2:, -2:] = 255                                   # a white patch in the corner
    b = torch.full((2, 1, 4, 4), 100, dtype=torch.uint8)
    m = superimpose(a, b, "image")
    assert m.dtype == torch.uint8 and (m[:, :, -2:, -2:] == 255).all() and (m[:, :, 0, 0] == 100).all()
    wave = superimpose(torch.ones(2, 8) * 0.5, torch.ones(2, 8) * -0.25, "audio")
    assert torch.allclose(wave, torch.full((2, 8), 0.25))
    ids = superimpose(torch.tensor([[5, 9, 0]]), torch.tensor([[7, 0, 0]]), "text")
    assert ids.tolist() == [[5, 9, 0, 7, 0, 0]]               # every token of both, padding kept
    assert not can_superimpose("tabular")
    with pytest.raises(ValueError, match="tabular"):
        superimpose(torch.zeros(1, 3), torch.zeros(1, 3), "tabular")


def test_the_dominance_test_demotes_clean_records_not_triggered_ones(fmnist, reuse_provenance):
    # The blended trigger is laid over the whole image, so the healed network also rejects hard
    # clean records whose labels transfer in the probe. Laid over a record of the class the
    # healed network believes in, a triggered record keeps its label and a clean one gives way.
    records, _, _ = fmnist_records(fmnist)
    # 6 trusted images per class (2%): a weak healed network that rejects hard clean records
    y = records.labels.argmax(1)
    rng = np.random.default_rng(5)
    trusted = np.zeros(len(y), bool)
    for c in range(10):
        trusted[rng.permutation(np.flatnonzero(y == c))[:6]] = True
    records = dataclasses.replace(records, trusted=trusted)
    result = poison(records, AttackConfig(kind="blend", target=0, rate=0.1, seed=3))
    # FAST keeps the default look-alike test (10), which acts after these scores, on the one round;
    # without the first round's far-suspect gate (suspect_z, tested in test_provenance.py) a
    # record is left out for its lift or the provenance test alone; two provenance folds, as
    # when these figures were measured (the 60 trusted images would take 10: tested there too)
    config = dataclasses.replace(FAST, suspect_z=0.0, provenance_folds=2)
    res = heal_and_select(result.records, config)
    truth = result.poisoned[res.collected_index]
    rejected = ~res.selected_history[-1] & ~res.shifted   # lift >= threshold in the last round
    demoted = rejected & (res.score_history[-2] < FAST.threshold)
    print(f"rejected {rejected.sum()} ({(rejected & truth).sum()} poisoned), demoted "
          f"{demoted.sum()} ({(demoted & truth).sum()} poisoned)")
    assert res.metrics["demoted_by_dominance"] > 0
    assert demoted.sum() >= 5, "too few rejections were demoted to judge the test"
    assert (demoted & ~truth).sum() >= 0.8 * demoted.sum()
    assert (demoted & ~truth).sum() / max(1, (rejected & ~truth).sum()) >= 0.3
    # the look-alike test leaves (almost) every sure poisoned rejection to be unlearned: a
    # trigger's lift is the record's own (measured: 108 of 110 unlearned)
    sure = ~res.selected_history[-1] & (res.score_history[-2] >= FAST.unlearn_from)  # set apart too
    unlearned = res.unlearned_history[-1]
    assert (sure & truth).sum() >= 50 and not (unlearned & ~sure).any()
    assert (sure & truth & unlearned).sum() >= 0.9 * (sure & truth).sum()
    # partners=0: no test, nothing demoted, the scores are the lift (records the provenance
    # test set apart are never accepted, whatever their lift)
    off = heal_and_select(result.records, dataclasses.replace(config, partners=0))
    assert off.metrics["demoted_by_dominance"] == 0
    assert (((off.score_history[-2] >= FAST.threshold) | off.shifted) == ~off.selected_history[-1]).all()


def test_the_look_alike_test_spares_clean_records_whose_class_looks_like_another(shared_data, reuse_provenance):
    # Clean complaints, nothing poisoned: 21 trusted records per product (all 13 of the rarest).
    # Debt-collection complaints often read like credit-report ones, the healed network rejects
    # many of them, and a probe fine-tuned on some backs the rest: their lift is high. Their
    # look-alikes labelled "credit reporting" were pulled along -- a content rule, not a
    # trigger -- so the look-alike test must leave many of them out instead of unlearning them.
    from connectors.table_records import read_records  # (text: polars; the image checks above
    from pipelines.train import tokenize               # run where only torch is installed)
    path = shared_data / "cfpb_complaints" / "cfpb_sample_b.csv"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    records = read_records(path, label="product", text="narrative")
    # the split and the trusted draw of `benchmarks/defense.py --config audio-text` at seed 0
    test = np.random.default_rng(0).random(len(records)) < 0.2
    y = records.hard_labels
    train = records.subset(~test)
    rng = np.random.default_rng(1)
    trusted = np.zeros(len(train.labels), bool)
    for c in range(records.num_classes):
        trusted[rng.permutation(np.flatnonzero(train.hard_labels == c))[:21]] = True
    train = dataclasses.replace(train, trusted=trusted)
    encoded, tokenizer = tokenize(train)
    # 60 provenance steps (200 by default): the same records are rejected as with 200 (135 sure
    # rejections, 42 left out), at a third of the provenance test's time
    config = HealSelectConfig(seed_steps=200, probe_steps=60, train_epochs=2, iterations=1,
                              look_alikes=10, provenance_steps=60, device="cpu")
    res = heal_and_select(encoded, config)
    # one round: the sure rejections are the same with the test on or off (scores precede training)
    sure = ~res.selected_history[-1] & (res.score_history[-2] >= config.unlearn_from)
    unlearned = res.unlearned_history[-1]
    left_out = res.metrics["left_out_for_look_alikes"]
    cpu = torch.device("cpu")
    acc = accuracy(predict_proba(res.model, resident(tokenizer.encode(records.features[test]), cpu))
                   .argmax(1).numpy(), y[test])
    print(f"sure rejections {sure.sum()}, unlearned {unlearned.sum()}, left out {left_out}, "
          f"accuracy {acc:.3f}")
    assert sure.sum() >= 50, "too few clean records were rejected to judge the test"
    assert left_out == (sure & ~unlearned).sum()
    # measured: 42 of 135 left out (65 when the lift alone decided, vouchers=10**6: the vouchers
    # send back those whose nearest trusted complaints are all of other products)
    assert left_out >= 0.25 * sure.sum()
    # off: every sure rejection is unlearned, nothing is left out for look-alikes
    off = heal_and_select(encoded, HealSelectConfig(**{**config.to_dict(), "look_alikes": 0}))
    assert off.metrics["left_out_for_look_alikes"] == 0
    assert (off.unlearned_history[-1] == sure).all()
    off_acc = accuracy(predict_proba(off.model, resident(tokenizer.encode(records.features[test]), cpu))
                       .argmax(1).numpy(), y[test])
    print(f"accuracy {acc:.3f} with the look-alike test, {off_acc:.3f} without")
    # measured: 0.694 with the test, 0.596 without (60 provenance steps, session 24; with the
    # default 200: 0.664 and 0.649; 0.687 when the lift alone decided)
    assert acc >= 0.655 and acc > off_acc, (acc, off_acc)
    # set-apart only (the audio default, forced here on the same texts): of the same sure
    # rejections only those the provenance test set apart are unlearned, the rest left out
    only = heal_and_select(encoded, HealSelectConfig(**{**config.to_dict(), "look_alikes": 0,
                                                        "unlearn_set_apart": True}))
    assert (~only.selected_history[-1] & (only.score_history[-2] >= config.unlearn_from) == sure).all()
    assert (only.unlearned_history[-1] == (sure & only.shifted)).all()
    assert only.metrics["left_out_not_set_apart"] == (sure & ~only.shifted).sum() > 0


def test_only_audio_unlearns_set_apart_rejections_alone_unless_asked():
    # audio: the probes lift hard clean clips too, and unlearning them cost clean spoken digits
    # 2-4 points (RESULTS.md, session 27); elsewhere every sure rejection is unlearned
    default = HealSelectConfig()
    assert unlearns_set_apart_only(default, "audio")
    assert not any(unlearns_set_apart_only(default, m) for m in ("image", "text", "tabular"))
    assert unlearns_set_apart_only(HealSelectConfig(unlearn_set_apart=True), "image")
    assert not unlearns_set_apart_only(HealSelectConfig(unlearn_set_apart=False), "audio")


def test_only_audio_refuses_suspects_unless_asked():
    # audio: the judge doubts few clean spoken digits, and the doubted clips it accepted were
    # mostly poison (RESULTS.md, session 29); a judge healed on a few trusted images doubts
    # 18-41% of clean ones, so elsewhere a suspect whose label does not transfer is accepted
    default = HealSelectConfig()
    assert not accepts_suspects(default, "audio")
    assert all(accepts_suspects(default, m) for m in ("image", "text", "tabular"))
    assert not accepts_suspects(HealSelectConfig(accept_suspects=False), "image")
    assert accepts_suspects(HealSelectConfig(accept_suspects=True), "audio")


# one quick round on tabular records (the tests of single engine switches below)
ONE_ROUND = HealSelectConfig(seed_steps=60, train_epochs=0.5, iterations=1, probe_steps=20,
                             device="cpu")


def flipped_records(seed: int) -> tuple[Records, np.ndarray]:
    """1,500 records of two overlapping classes, a tenth trusted, a tenth of the others' labels
    flipped; returns the records and which of them were flipped."""
    rng = np.random.default_rng(seed)
    y, x = two_class_data(rng, 1500, 0.5)
    trusted = rng.random(1500) < 0.1
    flipped = ~trusted & (rng.random(1500) < 0.1)
    return tabular_records(x, np.where(flipped, 1 - y, y), trusted), flipped


def test_refused_suspects_are_left_out_of_the_round():
    # overlapping classes, a tenth of the labels flipped: the judge doubts the flipped records
    # and the hard ones near the boundary; a flipped label does not transfer, so some of the
    # suspects score low and are accepted -- unless suspects are refused
    records, flipped = flipped_records(3)
    trusted = records.trusted
    tiny = ONE_ROUND
    taken = heal_and_select(records, tiny)
    refused = heal_and_select(records, HealSelectConfig(**{**tiny.to_dict(), "accept_suspects": False}))
    assert taken.metrics["refused_suspects"] == 0
    # the same round up to the choice: refusing only takes records out of the accepted ones ...
    left = taken.selected_history[0] & ~refused.selected_history[0]
    assert not (refused.selected_history[0] & ~taken.selected_history[0]).any()
    assert left.sum() == refused.metrics["refused_suspects"] > 0
    # ... every one of them scored below the threshold (it was accepted) and is not unlearned
    assert (taken.score_history[0][left] < tiny.threshold).all()
    assert not refused.unlearned_history[0][left].any()
    # and those are mostly the flipped labels: measured 103 of 137, 108 flipped accepted -> 5
    flipped = flipped[~trusted]
    assert flipped[left].sum() >= 0.6 * left.sum()
    assert (refused.selected_history[0] & flipped).sum() <= 0.25 * (taken.selected_history[0] & flipped).sum()


def test_own_lift_only_lowers_final_scores_their_look_alikes_share():
    # step 3: a final suspicion of at least 0.3 moves towards the record's own lift; the rounds,
    # what was trained on and every earlier score are untouched (scores only)
    records, _ = flipped_records(4)
    tiny = ONE_ROUND
    plain = heal_and_select(records, tiny)
    own = heal_and_select(records, HealSelectConfig(**{**tiny.to_dict(), "own_lift": 0.5}))
    assert (own.selected_history == plain.selected_history).all()
    assert (own.unlearned_history == plain.unlearned_history).all()
    np.testing.assert_allclose(own.score_history[:-1], plain.score_history[:-1])
    np.testing.assert_allclose(own.probs, plain.probs)
    low = plain.scores < OWN_LIFT_FROM
    np.testing.assert_allclose(own.scores[low], plain.scores[low])
    # never raised, at most halved (0.5 of the way to an own lift of 0), and lowered somewhere:
    # overlapping classes, so flipped labels near the boundary share their lift with look-alikes
    assert (own.scores <= plain.scores + 1e-6).all()
    assert (own.scores[~low] >= 0.5 * plain.scores[~low] - 1e-6).all()
    assert (own.scores < plain.scores - 0.01).sum() > 0


def test_own_lift_is_on_for_images_only_unless_asked():
    # images: flag precision rose on every Fashion-MNIST and CIFAR-10 attack measured (RESULTS.md,
    # session 29); audio, text and tabular records are not yet measured with it
    default = HealSelectConfig()
    assert own_lift_weight(default, "image") == 0.5
    assert all(own_lift_weight(default, m) == 0.0 for m in ("audio", "text", "tabular"))
    assert own_lift_weight(HealSelectConfig(own_lift=0.0), "image") == 0.0
    assert own_lift_weight(HealSelectConfig(own_lift=0.3), "text") == 0.3


class ProbeCount:
    """A progress that counts the backdoor test's probes (one "probe" stage each)."""

    def __init__(self):
        self.probes = 0

    def stage(self, name: str, total: int) -> None:
        self.probes += name == "probe"

    def advance(self) -> None:
        pass


@pytest.mark.parametrize("folds", [2, 3])
def test_the_backdoor_test_trains_one_probe_per_fold_of_the_suspects(folds):
    # each probe learns from all folds of the suspects but one and predicts that one; the
    # flipped labels rank high however many folds there are (measured AUROC 0.958 / 0.962 with
    # two / three folds, seed 5; 0.964 / 0.965 at seed 6)
    records, flipped = flipped_records(5)
    count = ProbeCount()
    result = heal_and_select(records, HealSelectConfig(**{**ONE_ROUND.to_dict(), "probe_folds": folds}),
                             count)
    assert count.probes == folds * ONE_ROUND.iterations
    assert auroc(result.scores, flipped[~records.trusted]) > 0.9


def test_the_backdoor_test_needs_two_folds():
    records, _ = flipped_records(5)
    with pytest.raises(ValueError, match="probe_folds must be at least 2"):
        heal_and_select(records, HealSelectConfig(**{**ONE_ROUND.to_dict(), "probe_folds": 1}))
