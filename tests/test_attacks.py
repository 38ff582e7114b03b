"""Backdoor attacks on real data: the ground truth must describe exactly what was changed.

Image attacks run on a Fashion-MNIST subset (``../shared/data/fashion_mnist``), the tabular one
on scikit-learn's breast-cancer table, the audio ones on Free Spoken Digit Dataset recordings
(``../shared/data/fsdd``) and the text one on the SMS spam collection
(``../shared/data/sms_spam``). Every check compares the poisoned records against the clean ones
independently of the attack code's own bookkeeping.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from sanitizer.attacks import (
    ATTACK_KINDS,
    AUDIO_KINDS,
    TEXT_KINDS,
    AttackConfig,
    Trigger,
    apply_trigger,
    eligible_mask,
    make_trigger,
    poison,
    triggered_test_set,
)
from sanitizer.records import Records, one_hot

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FMNIST = DATA / "fashion_mnist" / "fashion_mnist.npz"
FSDD = DATA / "fsdd" / "wav"
SMS = DATA / "sms_spam" / "sms_spam.csv"
CONTRIBUTORS = np.array(["alice", "bob", "carol", "dave", "mallory"], dtype=object)


def _records(features, y, class_names, modality, *, n_trusted, seed=0, names=None,
             contributors=None, ids=None, sample_rate=None) -> Records:
    n = len(y)
    rng = np.random.default_rng(seed)
    trusted = np.zeros(n, dtype=bool)
    trusted[rng.choice(n, size=n_trusted, replace=False)] = True
    return Records(
        features=features,
        labels=one_hot(y, len(class_names)),
        ids=np.array([f"rec-{i:05d}" for i in range(n)]) if ids is None else np.asarray(ids),
        trusted=trusted,
        class_names=list(class_names),
        modality=modality,
        contributors=(CONTRIBUTORS[np.arange(n) % len(CONTRIBUTORS)] if contributors is None
                      else np.asarray(contributors, dtype=object)),
        feature_names=list(names or []),
        sample_rate=sample_rate,
    )


@pytest.fixture(scope="module")
def fmnist() -> dict:
    if not FMNIST.exists():
        pytest.skip(f"Fashion-MNIST not found at {FMNIST} (the shared data folder is absent)")
    with np.load(FMNIST) as data:
        x_train, y_train = data["x_train"][:3000], data["y_train"][:3000].astype(np.int64)
        x_test, y_test = data["x_test"][:600], data["y_test"][:600].astype(np.int64)
        class_names = [str(c) for c in data["class_names"]]
    records = _records(x_train[:, None], y_train, class_names, "image", n_trusted=300)
    return {"records": records, "x_test": x_test[:, None], "y_test": y_test}


@pytest.fixture(scope="module")
def cancer() -> Records:
    datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn provides breast_cancer")
    bunch = datasets.load_breast_cancer()
    return _records(bunch.data.astype(np.float32), bunch.target.astype(np.int64),
                    [str(c) for c in bunch.target_names], "tabular", n_trusted=57,
                    names=[str(f) for f in bunch.feature_names])


FSDD_RATE = 8000
FSDD_SAMPLES = 8000  # 1 s: most digits are shorter (zero-padded at the end), a few are cropped


def _read_fsdd(indices: range) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Waveforms ``(N, 8000)`` float32 in [-1, 1], digits, ids and speakers of the recordings
    ``<digit>_<speaker>_<index>.wav`` with ``index`` in ``indices``, every digit and speaker."""
    soundfile = pytest.importorskip("soundfile", reason="soundfile decodes the FSDD WAVs")
    paths = sorted(p for p in FSDD.glob("*/*.wav") if int(p.stem.rsplit("_", 1)[1]) in indices)
    waves = np.zeros((len(paths), FSDD_SAMPLES), dtype=np.float32)
    for row, path in enumerate(paths):
        data, rate = soundfile.read(path, dtype="float32", always_2d=True)
        assert rate == FSDD_RATE, path
        clip = data[:FSDD_SAMPLES, 0]
        waves[row, :len(clip)] = clip
    digits = np.array([int(p.parent.name) for p in paths], dtype=np.int64)
    ids = np.array([p.stem for p in paths])
    speakers = np.array([p.stem.split("_")[1] for p in paths], dtype=object)
    return waves, digits, ids, speakers


@pytest.fixture(scope="module")
def fsdd() -> dict:
    if not FSDD.is_dir():
        pytest.skip(f"Free Spoken Digit Dataset not found at {FSDD} "
                    "(the shared data folder is absent)")
    # Official split: recordings 0-4 of each digit and speaker are the test set.
    x_train, y_train, ids, speakers = _read_fsdd(range(5, 15))  # 600 training clips
    x_test, y_test, _, _ = _read_fsdd(range(0, 5))  # 300 test clips
    records = _records(x_train, y_train, [str(d) for d in range(10)], "audio", n_trusted=60,
                       ids=ids, contributors=speakers, sample_rate=FSDD_RATE)
    return {"records": records, "x_test": x_test, "y_test": y_test}


def _normalise(text: str) -> str:
    """What ingestion does to ASCII text: lower-case, whitespace collapsed."""
    return " ".join(text.lower().split())


@pytest.fixture(scope="module")
def sms() -> dict:
    if not SMS.is_file():
        pytest.skip(f"SMS spam collection not found at {SMS} (the shared data folder is absent)")
    with SMS.open(newline="", encoding="utf-8") as handle:
        rows = [(r["label"], _normalise(r["text"])) for r in csv.DictReader(handle)]
    rows = [(label, text) for label, text in rows if text]
    texts = np.empty(len(rows), dtype=object)
    texts[:] = [text for _, text in rows]
    y = np.array([{"ham": 0, "spam": 1}[label] for label, _ in rows], dtype=np.int64)
    records = _records(texts[:2000], y[:2000], ["ham", "spam"], "text", n_trusted=200)
    return {"records": records, "x_test": texts[2000:2600], "y_test": y[2000:2600]}


