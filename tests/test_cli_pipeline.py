"""The whole ``sanitize`` pipeline on real Fashion-MNIST records, through the CLI.

3000 records (2700 collected, 300 trusted) are written as Parquet with a PNG image column,
class-name labels, ids and contributors, then

    ingest (trusted set as a separate file, and as a boolean column) -> poison (BadNets, target 0,
    10%) -> train (a small, fast config) -> flag (parquet / csv / jsonl on stdout; threshold,
    contamination and top-k rules; contributor summary; clean/quarantined split) -> export (ONNX)
    -> predict (Parquet with PNG images, CSV with pixel columns)

run once per module through Click's ``CliRunner`` (stdout and stderr apart), and checked for
what each step must produce. A smaller copy runs as real subprocesses (``python -m pipelines``
and the ``sanitize`` script), which also checks that training is reproducible across processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import polars as pl
import pytest
import torch
from click.testing import CliRunner

from connectors.dataset_folder import read_dataset
from connectors.images import encode_png
from connectors.run_folder import FILES, read_run
from pipelines.cli import main
from pipelines.export import load_model
from sanitizer.heal_and_select import HealSelectConfig
from sanitizer.metrics import auroc, precision_at_k

N_COLLECTED, N_TRUSTED, N_TEST = 2700, 300, 300
TRAIN_PARAMS = {p.name for p in main.commands["train"].params}

# Detection floors of the small config (measured figures in the test's docstring).
MIN_AUROC = 0.85
MIN_TOP_K_PRECISION = 0.70


def train_knobs(**values) -> list[str]:
    """``--name value`` for each knob the ``train`` command has (the engine's knobs evolve)."""
    return [a for k, v in values.items() if k in TRAIN_PARAMS
            for a in (f"--{k.replace('_', '-')}", str(v))]


# Small and fast, but strong enough to find the backdoor: narrow but three conv blocks (two
# lose the patch to global pooling on 28x28), lr 0.01 (3e-3 learns too little in 150 steps),
# one round. Knobs the train command does not have (the engine evolves) are left out.
TRAIN = ["--device", "cpu", "--seed", "0", "--widths", "8,16,32", "--lr", "0.01",
         *train_knobs(seed_steps=150, heal_steps=30, train_epochs=1, iterations=1, probe_epochs=1,
                      probe_steps=60)]
# --no-retrain: half a pass would not train a served network afresh (the default for images
# anyway; the switch is tested in test_defense.py and by --retrain below); 20 provenance steps
# (200 by default): the tests that train with TINY check plumbing, not what is set apart
TINY = ["--device", "cpu", "--seed", "3", "--widths", "8,16", "--no-retrain",
        *train_knobs(seed_steps=30, heal_steps=5, train_epochs=0.5, iterations=1, probe_epochs=0.5,
                     probe_steps=5, provenance_steps=20)]


def cli(*args, ok: bool = True):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, (args[:1], result.stderr, result.exception)
        assert isinstance(result.exception, (SystemExit, type(None))), result.exception
    return result


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def flat(text: str) -> str:
    """Messages without the line breaks a console may insert."""
    return " ".join(text.split())


# --- the pipeline, run once -------------------------------------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory, fmnist) -> dict:
    """Real Fashion-MNIST tables: collected, trusted (30 per class), both in one table with a
    boolean column, and test records to predict on (Parquet with PNGs, CSV with pixel columns)."""
    root = tmp_path_factory.mktemp("fmnist")
    names = [str(c) for c in fmnist["class_names"]]
    rng = np.random.default_rng(2024)
    pool = rng.permutation(len(fmnist["y_train"]))[:20000]
    y_pool = fmnist["y_train"][pool]
    trusted = np.concatenate([pool[y_pool == c][:N_TRUSTED // 10] for c in range(10)])
    collected = np.setdiff1d(pool, trusted)[:N_COLLECTED]
    x, y = fmnist["x_train"][:, None], fmnist["y_train"].astype(np.int64)

    def table(index, prefix):
        return pl.DataFrame({
            "id": [f"{prefix}-{i:05d}" for i in index],
            "label": [names[v] for v in y[index]],
            "worker": [f"worker-{i % 20:02d}" for i in index],
            "image": encode_png(x[index]),
        })

    c_df, t_df = table(collected, "fm"), table(trusted, "fm")
    paths = {"collected": root / "collected.parquet", "trusted": root / "trusted.parquet",
             "combined": root / "combined.parquet", "test_parquet": root / "test.parquet",
             "test_csv": root / "test.csv", "small": root / "small.parquet"}
    c_df.write_parquet(paths["collected"])
    t_df.write_parquet(paths["trusted"])
    pl.concat([c_df.with_columns(pl.lit(False).alias("is_trusted")),
               t_df.with_columns(pl.lit(True).alias("is_trusted"))]).sample(
        fraction=1.0, shuffle=True, seed=1).write_parquet(paths["combined"])
    pl.concat([c_df[:600].with_columns(pl.lit(False).alias("is_trusted")),
               t_df.with_columns(pl.lit(True).alias("is_trusted"))]).write_parquet(paths["small"])
    x_test = fmnist["x_test"][:N_TEST, None]
    test_ids = [f"test-{i:04d}" for i in range(N_TEST)]
    pl.DataFrame({"id": test_ids, "image": encode_png(x_test)}).write_parquet(paths["test_parquet"])
    pixels = x_test.reshape(N_TEST, -1)
    pl.DataFrame({"id": test_ids, **{f"pixel{k}": pixels[:, k] for k in range(pixels.shape[1])}}
                 ).write_csv(paths["test_csv"])
    return {**paths, "root": root, "names": names, "collected_ids": c_df["id"].to_list(),
            "trusted_ids": t_df["id"].to_list(), "x_test": x_test,
            "y_test": fmnist["y_test"][:N_TEST].astype(np.int64),
            "digests": {k: sha256(p) for k, p in paths.items()}}


@pytest.fixture(scope="module")
def pipe(data) -> dict:
    root = data["root"]
    columns = ["--label", "label", "--id", "id", "--contributor", "worker", "--image", "image"]
    out = {"ds": root / "ds", "ds_col": root / "ds-col", "dsp": root / "dsp",
           "truth": root / "truth.parquet", "run": root / "run"}
    out["ingest"] = cli("ingest", data["collected"], "--trusted", data["trusted"], *columns,
                        "-o", out["ds"])
    out["ingest_col"] = cli("ingest", data["combined"], "--trusted-column", "is_trusted", *columns,
                            "-o", out["ds_col"])
    ds_before = tree_digest(out["ds"])
    out["poison"] = cli("poison", out["ds"], "-o", out["dsp"], "--truth", out["truth"],
                        "--attack", "badnets", "--target", "0", "--rate", "0.1", "--seed", "1")
    out["ds_unchanged"] = tree_digest(out["ds"]) == ds_before
    out["train"] = cli("train", out["dsp"], "-o", out["run"], *TRAIN)
    return out


@pytest.fixture(scope="module")
def flags(pipe, data) -> dict:
    root, run = data["root"], pipe["run"]
    dsp_before = tree_digest(pipe["dsp"])
    run_before = tree_digest(run)
    out = {"parquet": root / "flags.parquet", "csv": root / "flags.csv",
           "contributors": root / "contributors.csv", "split": root / "split"}
    out["threshold"] = cli("flag", run, "-o", out["parquet"], "--threshold", "0.5",
                           "--contributors", out["contributors"], "--split", out["split"])
    out["contamination"] = cli("flag", run, "-o", out["csv"], "--contamination", "0.1")
    out["jsonl"] = cli("flag", run, "-o", "-", "--format", "jsonl", "--top-k", "100")
    out["untouched"] = tree_digest(pipe["dsp"]) == dsp_before and tree_digest(run) == run_before
    return out


@pytest.fixture(scope="module")
def served(pipe, data) -> dict:
    root = data["root"]
    out = {"model": root / "model.onnx", "preds_parquet": root / "preds.parquet",
           "preds_csv": root / "preds.csv"}
    out["export"] = cli("export", pipe["run"], "-o", out["model"])
    out["predict_parquet"] = cli("predict", out["model"], data["test_parquet"], "--id", "id",
                                 "-o", out["preds_parquet"])
    out["predict_csv"] = cli("predict", out["model"], data["test_csv"], "--id", "id",
                             "-o", out["preds_csv"])
    return out


def truth_frame(pipe) -> pl.DataFrame:
    return pl.read_parquet(pipe["truth"])


# --- ingest and poison ------------------------------------------------------------------------

def test_ingest_writes_the_records_and_keeps_stdout_for_data(pipe, data):
    records, manifest = read_dataset(pipe["ds"])
    assert manifest["counts"] == {**manifest["counts"], "collected": N_COLLECTED, "trusted": N_TRUSTED}
    assert manifest["modality"] == "image" and list(records.input_shape) == [1, 28, 28]
    assert sorted(manifest["class_names"]) == sorted(data["names"])
    assert set(records.ids[records.trusted]) == set(data["trusted_ids"])
    assert set(records.ids[~records.trusted]) == set(data["collected_ids"])
    hashes = {Path(i["path"]).name: i["sha256"] for i in manifest["inputs"]}
    assert hashes == {"collected.parquet": data["digests"]["collected"],
                      "trusted.parquet": data["digests"]["trusted"]}
    assert pipe["ingest"].stdout == ""
    assert f"ingested {N_COLLECTED} collected + {N_TRUSTED} trusted image records" in flat(pipe["ingest"].stderr)


def test_trusted_file_and_trusted_column_give_the_same_dataset(pipe):
    a, _ = read_dataset(pipe["ds"])
    b, _ = read_dataset(pipe["ds_col"])
    assert a.class_names == b.class_names
    oa, ob = np.argsort(a.ids.astype(str)), np.argsort(b.ids.astype(str))
    np.testing.assert_array_equal(a.ids[oa], b.ids[ob])
    np.testing.assert_array_equal(a.features[oa], b.features[ob])
    np.testing.assert_array_equal(a.labels[oa], b.labels[ob])
    np.testing.assert_array_equal(a.trusted[oa], b.trusted[ob])
    np.testing.assert_array_equal(a.contributors[oa], b.contributors[ob])


def test_poison_plants_the_backdoor_and_keeps_the_truth_apart(pipe, data):
    clean, _ = read_dataset(pipe["ds"])
    poisoned, _ = read_dataset(pipe["dsp"])
    truth = truth_frame(pipe)
    n = N_COLLECTED + N_TRUSTED
    assert truth.height == n and set(truth["id"]) == set(clean.ids)
    bad = truth.filter(pl.col("poisoned"))
    assert bad.height == round(0.1 * n)
    assert set(bad["id"]) <= set(data["collected_ids"])
    assert (bad["poison_label"] == 0).all() and (bad["original_label"] != 0).all()
    assert pipe["ds_unchanged"], "poison modified its input dataset folder"
    assert not any(p.name.startswith("truth") for p in pipe["dsp"].rglob("*"))
    assert pipe["truth"].with_name("truth.attack.json").is_file()
    # same records and ids; only the poisoned ones changed, in pixels and label
    np.testing.assert_array_equal(clean.ids, poisoned.ids)
    is_bad = np.isin(poisoned.ids.astype(str), bad["id"].to_list())
    changed = (clean.features != poisoned.features).reshape(n, -1).any(axis=1)
    np.testing.assert_array_equal(changed, is_bad)
    assert (poisoned.hard_labels[is_bad] == 0).all()
    np.testing.assert_array_equal(clean.labels[~is_bad], poisoned.labels[~is_bad])


# --- train ------------------------------------------------------------------------------------

def test_train_writes_a_complete_run_folder(pipe, data):
    run_dir = pipe["run"]
    for name in ("model.pt", "network.json", "config.json", "scores.parquet", "metrics.json",
                 "run.json", *FILES):
        assert (run_dir / name).is_file(), name
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["seed"] == 0
    assert isinstance(manifest["argv"], list) and all(isinstance(a, str) for a in manifest["argv"])
    assert manifest["versions"]["torch"] == torch.__version__
    assert manifest["versions"]["numpy"] == np.__version__
    assert manifest["versions"]["polars"] == pl.__version__
    assert manifest["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert manifest["records"] == {"collected": N_COLLECTED, "trusted": N_TRUSTED}
    assert manifest["device"] == "cpu"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["seed"] == 0 and list(config["widths"]) == [8, 16, 32]
    assert config["lr"] == 0.01
    assert config["prior_correction"] is True and config["prior_gap"] == 0.2
    assert config["max_prior_division"] == 2.0
    assert config["core_floor"] == 30 and config["backed"] == 0.9 and config["core_skew"] == 3.0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["timings_s"]["total"] > 0
    # images are served by the rounds' network unless --retrain says otherwise
    assert metrics["retrained"] is False and "retrain" not in metrics["timings_s"]
    assert config["retrain"] is None
    assert metrics["shifted_classes"] == []  # BadNets relabels other classes: target not set apart whole
    # the weights load without pickled code and fit the network the spec describes
    state = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)
    load_model({"network": json.loads((run_dir / "network.json").read_text()), "state_dict": state})
    scores = pl.read_parquet(run_dir / "scores.parquet")
    assert scores.height == N_COLLECTED and set(scores["id"]) == set(data["collected_ids"])
    s = scores["score"].to_numpy()
    assert np.isfinite(s).all() and s.min() >= 0.0 and s.max() <= 1.0
    assert pipe["train"].stdout == ""


def test_train_switches_reach_the_engine_config(pipe, tmp_path):
    run_dir = tmp_path / "run"
    cli("train", pipe["dsp"], "-o", run_dir, *TINY, "--no-prior-correction", "--rejected", "drop",
        "--prior-gap", "1", "--max-prior-division", "3", "--core-floor", "0", "--backed", "0.8",
        "--core-skew", "5", "--partners", "2", "--full-dominance", "0.4", "--look-alikes", "5", "--specific-lift", "0.3",
        "--vouchers", "3", "--provenance-z", "2.5", "--group-floor", "0.2", "--shifted-power", "2", "--shifted-ramp", "0.5", "--shifted-unsupported", "0.1", "--token-alpha", "0.01", "--retrain",
        "--refuse-suspects", "--own-lift", "0.5", "-q")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["prior_correction"] is False and config["rejected"] == "drop"
    assert config["prior_gap"] == 1.0 and config["max_prior_division"] == 3.0
    assert config["core_floor"] == 0 and config["backed"] == 0.8 and config["core_skew"] == 5.0
    assert config["partners"] == 2 and config["full_dominance"] == 0.4
    assert config["look_alikes"] == 5 and config["specific_lift"] == 0.3 and config["vouchers"] == 3
    assert config["provenance_z"] == 2.5 and config["group_floor"] == 0.2
    assert config["shifted_power"] == 2.0 and config["shifted_ramp"] == 0.5 and config["token_alpha"] == 0.01
    assert config["shifted_unsupported"] == 0.1
    assert config["accept_suspects"] is False
    assert config["own_lift"] == 0.5
    assert config["retrain"] is True  # the served network trained afresh, images or not
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["retrained"] is True and metrics["timings_s"]["retrain"] > 0


def test_train_warns_when_a_whole_class_is_set_apart(pipe, tmp_path):
    # clean-label BadNets on class 0: 270 poisoned records, the patch on (nearly) every collected
    # record of class 0, labels untouched; the provenance test sets the class apart whole
    poisoned, run_dir = tmp_path / "dsc", tmp_path / "run"
    cli("poison", pipe["ds"], "-o", poisoned, "--truth", tmp_path / "truth.parquet", "--attack",
        "badnets", "--target", "0", "--rate", "0.1", "--clean-label", "--seed", "1")
    result = cli("train", poisoned, "-o", run_dir, *TRAIN)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    target = read_dataset(poisoned)[0].class_names[0]  # ingest sorts the class names
    assert metrics["shifted_classes"] == [target]
    assert f"class '{target}': its collected records as a group" in flat(result.stderr)
    report = pl.read_parquet(run_dir / "scores.parquet")
    truth = pl.read_parquet(tmp_path / "truth.parquet").filter(pl.col("poisoned"))
    assert report.filter(pl.col("id").is_in(truth["id"].to_list()))["shifted"].all()


# --- flag -------------------------------------------------------------------------------------

def check_report(report: pl.DataFrame, data) -> np.ndarray:
    """Shared report invariants; returns the scores in report order."""
    assert report.height == N_COLLECTED
    assert report["id"].n_unique() == N_COLLECTED and set(report["id"]) == set(data["collected_ids"])
    assert report["rank"].to_list() == list(range(1, N_COLLECTED + 1))
    s = report["score"].to_numpy().astype(np.float64)
    assert np.isfinite(s).all() and s.min() >= 0.0 and s.max() <= 1.0
    assert (np.diff(s) <= 0).all(), "report not ordered by score"
    assert report["reason"].str.len_chars().min() > 0
    assert report["shifted"].dtype == pl.Boolean
    held = report.filter(pl.col("held_back"))  # kept out by the gate of few trusted images: never flagged for it
    assert report["held_back"].dtype == pl.Boolean and not (held["shifted"]).any()
    assert held.filter(~pl.col("flagged"))["reason"].str.contains("kept out of training").all()
    p = report["provenance"].to_numpy()  # the provenance test's P(collected), NaN where it is off
    assert (np.isnan(p) | ((p >= 0) & (p <= 1))).all()
    # set apart: beyond the cut in trusted spreads, or with a whole class or planted word
    z = report["provenance_spreads"].to_numpy()
    assert np.isnan(z).all() or (z[~report["shifted"].to_numpy()] <= HealSelectConfig().refine_z + 1e-4).all()
    return s


def test_flag_threshold_rule_parquet(flags, data):
    report = pl.read_parquet(flags["parquet"])
    s = check_report(report, data)
    np.testing.assert_array_equal(report["flagged"].to_numpy(), s >= 0.5)
    assert flags["threshold"].stdout == ""
    assert f"flagged {int((s >= 0.5).sum())} of {N_COLLECTED} records" in flat(flags["threshold"].stderr)
    assert flags["untouched"], "flag modified the run or dataset folder"


def test_flag_contamination_rule_csv(flags, data):
    report = pl.read_csv(flags["csv"])
    check_report(report, data)
    k = round(0.1 * N_COLLECTED)
    assert int(report["flagged"].sum()) == k
    np.testing.assert_array_equal(report["flagged"].to_numpy(), report["rank"].to_numpy() <= k)


def test_flag_top_k_jsonl_on_stdout(flags, data):
    lines = flags["jsonl"].stdout.splitlines()
    rows = [json.loads(line) for line in lines]          # every line of stdout is one record
    assert all(isinstance(r, dict) for r in rows)
    report = pl.DataFrame(rows)
    check_report(report, data)
    assert int(report["flagged"].sum()) == 100
    np.testing.assert_array_equal(report["flagged"].to_numpy(), report["rank"].to_numpy() <= 100)
    assert f"flagged 100 of {N_COLLECTED}" in flat(flags["jsonl"].stderr)
    # the same scores as the Parquet report
    parquet = pl.read_parquet(flags["parquet"])
    assert report["id"].to_list() == parquet["id"].to_list()
    np.testing.assert_allclose(report["score"].to_numpy(), parquet["score"].to_numpy(), rtol=1e-6)


def test_flag_contributor_summary(flags):
    report = pl.read_parquet(flags["parquet"])
    summary = pl.read_csv(flags["contributors"])
    expected = report.group_by("contributor").agg(pl.len().alias("n"), pl.col("flagged").sum().alias("k"))
    joined = summary.join(expected, on="contributor", how="full", coalesce=True)
    assert joined.height == 20 and joined.null_count().sum_horizontal().item() == 0
    assert (joined["records"] == joined["n"]).all() and (joined["flagged"] == joined["k"]).all()
    p = summary["p_value"].to_numpy()
    assert ((p >= 0) & (p <= 1)).all() and (np.diff(p) >= 0).all()


def test_flag_split_partitions_the_collected_records(flags, data):
    clean = pl.read_parquet(flags["split"] / "clean.parquet")
    quarantined = pl.read_parquet(flags["split"] / "quarantined.parquet")
    report = pl.read_parquet(flags["parquet"])
    a, b = set(clean["id"]), set(quarantined["id"])
    assert not a & b and a | b == set(data["collected_ids"])
    assert clean.height + quarantined.height == N_COLLECTED
    assert b == set(report.filter(pl.col("flagged"))["id"])


def test_detection_of_the_planted_backdoor(flags, pipe):
    """Scores against the ground truth (k = 300 poisoned records; chance precision 0.11).

    Measured with this small config on one CPU core: AUROC 0.990 and top-k precision 0.857 here
    (before the prior correction, which costs where a probe this short does not saturate the
    trigger: 0.998 / 0.937, and 0.996-1.000 / 0.91-0.98 over three poison seeds x two training
    seeds). (Two conv blocks, ``--widths 8,16``, reach only AUROC 0.93 / top-k 0.57: global
    pooling of a 7x7 map loses the 3x3 patch.) The floors keep a margin under that and stay far above chance."""
    report = pl.read_parquet(flags["parquet"]).join(
        truth_frame(pipe).select("id", "poisoned"), on="id", how="left")
    assert report["poisoned"].null_count() == 0
    poisoned = report["poisoned"].to_numpy()
    scores = report["score"].to_numpy()
    k = int(poisoned.sum())
    assert k == 300
    area, top_k = auroc(scores, poisoned), precision_at_k(scores, poisoned, k)
    print(f"detection: AUROC {area:.3f}, top-{k} precision {top_k:.3f}")
    assert area >= MIN_AUROC, area
    assert top_k >= MIN_TOP_K_PRECISION, top_k


# --- export and predict -----------------------------------------------------------------------

def test_export_metadata(served, pipe):
    model = onnx.load(str(served["model"]))
    meta = {p.key: p.value for p in model.metadata_props}
    run = read_run(pipe["run"])
    assert json.loads(meta["class_names"]) == run["manifest"]["class_names"]
    spec = json.loads(meta["input_spec"])
    assert spec["modality"] == "image" and spec["shape"] == [1, 28, 28]
    assert spec["dtype"] == "float32"
    sess = ort.InferenceSession(str(served["model"]), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert inp.shape[1:] == [1, 28, 28] and not isinstance(inp.shape[0], int)   # dynamic batch
    assert served["export"].stdout == ""


def prob_matrix(preds: pl.DataFrame, classes: list[str]) -> np.ndarray:
    return preds.select([f"prob_{c}" for c in classes]).to_numpy()


def test_predict_on_parquet_and_csv(served, pipe, data):
    classes = read_run(pipe["run"])["manifest"]["class_names"]
    a = pl.read_parquet(served["preds_parquet"])
    b = pl.read_csv(served["preds_csv"])
    for preds in (a, b):
        assert preds["id"].to_list() == [f"test-{i:04d}" for i in range(N_TEST)]
        p = prob_matrix(preds, classes)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
        assert preds["predicted_label"].to_list() == [classes[k] for k in p.argmax(1)]
        np.testing.assert_allclose(preds["confidence"].to_numpy(), p.max(1), rtol=1e-6)
    # PNG images and pixel columns are the same records
    np.testing.assert_allclose(prob_matrix(a, classes), prob_matrix(b, classes), atol=1e-6)
    truth = [data["names"][v] for v in data["y_test"]]
    accuracy = float(np.mean(np.array(a["predicted_label"].to_list()) == np.array(truth)))
    print(f"fmnist test accuracy {accuracy:.3f}")
    # a real classifier (chance is 0.1): measured 0.747 with the rounds' network serving, the
    # default for images (0.443 when a network retrained for this test's single pass served)
    assert accuracy > 0.5, accuracy
    # inputs are never modified
    assert {k: sha256(data[k]) for k in data["digests"]} == data["digests"]


def test_onnx_predictions_equal_pytorch(served, pipe, data):
    classes = read_run(pipe["run"])["manifest"]["class_names"]
    preds = pl.read_parquet(served["preds_parquet"])
    net = load_model(read_run(pipe["run"]))
    with torch.inference_mode():
        logits = net(torch.from_numpy(data["x_test"].astype(np.float32)))
    expected = torch.softmax(logits, dim=1).numpy()
    assert preds["predicted_label"].to_list() == [classes[k] for k in logits.argmax(1).tolist()]
    np.testing.assert_allclose(prob_matrix(preds, classes), expected, atol=1e-5)


# --- real processes; determinism --------------------------------------------------------------

def run_process(argv: list, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1"}
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, (argv[:4], done.stderr[-2000:])
    return done


def test_real_processes_and_reproducible_training(data, tmp_path):
    """ingest with ``python -m pipelines``, train and flag with the ``sanitize`` script; then the
    same training in this process gives bit-identical scores and weights."""
    script = Path(sys.executable).with_name("sanitize")
    if not script.is_file():
        pytest.skip(f"console script {script} not installed next to {sys.executable}")
    ingest = run_process([sys.executable, "-m", "pipelines", "ingest", data["small"], "--label", "label",
                          "--id", "id", "--contributor", "worker", "--image", "image",
                          "--trusted-column", "is_trusted", "-o", tmp_path / "ds"], tmp_path)
    assert ingest.stdout == "" and "ingested 600 collected + 300 trusted" in flat(ingest.stderr)
    train = run_process([script, "train", tmp_path / "ds", "-o", tmp_path / "run", *TINY], tmp_path)
    assert train.stdout == ""
    flag = run_process([script, "flag", tmp_path / "run", "-o", "-", "--top-k", "25"], tmp_path)
    rows = [json.loads(line) for line in flag.stdout.splitlines()]   # nothing but the data
    assert len(rows) == 600 and sum(r["flagged"] for r in rows) == 25
    assert [r["rank"] for r in rows] == list(range(1, 601))
    assert "flagged 25 of 600" in flat(flag.stderr)
    argv = json.loads((tmp_path / "run" / "run.json").read_text())["argv"]
    assert "train" in argv and str(tmp_path / "ds") in argv
    # the same seed on the CPU, in another process: identical scores and weights
    cli("train", tmp_path / "ds", "-o", tmp_path / "again", *TINY, "-q")
    first, second = read_run(tmp_path / "run"), read_run(tmp_path / "again")
    assert first["scores"]["id"].to_list() == second["scores"]["id"].to_list()
    np.testing.assert_array_equal(first["scores"]["score"].to_numpy(), second["scores"]["score"].to_numpy())
    for name, tensor in first["state_dict"].items():
        assert torch.equal(tensor, second["state_dict"][name]), name
    assert sha256(data["small"]) == data["digests"]["small"]
