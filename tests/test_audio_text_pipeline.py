"""Audio and text, end to end through the CLI, with a defense check per modality.

Audio: the Free Spoken Digit Dataset (real recordings, 8 kHz) as a folder with one sub-folder per
class (symlinks into ``../shared``), about 5% of the training clips as a separate trusted folder,
a corrupt clip among them; recordings 0-4 of every speaker and digit (the official test split)
as the folder to predict on. Text: SMS Spam Collection messages in a CSV with a text column,
a 5% trusted column, ids and contributors.

Each runs ``ingest -> poison (10%, all-to-one) -> train (shipped defaults) -> flag -> export ->
predict``, then measures on held-out data, through the exported ONNX model: clean accuracy and
the attack success rate (ASR) of the planted trigger, and the detection AUROC of the flags
against the ground truth. Thresholds sit below the figures measured on this machine (given per
test) so that they catch a broken defense, not noise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from connectors.audio_files import AudioPolicy, read_audio_features
from connectors.text_tokens import TextTokenizer, normalize_text
from pipelines.cli import main
from pipelines.export import read_metadata, tokenizer_path
from pipelines.poison import read_attack
from sanitizer.attacks import triggered_test_set
from sanitizer.metrics import auroc
from sanitizer.onnx_export import run_onnx, session

TARGET = 0


def invoke(*args: str) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def run_pipeline(work: Path, ingest_args: list, predict_args: list, poison_args: list) -> dict:
    invoke("ingest", *ingest_args, "-o", work / "ds", "-q")
    invoke("poison", work / "ds", "-o", work / "dsp", "--truth", work / "truth.parquet",
           "--target", TARGET, "--rate", 0.1, "--seed", 1, *poison_args)
    trained = invoke("train", work / "dsp", "-o", work / "run", "-q", "--device", "cpu")
    invoke("flag", work / "run", "-o", work / "flags.parquet", "-q")
    invoke("export", work / "run", "-o", work / "model.onnx", "-q")
    invoke("predict", work / "model.onnx", *predict_args, "-o", work / "preds.parquet", "-q")
    flags = pl.read_parquet(work / "flags.parquet")
    truth = pl.read_parquet(work / "truth.parquet")
    joined = flags.join(truth.select("id", "poisoned"), on="id")
    return {"flags": joined, "preds": pl.read_parquet(work / "preds.parquet"),
            "auroc": auroc(joined["score"].to_numpy(), joined["poisoned"].to_numpy()),
            "truth": truth, "train_output": trained,
            "metrics": json.loads((work / "run" / "metrics.json").read_text())}


def required(path: Path) -> Path:
    """``path`` of the shared data, or skip the tests that need it."""
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


def onnx_scores(model: Path, inputs: np.ndarray) -> np.ndarray:
    return run_onnx(session(str(model)), inputs).argmax(1)


# ----------------------------------------------------------------------------- audio

@pytest.fixture(scope="module")
def audio(shared_data: Path, tmp_path_factory) -> dict:
    fsdd = required(shared_data / "fsdd" / "wav")
    work = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(0)
    for digit in sorted(os.listdir(fsdd)):
        for name in sorted(os.listdir(fsdd / digit)):
            index = int(name.rsplit("_", 1)[1].split(".")[0])
            role = "new" if index < 5 else "vetted" if rng.random() < 0.05 else "clips"
            (work / role / digit).mkdir(parents=True, exist_ok=True)
            (work / role / digit / name).symlink_to(fsdd / digit / name)
    (work / "clips" / "3" / "broken.wav").write_bytes(b"not audio at all")
    out = run_pipeline(work, [work / "clips", "--trusted", work / "vetted"], [work / "new"],
                       ["--attack", "tone"])
    out["work"] = work
    return out


def test_audio_ingest_quarantines_the_corrupt_clip(audio):
    work = audio["work"]
    manifest = json.loads((work / "ds" / "manifest.json").read_text())
    quarantine = pl.read_parquet(work / "ds" / "quarantine.parquet")
    assert manifest["modality"] == "audio" and manifest["sample_rate"] == 8000
    assert manifest["quarantined"] == 1 and quarantine["path"].to_list() == ["3/broken.wav"]
    assert "cannot decode" in quarantine["reason"][0]
    assert manifest["audio_policy"]["duration"] > 0.3


def test_audio_model_takes_waveforms_and_serves_the_folder(audio):
    work = audio["work"]
    meta = read_metadata(work / "model.onnx")
    assert meta["input_spec"]["modality"] == "audio" and meta["input_spec"]["sample_rate"] == 8000
    preds = audio["preds"]
    assert preds.height == 300  # 10 digits x 6 speakers x recordings 0-4
    truth = np.array([int(i.split("/")[0]) for i in preds["id"]])
    accuracy = (preds["predicted_label"].cast(int).to_numpy() == truth).mean()
    assert accuracy >= 0.90, accuracy  # measured 0.967 (the oracle, trained on clean clips only: 1.00)


def test_audio_defense_stops_the_tone_backdoor(audio):
    """Measured here: AUROC 0.999, ASR 0.0 (no defense: ASR 98.5%)."""
    work = audio["work"]
    assert audio["auroc"] >= 0.98, audio["auroc"]
    meta = read_metadata(work / "model.onnx")
    policy = AudioPolicy.from_dict(meta["input_spec"]["audio_policy"])
    waves, ids, _ = read_audio_features(work / "new", policy=policy)
    labels = np.array([int(i.split("/")[0]) for i in ids])
    config, trigger = read_attack(work / "truth.parquet")
    x_bd, y_bd, _ = triggered_test_set(waves, labels, config, trigger=trigger)
    asr = (onnx_scores(work / "model.onnx", x_bd) == TARGET).mean()
    assert asr <= 0.05, asr


# ----------------------------------------------------------------------------- text

@pytest.fixture(scope="module")
def text(shared_data: Path, tmp_path_factory) -> dict:
    path = required(shared_data / "sms_spam" / "sms_spam.csv")
    work = tmp_path_factory.mktemp("text")
    rng = np.random.default_rng(0)
    sms = pl.read_csv(path).with_columns(
        pl.Series("id", [f"m{i}" for i in range(5574)]),
        pl.Series("vetted", rng.random(5574) < 0.05),
        pl.Series("worker", [f"w{i % 12}" for i in range(5574)]))
    order = rng.permutation(sms.height)
    sms[order[:4400]].write_csv(work / "collected.csv")
    sms[order[4400:]].write_csv(work / "test.csv")
    sms[order[4400:]].drop("label", "vetted", "worker").write_csv(work / "new.csv")
    out = run_pipeline(work, [work / "collected.csv", "--text", "text", "--label", "label",
                              "--id", "id", "--contributor", "worker", "--trusted-column", "vetted"],
                       [work / "new.csv", "--id", "id"], ["--attack", "word", "--trigger-words", "cf"])
    out["work"] = work
    return out


def test_text_tokenizer_travels_with_the_model(text):
    work = text["work"]
    meta = read_metadata(work / "model.onnx")
    beside = json.loads(tokenizer_path(work / "model.onnx").read_text())
    stored = json.loads((work / "run" / "tokenizer.json").read_text())
    assert meta["input_spec"]["tokenizer"] == beside == stored
    assert "cf" in TextTokenizer.from_dict(stored).vocabulary  # the trigger has its own id


def test_text_predict_reads_raw_text(text):
    preds, test = text["preds"], pl.read_csv(text["work"] / "test.csv")
    assert preds["id"].to_list() == test["id"].to_list()
    accuracy = (preds["predicted_label"] == test["label"]).mean()
    assert accuracy >= 0.93, accuracy  # measured 0.963 (majority class: 0.87; oracle 0.947)


def test_text_provenance_finds_the_planted_word(text):
    # "cf" is in 440 of the 4,167 collected messages and in none of the 233 vetted ones, which
    # at that rate would hold ~25: the token test names it, and only it
    assert text["metrics"]["planted_words"] == ["cf"]
    assert "word 'cf'" in text["train_output"]
    flags = text["flags"]
    poisoned = flags.filter(pl.col("poisoned"))
    assert (poisoned["planted_word"] == "cf").all() and poisoned["shifted"].all()
    assert poisoned["flagged"].all() and poisoned["reason"].str.starts_with("carries 'cf'").all()
    carriers = flags.filter(pl.col("planted_word") == "cf")
    assert len(carriers) <= 1.05 * len(poisoned), len(carriers)  # few clean messages say "cf"


def test_text_defense_stops_the_word_backdoor(text):
    work = text["work"]
    assert text["auroc"] >= 0.99, text["auroc"]  # measured 1.000 (0.977 before the token test)
    test = pl.read_csv(work / "test.csv")
    classes = read_metadata(work / "model.onnx")["class_names"]
    labels = np.array([classes.index(v) for v in test["label"]])
    texts = np.array([normalize_text(t) for t in test["text"]], dtype=object)
    config, trigger = read_attack(work / "truth.parquet")
    x_bd, y_bd, _ = triggered_test_set(texts, labels, config, trigger=trigger)
    tokenizer = TextTokenizer.from_dict(read_metadata(work / "model.onnx")["input_spec"]["tokenizer"])
    asr = (onnx_scores(work / "model.onnx", tokenizer.encode(x_bd)) == TARGET).mean()
    # Measured 0.000 here (no defense: 1.00; the oracle, trained on the truly clean records of
    # this split, 0.33: 10% poison relabels ~3/4 of the collected spam, so spam recall is only
    # ~0.65 with or without the trigger). 0.175 before the token test set every message carrying
    # "cf" apart, 0.56 before the judging network healed on a class-balanced core.
    assert asr <= 0.02, asr