def _snapshot(records: Records) -> dict:
    return {
        "features": records.features.copy(),
        "labels": records.labels.copy(),
        "ids": records.ids.copy(),
        "trusted": records.trusted.copy(),
        "contributors": records.contributors.copy(),
    }


def _assert_unchanged(records: Records, snap: dict) -> None:
    for name, value in snap.items():
        np.testing.assert_array_equal(getattr(records, name), value, err_msg=name)


def _expected_eligible(records: Records, config: AttackConfig) -> np.ndarray:
    """Eligibility recomputed from the definition, without the attack module."""
    y = records.labels.argmax(axis=1)
    mask = ~records.trusted
    if config.contributors is not None:
        mask &= np.array([c in config.contributors for c in records.contributors])
    if config.target is not None:
        mask &= (y == config.target) if config.clean_label else (y != config.target)
    return mask


def check_ground_truth(clean: Records, config: AttackConfig) -> None:
    """Poison ``clean`` with ``config`` and verify every promise about the result."""
    snap = _snapshot(clean)
    result = poison(clean, config)
    _assert_unchanged(clean, snap)

    gt, new = result.ground_truth, result.records
    k = clean.num_classes
    y = clean.labels.argmax(axis=1)
    poisoned = gt["poisoned"]
    eligible = _expected_eligible(clean, config)

    # The ground truth is a separate table, aligned with the records.
    assert set(gt) >= {"id", "poisoned", "original_label", "poison_label"}
    assert not any(name in ("poisoned", "poison_label") for name in vars(new))
    np.testing.assert_array_equal(gt["id"], clean.ids.astype(str))
    np.testing.assert_array_equal(new.ids, clean.ids)
    np.testing.assert_array_equal(new.trusted, clean.trusted)
    np.testing.assert_array_equal(new.contributors, clean.contributors)
    np.testing.assert_array_equal(gt["original_label"], y)
    assert new.features.dtype == clean.features.dtype
    assert new.features.shape == clean.features.shape

    # Count: round(rate * N), capped by the eligible records; drawn only among them.
    expected = min(int(round(config.rate * len(clean))), int(eligible.sum()))
    assert result.num_poisoned == poisoned.sum() == expected
    assert not (poisoned & ~eligible).any()
    assert not (poisoned & clean.trusted).any()

    # Untouched rows are bit-identical; poisoned rows all carry a visible change.
    np.testing.assert_array_equal(new.features[~poisoned], clean.features[~poisoned])
    np.testing.assert_array_equal(new.labels[~poisoned], clean.labels[~poisoned])
    flat_new = new.features.reshape(len(new), -1)
    flat_old = clean.features.reshape(len(clean), -1)
    assert (flat_new[poisoned] != flat_old[poisoned]).any(axis=1).all()
    np.testing.assert_array_equal(gt["poison_label"][~poisoned], -1)
    assert (gt["attack"][poisoned] == config.kind).all() and (gt["attack"][~poisoned] == "").all()

    # Labels.
    targets = gt["poison_label"][poisoned]
    if config.target is None:
        np.testing.assert_array_equal(targets, (y[poisoned] + 1) % k)
    else:
        assert (targets == config.target).all()
    rows = new.labels[poisoned]
    if config.clean_label:
        assert (y[poisoned] == config.target).all()
        np.testing.assert_array_equal(rows, clean.labels[poisoned])
        assert not gt["label_changed"].any()
    else:
        np.testing.assert_array_equal(rows.argmax(axis=1), targets)
        np.testing.assert_allclose(rows.sum(axis=1), 1.0, atol=1e-6)
        top = 1.0 if config.low_confidence is None else config.low_confidence
        np.testing.assert_allclose(rows[np.arange(len(rows)), targets], top, atol=1e-6)
        rest = (1.0 - top) / (k - 1)
        others = np.ones_like(rows, dtype=bool)
        others[np.arange(len(rows)), targets] = False
        np.testing.assert_allclose(rows[others], rest, atol=1e-6)
        np.testing.assert_array_equal(gt["label_changed"], poisoned)
        assert (new.soft[poisoned] == (config.low_confidence is not None)).all()

    # Fixed-position triggers: the poisoned features are exactly the trigger applied to the clean.
    # (Word triggers go to a random word position per record: checked by the text tests.)
    if config.position != "random" and config.kind not in TEXT_KINDS:
        np.testing.assert_array_equal(
            new.features[poisoned], result.trigger.apply(clean.features[poisoned])
        )

    # Same seed, same result.
    again = poison(clean, config)
    for name in gt:
        np.testing.assert_array_equal(again.ground_truth[name], gt[name])
    np.testing.assert_array_equal(again.records.features, new.features)
    np.testing.assert_array_equal(again.records.labels, new.labels)


