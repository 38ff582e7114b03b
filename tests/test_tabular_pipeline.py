"""The CLI on tabular data: sklearn's breast-cancer table (569 records, 30 numeric features) as
CSV through ingest (named or inferred features) -> train (MLP) -> flag -> export -> predict, the
ONNX model checked against PyTorch, and soft (probability-vector) labels in Parquet."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import polars as pl
import pytest
import torch
from click.testing import CliRunner

from connectors.dataset_folder import read_dataset
from connectors.run_folder import read_run
from pipelines.cli import main
from pipelines.export import load_model

TRAIN_PARAMS = {p.name for p in main.commands["train"].params}
N = 569


def train_knobs(**values) -> list[str]:
    """``--name value`` for each knob the ``train`` command has (the engine's knobs evolve)."""
    return [a for k, v in values.items() if k in TRAIN_PARAMS
            for a in (f"--{k.replace('_', '-')}", str(v))]


FAST = train_knobs(seed_steps=120, heal_steps=20, train_epochs=2, iterations=1, probe_epochs=1,
                   probe_steps=20)


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, (args[:1], result.stderr, result.exception)
    assert isinstance(result.exception, (SystemExit, type(None))), result.exception
    return result


@pytest.fixture(scope="module")
def cancer():
    datasets = pytest.importorskip("sklearn.datasets")
    data = datasets.load_breast_cancer()
    return {"x": data.data.astype(np.float64), "y": data.target.astype(np.int64),
            "features": [str(c) for c in data.feature_names],
            "classes": [str(c) for c in data.target_names]}   # ['malignant', 'benign']


@pytest.fixture(scope="module")
def tab(tmp_path_factory, cancer) -> dict:
    """Ingest (features named and inferred), train, flag, export and predict, once."""
    root = tmp_path_factory.mktemp("tabular")
    names, classes = cancer["features"], cancer["classes"]
    table = pl.DataFrame(cancer["x"], schema=names, orient="row").with_columns(
        pl.Series("record", [f"bc-{i:03d}" for i in range(N)]),
        pl.Series("hospital", [f"h{i % 4}" for i in range(N)]),
        pl.Series("diagnosis", [classes[v] for v in cancer["y"]]),
        pl.Series("vetted", np.arange(N) % 5 == 0))
    table = table.select("record", "hospital", "diagnosis", "vetted", *names)
    table.write_csv(root / "cancer.csv")
    # new data to predict on: other column order, an extra numeric column the model never saw
    rng = np.random.default_rng(0)
    order = rng.permutation(names).tolist()
    table.select("record", *order).with_columns(
        pl.Series("age", rng.integers(30, 80, N))).write_csv(root / "new.csv")

    common = ["--label", "diagnosis", "--id", "record", "--contributor", "hospital",
              "--trusted-column", "vetted", "-q"]
    cli("ingest", root / "cancer.csv", *common, "--features", ",".join(names), "-o", root / "ds")
    cli("ingest", root / "cancer.csv", *common, "-o", root / "ds-inferred")
    cli("train", root / "ds", "-o", root / "run", "--device", "cpu", "--widths", "32,32", "-q", *FAST)
    cli("flag", root / "run", "-o", root / "flags.csv", "--contamination", "0.05", "-q")
    cli("export", root / "run", "-o", root / "model.onnx", "-q")
    predicted = cli("predict", root / "model.onnx", root / "new.csv", "-o", root / "preds.csv",
                    "--id", "record")
    return {"root": root, "table": table, "predict_stderr": predicted.stderr}


def test_features_named_or_inferred_give_the_same_dataset(tab, cancer):
    named, manifest = read_dataset(tab["root"] / "ds")
    inferred, _ = read_dataset(tab["root"] / "ds-inferred")
    assert manifest["modality"] == "tabular"
    assert named.feature_names == inferred.feature_names == cancer["features"]
    np.testing.assert_array_equal(named.ids, inferred.ids)
    np.testing.assert_array_equal(named.features, inferred.features)
    # the CSV holds the features exactly (float32 of the float64 values)
    order = np.argsort(named.ids.astype(str))
    np.testing.assert_array_equal(named.features[order], cancer["x"].astype(np.float32))
    assert sorted(named.class_names) == sorted(cancer["classes"])
    assert int(named.trusted.sum()) == len(range(0, N, 5))


def test_train_uses_an_mlp_and_scores_every_collected_record(tab):
    run = read_run(tab["root"] / "run")
    assert run["network"]["kind"] == "mlp"
    assert list(run["network"]["input_shape"]) == [30]
    assert run["manifest"]["modality"] == "tabular"
    scores = run["scores"]
    vetted = tab["table"].filter(pl.col("vetted"))["record"]
    collected = tab["table"].filter(~pl.col("vetted"))["record"]
    assert scores.height == len(collected)
    assert set(scores["id"]) == set(collected) and not set(scores["id"]) & set(vetted)
    s = scores["score"].to_numpy()
    assert np.isfinite(s).all() and s.min() >= 0 and s.max() <= 1


def test_flag_report_on_tabular_run(tab):
    report = pl.read_csv(tab["root"] / "flags.csv")
    assert report.height == N - len(range(0, N, 5))
    assert report["rank"].to_list() == list(range(1, report.height + 1))
    assert report["flagged"].sum() == round(0.05 * report.height)
    assert report.filter(pl.col("flagged"))["rank"].max() == round(0.05 * report.height)


def test_export_metadata_names_the_features(tab, cancer):
    meta = ort.InferenceSession(str(tab["root"] / "model.onnx"),
                                providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    spec = json.loads(meta["input_spec"])
    assert json.loads(meta["class_names"]) == read_run(tab["root"] / "run")["manifest"]["class_names"]
    assert spec["modality"] == "tabular" and spec["shape"] == [30]
    assert spec["feature_names"] == cancer["features"]


def test_predict_on_csv_matches_pytorch(tab, cancer):
    preds = pl.read_csv(tab["root"] / "preds.csv")
    classes = read_run(tab["root"] / "run")["manifest"]["class_names"]
    assert preds.height == N
    assert preds["id"].to_list() == tab["table"]["record"].to_list()    # one row per record, in order
    probs = preds.select([f"prob_{c}" for c in classes]).to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert preds["predicted_label"].to_list() == [classes[k] for k in probs.argmax(1)]
    # the served PyTorch network on the same features, in the model's own feature order
    net = load_model(read_run(tab["root"] / "run"))
    with torch.inference_mode():
        expected = torch.softmax(net(torch.from_numpy(cancer["x"].astype(np.float32))), 1).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert (probs.argmax(1) == expected.argmax(1)).all()
    truth = np.array([classes.index(c) for c in tab["table"]["diagnosis"]])
    accuracy = float((probs.argmax(1) == truth).mean())
    print(f"tabular accuracy {accuracy:.3f}")
    assert accuracy > 0.85, accuracy      # a real model, not chance (0.63 for the majority class)


def test_soft_labels_in_parquet_ingest_and_train(tmp_path, cancer):
    """Probability-vector labels (a list column): read as given, and a run trains on them."""
    classes, y = cancer["classes"], cancer["y"]
    confidence = np.where(np.arange(N) % 3 == 0, 0.7, 0.95)
    vectors = np.stack([np.where(y == 0, confidence, 1 - confidence),
                        np.where(y == 0, 1 - confidence, confidence)], axis=1)
    table = pl.DataFrame(cancer["x"], schema=cancer["features"], orient="row").with_columns(
        pl.Series("id", [f"bc-{i:03d}" for i in range(N)]),
        pl.Series("label", vectors.tolist(), dtype=pl.List(pl.Float64)),
        pl.Series("trusted", np.arange(N) % 5 == 0))
    path = tmp_path / "soft.parquet"
    table.write_parquet(path)
    cli("ingest", path, "--label", "label", "--id", "id", "--trusted-column", "trusted",
        "--classes", ",".join(classes), "-o", tmp_path / "ds", "-q")
    records, manifest = read_dataset(tmp_path / "ds")
    assert manifest["class_names"] == classes
    assert records.feature_names == cancer["features"]   # the label list is not a feature
    order = np.argsort(records.ids.astype(str))
    np.testing.assert_allclose(records.labels[order], vectors, atol=1e-6)
    cli("train", tmp_path / "ds", "-o", tmp_path / "run", "--device", "cpu", "--widths", "16", "-q",
        *FAST)
    cli("flag", tmp_path / "run", "-o", tmp_path / "flags.parquet", "--top-k", "20", "-q")
    report = pl.read_parquet(tmp_path / "flags.parquet")
    assert report.height == N - len(range(0, N, 5))
    assert int(report["flagged"].sum()) == 20
    # the report names the class each soft label favours
    favoured = dict(zip(table["id"], [classes[k] for k in vectors.argmax(1)]))
    assert all(favoured[i] == g for i, g in zip(report["id"], report["given_label"]))