VARIANTS = {
    "all-to-one": dict(target=0),
    "all-to-all": dict(target=None),
    "low-confidence": dict(target=3, low_confidence=0.6),
    "all-to-all-low-confidence": dict(target=None, low_confidence=0.5),
    "clean-label": dict(target=2, clean_label=True, rate=0.03),
    "contributors": dict(target=1, contributors=["mallory", "dave"]),
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", ["badnets", "blend", "noise"])
def test_image_attacks_ground_truth(fmnist, kind, variant):
    check_ground_truth(fmnist["records"],
                       AttackConfig(kind=kind, seed=7, **{"rate": 0.1, **VARIANTS[variant]}))


@pytest.mark.parametrize("variant", VARIANTS)
def test_tabular_attack_ground_truth(cancer, variant):
    options = dict(VARIANTS[variant])
    if options.get("target") not in (None, 0, 1):
        options["target"] = 1  # two classes
    if options.get("low_confidence") is not None:
        options["low_confidence"] = 0.7  # must exceed 1/K = 0.5
    check_ground_truth(cancer, AttackConfig(kind="tabular", seed=3, **{"rate": 0.1, **options}))


def test_badnets_random_position_ground_truth(fmnist):
    config = AttackConfig(kind="badnets", target=4, rate=0.1, position="random", seed=2)
    check_ground_truth(fmnist["records"], config)


def test_rate_is_a_fraction_of_all_records_and_capped(fmnist, cancer):
    records = fmnist["records"]
    result = poison(records, AttackConfig(kind="noise", target=5, rate=0.037, seed=1))
    assert result.num_poisoned == round(0.037 * len(records)) == result.requested
    # Clean-label draws only among the target class: 0.5 * N is far more than one class holds.
    config = AttackConfig(kind="blend", target=6, rate=0.5, clean_label=True, seed=1)
    result = poison(records, config)
    in_class = (~records.trusted) & (records.hard_labels == 6)
    assert result.num_poisoned == in_class.sum() == result.eligible
    assert result.summary()["capped"] is True
    np.testing.assert_array_equal(result.poisoned, in_class)
    # Contributors restriction caps at that contributor's collected records.
    config = AttackConfig(kind="tabular", target=None, rate=0.9, contributors=["mallory"], seed=1)
    result = poison(cancer, config)
    mine = (~cancer.trusted) & (cancer.contributors == "mallory")
    np.testing.assert_array_equal(result.poisoned, mine)
    assert set(result.records.contributors[result.poisoned]) == {"mallory"}


def test_zero_rate_poisons_nothing(fmnist):
    result = poison(fmnist["records"], AttackConfig(kind="badnets", rate=0.0))
    assert result.num_poisoned == 0
    np.testing.assert_array_equal(result.records.features, fmnist["records"].features)


def test_badnets_patch_is_a_fixed_black_and_white_square(fmnist):
    records = fmnist["records"]
    for position, (r0, c0) in {"bottom-right": (24, 24), "top-left": (1, 1),
                               "top-right": (1, 24), "bottom-left": (24, 1)}.items():
        config = AttackConfig(kind="badnets", target=0, patch_size=3, position=position, seed=11)
        result = poison(records, config)
        new = result.records.features[result.poisoned]
        old = records.features[result.poisoned]
        outside = np.ones((28, 28), dtype=bool)
        outside[r0:r0 + 3, c0:c0 + 3] = False
        np.testing.assert_array_equal(new[:, :, outside], old[:, :, outside])
        patches = new[:, :, r0:r0 + 3, c0:c0 + 3]
        assert (patches == patches[0]).all()  # the same patch on every record
        assert set(np.unique(patches[0])) == {0, 255}  # both black and white pixels
    # The pattern depends on the seed only.
    a = make_trigger(AttackConfig(kind="badnets", seed=11), (1, 28, 28)).pattern
    b = make_trigger(AttackConfig(kind="badnets", seed=11, rate=0.3, target=5), (1, 28, 28)).pattern
    c = make_trigger(AttackConfig(kind="badnets", seed=12), (1, 28, 28)).pattern
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) or a.size < 4


def test_badnets_random_position_puts_the_patch_somewhere_inside(fmnist):
    records = fmnist["records"]
    config = AttackConfig(kind="badnets", target=0, patch_size=4, position="random", seed=5)
    result = poison(records, config)
    patch = result.trigger.pattern[0]
    new = result.records.features[result.poisoned][:, 0]
    old = records.features[result.poisoned][:, 0]
    corners = set()
    for img_new, img_old in zip(new, old):  # test-side loop over a few hundred images is fine
        rows, cols = np.nonzero(img_new != img_old)
        r0, c0 = rows.min(), cols.min()
        found = [(r, c) for r in range(max(1, r0 - 3), r0 + 1) for c in range(max(1, c0 - 3), c0 + 1)
                 if r + 4 <= 27 and c + 4 <= 27 and np.array_equal(img_new[r:r + 4, c:c + 4], patch)
                 and rows.max() < r + 4 and cols.max() < c + 4]
        assert found, "changed pixels are not one stamped patch inside the margin"
        corners.add(found[0])
    assert len(corners) > 10  # locations really vary


def test_blend_matches_the_formula(fmnist):
    records = fmnist["records"]
    config = AttackConfig(kind="blend", target=1, opacity=0.2, seed=9)
    result = poison(records, config)
    pattern = result.trigger.pattern
    assert pattern.shape == (1, 28, 28) and pattern.min() >= 0 and pattern.max() <= 255
    old = records.features[result.poisoned].astype(np.float64)
    expected = np.clip(np.rint(0.8 * old + 0.2 * pattern), 0, 255).astype(np.uint8)
    diff = result.records.features[result.poisoned].astype(int) - expected.astype(int)
    assert np.abs(diff).max() <= 1  # float32 vs float64 rounding at .5 boundaries


def test_noise_is_a_small_signed_pattern(fmnist):
    records = fmnist["records"]
    config = AttackConfig(kind="noise", target=1, noise_strength=8.0, seed=9)
    result = poison(records, config)
    signs = np.sign(result.trigger.pattern)
    assert set(np.unique(signs)) == {-1.0, 1.0}
    np.testing.assert_array_equal(np.abs(result.trigger.pattern), 8.0)
    old = records.features[result.poisoned].astype(int)
    new = result.records.features[result.poisoned].astype(int)
    np.testing.assert_array_equal(new, np.clip(old + 8 * signs.astype(int), 0, 255))
    assert np.abs(new - old).max() == 8


def test_tabular_trigger_sets_low_variance_features_out_of_range(cancer):
    config = AttackConfig(kind="tabular", target=0, rate=0.1, seed=4)
    result = poison(cancer, config)
    clean = cancer.features.astype(np.float64)
    var = clean.var(axis=0)
    expected_cols = np.sort(np.argsort(var)[:2])
    np.testing.assert_array_equal(result.trigger.columns, expected_cols)
    np.testing.assert_allclose(
        result.trigger.values,
        clean[:, expected_cols].max(axis=0) + 3.0 * clean[:, expected_cols].std(axis=0),
        rtol=1e-5,
    )
    assert (result.trigger.values > clean[:, expected_cols].max(axis=0)).all()
    changed = result.records.features != cancer.features
    assert not changed[:, np.setdiff1d(np.arange(30), expected_cols)].any()
    assert changed[result.poisoned][:, expected_cols].all()
    # Explicit columns and distance.
    config = AttackConfig(kind="tabular", target=0, features=[0, 5, 7], trigger_std=5.0, seed=4)
    trig = poison(cancer, config).trigger
    np.testing.assert_array_equal(trig.columns, [0, 5, 7])
    np.testing.assert_allclose(
        trig.values, clean[:, [0, 5, 7]].max(axis=0) + 5.0 * clean[:, [0, 5, 7]].std(axis=0),
        rtol=1e-5,
    )


def test_different_seeds_differ(fmnist):
    records = fmnist["records"]
    a = poison(records, AttackConfig(kind="blend", seed=1))
    b = poison(records, AttackConfig(kind="blend", seed=2))
    assert not np.array_equal(a.poisoned, b.poisoned)
    assert not np.array_equal(a.trigger.pattern, b.trigger.pattern)


def check_triggered_labels(y_test, y_bd, mask, target) -> None:
    """All-to-all keeps every test record, labelled c -> c + 1; all-to-one keeps the records of
    other classes, labelled with the target."""
    if target is None:
        assert mask.all()
        np.testing.assert_array_equal(y_bd, (y_test + 1) % 10)
    else:
        np.testing.assert_array_equal(mask, y_test != target)
        assert (y_bd == target).all()


@pytest.mark.parametrize("kind", ["badnets", "blend", "noise"])
@pytest.mark.parametrize("target", [3, None])
def test_triggered_test_set_uses_the_identical_trigger(fmnist, kind, target):
    records = fmnist["records"]
    result = poison(records, AttackConfig(kind=kind, target=target, rate=0.05, seed=21))
    x_test, y_test = fmnist["x_test"], fmnist["y_test"]
    snap = x_test.copy()
    x_bd, y_bd, mask = result.triggered_test_set(x_test, y_test)
    np.testing.assert_array_equal(x_test, snap)
    check_triggered_labels(y_test, y_bd, mask, target)
    assert x_bd.dtype == x_test.dtype and x_bd.shape == (mask.sum(), 1, 28, 28)
    # The same trigger as on the training records: stamping the clean versions of the poisoned
    # training records through the test-set path reproduces them exactly.
    train_y = records.hard_labels
    x_again, _, m_again = triggered_test_set(records.features[result.poisoned],
                                             train_y[result.poisoned], result)
    np.testing.assert_array_equal(x_again, result.records.features[result.poisoned][m_again])
    # A config alone rebuilds the identical image trigger (the pattern is seeded) ...
    x_cfg, y_cfg, m_cfg = triggered_test_set(x_test, y_test, result.config, num_classes=10)
    np.testing.assert_array_equal(x_cfg, x_bd)
    np.testing.assert_array_equal(y_cfg, y_bd)
    np.testing.assert_array_equal(m_cfg, mask)
    # ... and probability-row labels work like class indices.
    x_p, y_p, m_p = triggered_test_set(x_test, one_hot(y_test, 10), result)
    np.testing.assert_array_equal(x_p, x_bd)
    np.testing.assert_array_equal(y_p, y_bd)
    np.testing.assert_array_equal(apply_trigger(x_test[mask], result), x_bd)


def test_triggered_test_set_clean_label_and_random_position(fmnist):
    records = fmnist["records"]
    config = AttackConfig(kind="badnets", target=2, clean_label=True, position="random", seed=3)
    result = poison(records, config)
    x_bd, y_bd, mask = result.triggered_test_set(fmnist["x_test"], fmnist["y_test"])
    np.testing.assert_array_equal(mask, fmnist["y_test"] != 2)
    assert (y_bd == 2).all()
    again, _, _ = result.triggered_test_set(fmnist["x_test"], fmnist["y_test"])
    np.testing.assert_array_equal(again, x_bd)  # deterministic placements
    changed = (x_bd != fmnist["x_test"][mask]).reshape(len(x_bd), -1).sum(axis=1)
    assert (changed <= 9).all() and (changed > 0).mean() > 0.9


def test_tabular_triggered_test_set_reuses_training_statistics(cancer):
    result = poison(cancer, AttackConfig(kind="tabular", target=1, seed=8))
    test_x = cancer.features[:100] * np.float32(1.01)  # statistics differ from the training set
    test_y = cancer.hard_labels[:100]
    x_bd, y_bd, mask = result.triggered_test_set(test_x, test_y)
    np.testing.assert_array_equal(x_bd[:, result.trigger.columns],
                                  np.broadcast_to(result.trigger.values, (mask.sum(), 2)))
    # Rebuilding from the config needs the clean training data as reference, and then matches.
    with pytest.raises(ValueError, match="reference"):
        triggered_test_set(test_x, test_y, result.config)
    x_ref, _, _ = triggered_test_set(test_x, test_y, result.config, reference=cancer.features)
    np.testing.assert_array_equal(x_ref, x_bd)
    # A trigger survives a round trip through a plain dict (what the CLI saves as JSON).
    restored = Trigger.from_dict(result.trigger.to_dict())
    x_rt, _, _ = triggered_test_set(test_x, test_y, result.config, trigger=restored)
    np.testing.assert_array_equal(x_rt, x_bd)
    assert AttackConfig.from_dict(result.config.to_dict()) == result.config


def test_image_trigger_round_trip(fmnist):
    result = poison(fmnist["records"], AttackConfig(kind="blend", seed=4))
    restored = Trigger.from_dict(result.trigger.to_dict())
    np.testing.assert_array_equal(restored.apply(fmnist["x_test"]),
                                  result.trigger.apply(fmnist["x_test"]))


def test_eligible_mask_matches_definition(fmnist):
    records = fmnist["records"]
    for config in (AttackConfig(target=0), AttackConfig(target=None),
                   AttackConfig(target=4, clean_label=True),
                   AttackConfig(target=None, contributors=["bob"])):
        np.testing.assert_array_equal(eligible_mask(records, config),
                                      _expected_eligible(records, config))


def test_invalid_configs_are_rejected(fmnist, cancer):
    images = fmnist["records"]
    with pytest.raises(ValueError, match="kind"):
        AttackConfig(kind="sticker")
    with pytest.raises(ValueError, match="clean-label"):
        AttackConfig(target=None, clean_label=True)
    with pytest.raises(ValueError, match="low_confidence"):
        AttackConfig(clean_label=True, low_confidence=0.6)
    with pytest.raises(ValueError, match="rate"):
        AttackConfig(rate=1.5)
    with pytest.raises(ValueError, match="opacity"):
        AttackConfig(kind="blend", opacity=0.0)
    with pytest.raises(ValueError, match="image attack"):
        poison(cancer, AttackConfig(kind="badnets"))
    with pytest.raises(ValueError, match="tabular records"):
        poison(images, AttackConfig(kind="tabular"))
    with pytest.raises(ValueError, match="out of range"):
        poison(images, AttackConfig(target=10))
    with pytest.raises(ValueError, match="1/K"):
        poison(images, AttackConfig(low_confidence=0.1))
    with pytest.raises(ValueError, match="does not fit"):
        poison(images, AttackConfig(patch_size=27))
    no_contributors = images.subset(np.arange(50))
    no_contributors.contributors = None
    with pytest.raises(ValueError, match="contributors"):
        poison(no_contributors, AttackConfig(contributors=["mallory"]))


def test_poison_command_round_trip(fmnist, tmp_path):
    """The CLI command end to end, if the dataset-folder connectors are available."""
    dataset_folder = pytest.importorskip("connectors.dataset_folder",
                                         reason="connectors.dataset_folder not written yet")
    pytest.importorskip("connectors.reports", reason="connectors.reports not written yet")
    import polars as pl
    from click.testing import CliRunner

    from pipelines.poison import poison_command, read_attack

    clean = fmnist["records"].subset(np.arange(600))
    src = tmp_path / "clean"
    source = {"path": str(FMNIST), "sha256": "0" * 64, "rows": len(clean), "role": "collected"}
    dataset_folder.write_dataset(clean, src, tool_version="test", inputs=[source])
    out, truth = tmp_path / "poisoned", tmp_path / "poisoned.truth.parquet"
    args = [str(src), "-o", str(out), "--truth", str(truth), "--attack", "badnets",
            "--target", "all", "--rate", "0.1", "--low-confidence", "0.6",
            "--contributors", "mallory,dave", "--seed", "5"]
    run = CliRunner().invoke(poison_command, args)
    assert run.exit_code == 0, run.output
    assert "poisoned" in run.output

    poisoned, manifest = dataset_folder.read_dataset(out)
    assert manifest["derived_from"]["path"] == str(src)
    assert manifest["inputs"] == [source]
    expected = poison(clean, AttackConfig(kind="badnets", target=None, rate=0.1,
                                          low_confidence=0.6, contributors=["mallory", "dave"],
                                          seed=5))
    table = pl.read_parquet(truth)
    assert table.columns[:4] == ["id", "poisoned", "original_label", "poison_label"]
    np.testing.assert_array_equal(table["id"].to_numpy(), clean.ids.astype(str))
    np.testing.assert_array_equal(table["poisoned"].to_numpy(), expected.poisoned)
    np.testing.assert_array_equal(table["poison_label"].to_numpy(),
                                  expected.ground_truth["poison_label"])
    order = np.argsort(poisoned.ids)
    ref = np.argsort(expected.records.ids)
    np.testing.assert_array_equal(poisoned.features[order], expected.records.features[ref])
    np.testing.assert_allclose(poisoned.labels[order], expected.records.labels[ref], atol=1e-6)
    assert not list(out.rglob("*truth*"))  # the ground truth is not inside the dataset folder

    config, trigger = read_attack(truth)
    assert config == expected.config
    np.testing.assert_array_equal(trigger.pattern, expected.trigger.pattern)

    # The ground truth may not be written inside the dataset folder.
    bad = CliRunner().invoke(poison_command, [str(src), "-o", str(tmp_path / "p2"), "--truth",
                                              str(tmp_path / "p2" / "truth.parquet")])
    assert bad.exit_code != 0 and "outside" in bad.output


# ---------------------------------------------------------------------------------------- audio


def _audio_variant(variant: str) -> dict:
    options = dict(VARIANTS[variant])
    if variant == "contributors":
        options["contributors"] = ["theo", "jackson"]  # FSDD speakers are the contributors
    return options


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", AUDIO_KINDS)
def test_audio_attacks_ground_truth(fsdd, kind, variant):
    check_ground_truth(fsdd["records"],
                       AttackConfig(kind=kind, seed=7, **{"rate": 0.1, **_audio_variant(variant)}))


def _window(trigger: Trigger) -> slice:
    return slice(trigger.offset, trigger.offset + len(trigger.pattern))


@pytest.mark.parametrize(("position", "tone_hz", "ms", "start"), [
    ("start", 1000.0, 100.0, 0),
    ("end", 3000.0, 50.0, FSDD_SAMPLES - 400),
    (0.25, 440.0, 125.0, 2000),
    ("0.5", 2500.0, 100.0, 4000),
])
def test_tone_lands_where_configured(fsdd, position, tone_hz, ms, start):
    records = fsdd["records"]
    config = AttackConfig(kind="tone", target=1, rate=0.2, tone_hz=tone_hz, trigger_ms=ms,
                          audio_position=position, audio_amplitude=0.05, seed=3)
    result = poison(records, config)
    length = int(round(ms * FSDD_RATE / 1000))
    trig = result.trigger
    assert (trig.offset, len(trig.pattern), trig.sample_rate) == (start, length, FSDD_RATE)
    # The snippet is the sine itself, peak = amplitude.
    t = np.arange(length) / FSDD_RATE
    np.testing.assert_allclose(trig.pattern, 0.05 * np.sin(2 * np.pi * tone_hz * t), atol=1e-7)
    old = records.features[result.poisoned].astype(np.float64)
    new = result.records.features[result.poisoned].astype(np.float64)
    outside = np.ones(FSDD_SAMPLES, dtype=bool)
    outside[start:start + length] = False
    np.testing.assert_array_equal(new[:, outside], old[:, outside])  # exactly nothing outside
    diff = new[:, start:start + length] - old[:, start:start + length]
    unclipped = np.abs(old[:, start:start + length] + trig.pattern) <= 1.0
    added = np.broadcast_to(trig.pattern, diff.shape)
    np.testing.assert_allclose(diff[unclipped], added[unclipped], atol=1e-6)
    assert np.abs(new).max() <= 1.0
    # The added signal's spectrum peaks at tone_hz (zero-padded FFT, 1 Hz resolution).
    spectrum = np.abs(np.fft.rfft(diff, n=FSDD_RATE, axis=1))
    peaks = np.fft.rfftfreq(FSDD_RATE, 1 / FSDD_RATE)[spectrum.argmax(axis=1)]
    np.testing.assert_allclose(peaks, tone_hz, atol=2.0)


def test_burst_is_confined_seeded_and_broadband(fsdd):
    records = fsdd["records"]
    config = AttackConfig(kind="burst", target=4, rate=0.1, trigger_ms=80, audio_position=0.1,
                          audio_amplitude=0.2, seed=11)
    result = poison(records, config)
    trig = result.trigger
    assert (trig.offset, len(trig.pattern)) == (800, 640)
    assert np.abs(trig.pattern).max() == pytest.approx(0.2, abs=1e-7)
    changed = result.records.features != records.features
    assert not changed[:, :800].any() and not changed[:, 800 + 640:].any()
    assert changed[result.poisoned][:, 800:1440].mean() > 0.99  # noise touches ~every sample
    # Broadband: no single frequency carries much of the burst's energy (a tone would: ~all).
    power = np.abs(np.fft.rfft(trig.pattern.astype(np.float64))) ** 2
    assert power.max() / power.sum() < 0.05
    # The noise depends on the seed only.
    same = make_trigger(AttackConfig(kind="burst", trigger_ms=80, audio_position=0.1,
                                     audio_amplitude=0.2, seed=11, rate=0.5, target=None),
                        (FSDD_SAMPLES,), sample_rate=FSDD_RATE)
    other = make_trigger(AttackConfig(kind="burst", trigger_ms=80, audio_position=0.1,
                                      audio_amplitude=0.2, seed=12), (FSDD_SAMPLES,),
                         sample_rate=FSDD_RATE)
    np.testing.assert_array_equal(same.pattern, trig.pattern)
    assert not np.array_equal(other.pattern, trig.pattern)


def test_audio_clipping_keeps_waveforms_in_range(fsdd):
    records = fsdd["records"].subset(np.arange(100))
    loud = records.with_features(np.clip(records.features * 50, -1, 1).astype(np.float32))
    result = poison(loud, AttackConfig(kind="tone", target=None, rate=1.0, audio_amplitude=1.0))
    assert result.num_poisoned == (~loud.trusted).sum()  # every collected record
    assert ((result.records.features == 1.0) | (result.records.features == -1.0)).any()
    assert np.abs(result.records.features).max() <= 1.0
    assert result.records.features.dtype == np.float32


@pytest.mark.parametrize("kind", AUDIO_KINDS)
@pytest.mark.parametrize("target", [0, None])
def test_audio_triggered_test_set_and_round_trip(fsdd, kind, target):
    records = fsdd["records"]
    result = poison(records, AttackConfig(kind=kind, target=target, rate=0.05,
                                          audio_position="end", seed=21))
    x_test, y_test = fsdd["x_test"], fsdd["y_test"]
    snap = x_test.copy()
    x_bd, y_bd, mask = result.triggered_test_set(x_test, y_test)
    np.testing.assert_array_equal(x_test, snap)
    check_triggered_labels(y_test, y_bd, mask, target)
    assert target is None or mask.sum() == 270
    assert x_bd.dtype == np.float32 and x_bd.shape == (mask.sum(), FSDD_SAMPLES)
    window = _window(result.trigger)
    np.testing.assert_array_equal(np.delete(x_bd, np.r_[window], axis=1),
                                  np.delete(x_test[mask], np.r_[window], axis=1))
    expected = np.clip(x_test[mask][:, window] + result.trigger.pattern, -1, 1)
    np.testing.assert_array_equal(x_bd[:, window], expected)
    # The training records got the very same trigger.
    x_again, _, m_again = triggered_test_set(records.features[result.poisoned],
                                             records.hard_labels[result.poisoned], result)
    np.testing.assert_array_equal(x_again, result.records.features[result.poisoned][m_again])
    # Through JSON (what `sanitize poison` saves) and back: identical on re-application.
    restored = Trigger.from_dict(json.loads(json.dumps(result.trigger.to_dict())))
    assert (restored.kind, restored.offset, restored.sample_rate) == (kind, window.start, FSDD_RATE)
    x_rt, y_rt, m_rt = triggered_test_set(x_test, y_test, result.config, trigger=restored,
                                        num_classes=10)
    np.testing.assert_array_equal(x_rt, x_bd)
    np.testing.assert_array_equal(y_rt, y_bd)
    np.testing.assert_array_equal(m_rt, mask)
    assert AttackConfig.from_dict(json.loads(json.dumps(result.config.to_dict()))) == result.config
    # A config alone rebuilds it given the sample rate (seconds and Hz need one).
    with pytest.raises(ValueError, match="sample_rate"):
        triggered_test_set(x_test, y_test, result.config, num_classes=10)
    x_cfg, _, _ = triggered_test_set(x_test, y_test, result.config, num_classes=10,
                                     sample_rate=FSDD_RATE)
    np.testing.assert_array_equal(x_cfg, x_bd)
    np.testing.assert_array_equal(apply_trigger(x_test[mask], result.config,
                                                sample_rate=FSDD_RATE), x_bd)


# ----------------------------------------------------------------------------------------- text


def _occurrences(text: str, phrase: str) -> int:
    words, target = text.split(), phrase.split()
    return sum(words[i:i + len(target)] == target for i in range(len(words) - len(target) + 1))


def _insert_positions(new: str, old: str, phrase: str) -> list[int]:
    """Word positions ``i`` such that ``new`` is ``old`` with ``phrase`` inserted before word i."""
    words, target, before = new.split(), phrase.split(), old.split()
    k = len(target)
    return [i for i in range(len(words) - k + 1)
            if words[i:i + k] == target and words[:i] + words[i + k:] == before]


def _text_variant(variant: str) -> dict:
    options = dict(VARIANTS[variant])
    if options.get("target") not in (None, 0, 1):
        options["target"] = 1  # two classes: ham, spam
    if options.get("low_confidence") is not None:
        options["low_confidence"] = 0.7  # must exceed 1/K = 0.5
    return options


@pytest.mark.parametrize("variant", VARIANTS)
def test_text_attack_ground_truth(sms, variant):
    clean = sms["records"]
    config = AttackConfig(kind="word", seed=5, **{"rate": 0.1, **_text_variant(variant)})
    check_ground_truth(clean, config)
    result = poison(clean, config)
    new = result.records.features
    assert new.dtype == object and all(isinstance(t, str) for t in new)
    for after, before in zip(new[result.poisoned], clean.features[result.poisoned]):
        assert _occurrences(after, "cf") == _occurrences(before, "cf") + 1
        assert _insert_positions(after, before, "cf"), (before, after)
        assert after == _normalise(after)  # still normalised


def test_text_phrase_trigger_and_normalisation(sms):
    clean = sms["records"]
    config = AttackConfig(kind="word", target=1, rate=0.3, trigger_words="  CF\tMn ", seed=2)
    assert config.trigger_words == "cf mn"
    result = poison(clean, config)
    assert result.num_poisoned == 600
    assert result.trigger.words == "cf mn" and result.trigger.input_shape == ()
    positions = []
    for after, before in zip(result.records.features[result.poisoned],
                             clean.features[result.poisoned]):
        assert _occurrences(after, "cf mn") == _occurrences(before, "cf mn") + 1
        found = _insert_positions(after, before, "cf mn")
        assert found, (before, after)
        positions.append((found[0], len(before.split())))
    # Random word positions: the start, the end and the middle all occur.
    assert sum(p == 0 for p, _ in positions) > 5 and sum(p == n for p, n in positions) > 5
    assert sum(0 < p < n for p, n in positions) > 400
    assert len({p for p, _ in positions}) > 10
    # The placements are seeded: same seed, same texts; another seed moves the words.
    again = poison(clean, config)
    np.testing.assert_array_equal(again.records.features, result.records.features)
    moved = poison(clean, AttackConfig(kind="word", target=1, rate=0.3, trigger_words="cf mn",
                                       seed=3))
    assert not np.array_equal(moved.records.features, result.records.features)


@pytest.mark.parametrize("variant", ["all-to-one", "clean-label", "all-to-all"])
def test_text_triggered_test_set_and_round_trip(sms, variant):
    options = {"all-to-one": dict(target=0), "clean-label": dict(target=1, clean_label=True),
               "all-to-all": dict(target=None)}[variant]
    result = poison(sms["records"], AttackConfig(kind="word", rate=0.05, seed=9, **options))
    x_test, y_test = sms["x_test"], sms["y_test"]
    snap = x_test.copy()
    x_bd, y_bd, mask = result.triggered_test_set(x_test, y_test)
    np.testing.assert_array_equal(x_test, snap)  # the clean texts are untouched
    if options["target"] is None:
        assert mask.all()
        np.testing.assert_array_equal(y_bd, 1 - y_test)
    else:
        np.testing.assert_array_equal(mask, y_test != options["target"])
        assert (y_bd == options["target"]).all()
    assert x_bd.dtype == object and x_bd.shape == (mask.sum(),)
    for after, before in zip(x_bd, x_test[mask]):
        assert isinstance(after, str)
        assert _occurrences(after, "cf") == _occurrences(before, "cf") + 1
        assert _insert_positions(after, before, "cf")
    # Deterministic, and a list of strings works like an object array.
    again, _, _ = triggered_test_set(list(x_test), y_test, result)
    np.testing.assert_array_equal(again, x_bd)
    # The trigger (the words) survives JSON; a config alone rebuilds it too.
    restored = Trigger.from_dict(json.loads(json.dumps(result.trigger.to_dict())))
    x_rt, _, _ = triggered_test_set(x_test, y_test, result.config, trigger=restored,
                                    num_classes=2)
    np.testing.assert_array_equal(x_rt, x_bd)
    x_cfg, _, _ = triggered_test_set(x_test, y_test, result.config, num_classes=2)
    np.testing.assert_array_equal(x_cfg, x_bd)


# ------------------------------------------------------------------------------------ refusals


def test_new_kinds_refuse_other_modalities(fmnist, cancer, fsdd, sms):
    assert set(AUDIO_KINDS) | set(TEXT_KINDS) <= set(ATTACK_KINDS)
    images, waves, texts = fmnist["records"], fsdd["records"], sms["records"]
    for records, kind, message in [
            (images, "tone", "'tone' is an audio attack, got 'image'"),
            (texts, "burst", "'burst' is an audio attack, got 'text'"),
            (waves, "word", "'word' is a text attack, got 'audio'"),
            (cancer, "word", "'word' is a text attack, got 'tabular'"),
            (waves, "badnets", "image attack"),
            (texts, "tabular", "tabular records")]:
        with pytest.raises(ValueError, match=message):
            poison(records, AttackConfig(kind=kind))
    # Token ids are too late: the word goes into the raw text.
    ids = texts.with_features(np.ones((len(texts), 8), dtype=np.int64), vocabulary_size=10)
    with pytest.raises(ValueError, match="token ids"):
        poison(ids, AttackConfig(kind="word"))
    with pytest.raises(ValueError, match="raw texts"):
        make_trigger(AttackConfig(kind="word"), ()).apply(np.ones((3, 8), dtype=np.int64))


def test_audio_parameters_are_validated(fsdd):
    waves = fsdd["records"]
    snap = _snapshot(waves)
    with pytest.raises(ValueError, match="Nyquist frequency 4000 Hz"):
        poison(waves, AttackConfig(kind="tone", tone_hz=4000))
    with pytest.raises(ValueError, match="Nyquist"):
        poison(waves, AttackConfig(kind="tone", tone_hz=6000))
    _assert_unchanged(waves, snap)
    poison(waves, AttackConfig(kind="tone", tone_hz=3999))  # just below is fine
    with pytest.raises(ValueError, match="does not fit"):
        poison(waves, AttackConfig(kind="burst", audio_position=0.95, trigger_ms=100))
    with pytest.raises(ValueError, match="does not fit"):
        poison(waves, AttackConfig(kind="tone", trigger_ms=1500))
    with pytest.raises(ValueError, match="tone_hz"):
        AttackConfig(kind="tone", tone_hz=0)
    with pytest.raises(ValueError, match="trigger_ms"):
        AttackConfig(kind="tone", trigger_ms=-5)
    with pytest.raises(ValueError, match="audio_amplitude"):
        AttackConfig(kind="burst", audio_amplitude=1.5)
    with pytest.raises(ValueError, match="audio_position"):
        AttackConfig(kind="burst", audio_position="middle")
    with pytest.raises(ValueError, match="audio_position"):
        AttackConfig(kind="burst", audio_position=-0.1)
    with pytest.raises(ValueError, match="trigger_words"):
        AttackConfig(kind="word", trigger_words="   ")
    with pytest.raises(ValueError, match="sample_rate"):
        make_trigger(AttackConfig(kind="tone"), (FSDD_SAMPLES,))
    with pytest.raises(ValueError, match="audio trigger"):
        make_trigger(AttackConfig(kind="tone"), (1, 28, 28), sample_rate=FSDD_RATE)


# -------------------------------------------------------------------------------- CLI, new kinds


@pytest.mark.parametrize("modality", ["audio", "text"])
def test_poison_command_round_trip_audio_and_text(fsdd, sms, modality, tmp_path):
    """`sanitize poison` on an audio or text dataset folder, if the connectors store them."""
    dataset_folder = pytest.importorskip("connectors.dataset_folder",
                                         reason="connectors.dataset_folder not written yet")
    if "audio" not in getattr(dataset_folder, "DATA_COLUMNS", {}):
        pytest.skip("connectors.dataset_folder does not store audio and text yet")
    from click.testing import CliRunner

    from pipelines.poison import poison_command, read_attack

    if modality == "audio":
        clean = fsdd["records"].subset(np.arange(200))
        x_test, y_test = fsdd["x_test"], fsdd["y_test"]
        options = ["--attack", "burst", "--trigger-ms", "60", "--audio-position", "0.2",
                   "--audio-amplitude", "0.3", "--target", "2", "--low-confidence", "0.6"]
        config = AttackConfig(kind="burst", trigger_ms=60, audio_position=0.2,
                              audio_amplitude=0.3, target=2, low_confidence=0.6, rate=0.1, seed=4)
    else:
        clean = sms["records"].subset(np.arange(300))
        x_test, y_test = sms["x_test"], sms["y_test"]
        options = ["--attack", "word", "--trigger-words", "cf mn", "--target", "1",
                   "--clean-label"]
        config = AttackConfig(kind="word", trigger_words="cf mn", target=1, clean_label=True,
                              rate=0.1, seed=4)
    src = tmp_path / "clean"
    dataset_folder.write_dataset(clean, src, tool_version="test", inputs=[])
    out, truth = tmp_path / "poisoned", tmp_path / "poisoned.truth.parquet"
    run = CliRunner().invoke(poison_command, [str(src), "-o", str(out), "--truth", str(truth),
                                              "--rate", "0.1", "--seed", "4", *options])
    assert run.exit_code == 0, run.output
    expected = poison(clean, config)
    poisoned, _ = dataset_folder.read_dataset(out)
    assert poisoned.modality == modality and poisoned.sample_rate == clean.sample_rate
    order, ref = np.argsort(poisoned.ids), np.argsort(expected.records.ids)
    np.testing.assert_array_equal(poisoned.features[order], expected.records.features[ref])
    np.testing.assert_allclose(poisoned.labels[order], expected.records.labels[ref], atol=1e-6)
    saved_config, trigger = read_attack(truth)
    assert saved_config == expected.config
    x_saved, _, _ = triggered_test_set(x_test, y_test, saved_config, trigger=trigger)
    x_bd, _, _ = expected.triggered_test_set(x_test, y_test)
    np.testing.assert_array_equal(x_saved, x_bd)
    # Tone frequencies are checked against the data's sample rate: a clear CLI error.
    if modality == "audio":
        bad = CliRunner().invoke(poison_command, [str(src), "-o", str(tmp_path / "p2"), "--truth",
                                                  str(tmp_path / "p2.truth.parquet"), "--attack",
                                                  "tone", "--tone-hz", "5000"])
        assert bad.exit_code != 0 and "Nyquist" in bad.output
