"""Bad input through the ``sanitize`` CLI: a non-zero exit, one line on stderr naming the file
(and, where it applies, the row and column), nothing left behind, and the inputs untouched.

Every table is built from real data: Fashion-MNIST images (PNG), sklearn's digits and its
breast-cancer table. Usage errors (no trusted set, two flag rules, a run folder that does not
exist) are Click's: exit code 2 and the usual ``Usage: ... Error: ...`` block.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from connectors.images import encode_png
from pipelines.cli import main

TRAIN_PARAMS = {p.name for p in main.commands["train"].params}


def train_knobs(**values) -> list[str]:
    """``--name value`` for each knob the ``train`` command has (the engine's knobs evolve)."""
    return [a for k, v in values.items() if k in TRAIN_PARAMS
            for a in (f"--{k.replace('_', '-')}", str(v))]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def digest(path: Path) -> dict[str, str]:
    """SHA-256 of a file, or of every file below a folder."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def leftovers(path: Path) -> list[str]:
    """The path itself and any hidden temporary sibling an atomic write could leave."""
    if not path.parent.exists():
        return []
    return sorted(p.name for p in path.parent.iterdir()
                  if p.name == path.name or p.name.startswith(f".{path.name}."))


def expect_failure(args, *, inputs, outputs, code=1, mentions=()) -> str:
    """Run the CLI, check the failure contract, return the (last) stderr line."""
    before = {str(p): digest(Path(p)) for p in inputs}
    result = cli(*args)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    # a clean exit, not an exception the runner caught
    assert isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if code == 1:
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: "), lines
    else:  # Click usage error: "Usage: ...", "Try ...", "Error: ..."
        assert lines and lines[-1].startswith("Error: "), result.stderr
    line = lines[-1]
    for text in mentions:
        assert str(text) in line, (text, line)
    assert result.stdout == ""
    for out in outputs:
        assert leftovers(Path(out)) == [], f"{out} left behind"
    for p, d in before.items():
        assert digest(Path(p)) == d, f"{p} was modified"
    return line


# --- real data ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fm(fmnist) -> dict:
    """Fashion-MNIST: 40 trusted records (4 per class) and 200 collected ones."""
    names = [str(c) for c in fmnist["class_names"]]
    y = fmnist["y_train"][:1000].astype(np.int64)
    trusted = np.concatenate([np.flatnonzero(y == c)[:4] for c in range(10)])
    collected = np.setdiff1d(np.arange(1000), trusted)[:200]
    return {"x": fmnist["x_train"][:1000, None], "y": y, "names": names,
            "trusted": trusted, "collected": collected}


def image_table(fm: dict, index: np.ndarray, prefix: str) -> pl.DataFrame:
    return pl.DataFrame({
        "id": [f"{prefix}-{i}" for i in index],
        "label": [fm["names"][v] for v in fm["y"][index]],
        "worker": [f"worker-{i % 5}" for i in index],
        "image": encode_png(fm["x"][index]),
    })


@pytest.fixture
def tables(tmp_path, fm) -> dict:
    """Good collected and trusted tables as Parquet files, and the frames to spoil."""
    collected, trusted = image_table(fm, fm["collected"], "c"), image_table(fm, fm["trusted"], "t")
    paths = {"collected": tmp_path / "collected.parquet", "trusted": tmp_path / "trusted.parquet"}
    collected.write_parquet(paths["collected"])
    trusted.write_parquet(paths["trusted"])
    return {**paths, "collected_df": collected, "trusted_df": trusted, "out": tmp_path / "ds"}


def ingest_args(collected, trusted, out, *extra):
    return ["ingest", collected, "--trusted", trusted, "--label", "label", "--id", "id",
            "--contributor", "worker", "--image", "image", "-o", out, *extra]


def replace_cell(df: pl.DataFrame, column: str, row: int, value) -> pl.DataFrame:
    values = df[column].to_list()
    values[row] = value
    return df.with_columns(pl.Series(column, values, dtype=df.schema[column]))


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory, shared_data) -> dict:
    """A tiny real run on sklearn's digits (8x8), exported to ONNX: for flag/predict errors."""
    path = shared_data / "sklearn_digits" / "digits_8x8.npz"
    if not path.is_file():
        pytest.skip(f"real data set {path} is absent")
    with np.load(path) as d:
        x = (d["x"][:500].astype(np.int64) * 255 // 16).astype(np.uint8)[:, None]
        y = d["y"][:500].astype(np.int64)
    root = tmp_path_factory.mktemp("digits")
    pl.DataFrame({"id": [f"d-{i}" for i in range(500)], "digit": y, "image": encode_png(x),
                  "trusted": np.arange(500) % 5 == 0}).write_parquet(root / "digits.parquet")
    steps = [
        ["ingest", root / "digits.parquet", "--label", "digit", "--id", "id", "--image", "image",
         "--trusted-column", "trusted", "-o", root / "ds", "-q"],
        ["train", root / "ds", "-o", root / "run", "--device", "cpu", "--widths", "8,16", "-q",
         *train_knobs(seed_steps=20, heal_steps=5, train_epochs=0.5, iterations=1,
                      probe_epochs=0.5, probe_steps=5)],
        ["export", root / "run", "-o", root / "model.onnx", "-q"],
    ]
    for args in steps:
        result = cli(*args)
        assert result.exit_code == 0, (args[0], result.stderr, result.exception)
    return {"root": root, "run": root / "run", "model": root / "model.onnx"}


# --- ingest ---------------------------------------------------------------------------------

def test_missing_label_column(tables):
    c, t, out = tables["collected"], tables["trusted"], tables["out"]
    line = expect_failure(
        ["ingest", c, "--trusted", t, "--label", "category", "--id", "id", "--image", "image",
         "-o", out], inputs=[c, t], outputs=[out], mentions=[c, "'category'"])
    assert "available" in line and "label" in line   # the columns that do exist are listed


def test_mixed_image_sizes_in_second_file(tables, tmp_path, shared_data):
    """An 8x8 digit among 28x28 Fashion-MNIST images, at row 5 of the second collected file:
    the error names that file and the row *within* it."""
    with np.load(shared_data / "sklearn_digits" / "digits_8x8.npz") as d:
        digit = (d["x"][:1].astype(np.int64) * 255 // 16).astype(np.uint8)[:, None]
    first, second = tables["collected_df"][:120], tables["collected_df"][120:]
    second = replace_cell(second, "image", 5, encode_png(digit)[0])
    a, b = tmp_path / "part-1.parquet", tmp_path / "part-2.parquet"
    first.write_parquet(a)
    second.write_parquet(b)
    t, out = tables["trusted"], tables["out"]
    expect_failure(["ingest", a, b, "--trusted", t, "--label", "label", "--id", "id",
                    "--image", "image", "-o", out],
                   inputs=[a, b, t], outputs=[out], mentions=[b, "row 5", "column 'image'"])


def breast_cancer_frame(n: int = 120) -> pl.DataFrame:
    sklearn = pytest.importorskip("sklearn.datasets")
    data = sklearn.load_breast_cancer()
    frame = pl.DataFrame(data.data[:n], schema=[str(c) for c in data.feature_names], orient="row")
    return frame.with_columns(
        pl.Series("diagnosis", [str(data.target_names[v]) for v in data.target[:n]]),
        pl.Series("trusted", np.arange(n) % 4 == 0))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_non_finite_feature_in_csv(tmp_path, bad):
    frame = breast_cancer_frame()
    frame = replace_cell(frame, "mean texture", 7, bad)
    path, out = tmp_path / "cancer.csv", tmp_path / "ds"
    frame.write_csv(path)
    expect_failure(["ingest", path, "--label", "diagnosis", "--trusted-column", "trusted", "-o", out],
                   inputs=[path], outputs=[out], mentions=[path, "row 7", "column 'mean texture'"])


def test_unknown_label_in_trusted_set(tables):
    t = tables["trusted"]
    replace_cell(tables["trusted_df"], "label", 3, "Sweater").write_parquet(t)
    c, out = tables["collected"], tables["out"]
    line = expect_failure(ingest_args(c, t, out), inputs=[c, t], outputs=[out],
                          mentions=[t, "row 3", "column 'label'", "'Sweater'"])
    assert str(c) not in line


def test_probability_vector_not_summing_to_one(tables, fm, tmp_path):
    names = fm["names"]

    def soft(df: pl.DataFrame) -> pl.DataFrame:
        vectors = []
        for name in df["label"]:
            v = np.full(10, 0.02)
            v[names.index(name)] = 0.82
            vectors.append(v.tolist())
        return df.with_columns(pl.Series("label", vectors, dtype=pl.List(pl.Float64)))

    collected = soft(tables["collected_df"])
    bad = collected["label"].to_list()
    bad[5] = [0.5, 0.3, 0.1] + [0.0] * 7          # sums to 0.9
    collected = collected.with_columns(pl.Series("label", bad, dtype=pl.List(pl.Float64)))
    c, t, out = tmp_path / "soft.parquet", tmp_path / "soft-trusted.parquet", tables["out"]
    collected.write_parquet(c)
    soft(tables["trusted_df"]).write_parquet(t)
    line = expect_failure(ingest_args(c, t, out, "--classes", ",".join(names)),
                          inputs=[c, t], outputs=[out], mentions=[c, "row 5", "column 'label'"])
    assert "0.9" in line


def test_duplicate_ids(tables):
    c = tables["collected"]
    df = tables["collected_df"]
    replace_cell(df, "id", 10, df["id"][2]).write_parquet(c)
    t, out = tables["trusted"], tables["out"]
    expect_failure(ingest_args(c, t, out), inputs=[c, t], outputs=[out],
                   mentions=[c, "row 10", "column 'id'", repr(df["id"][2]), "row 2"])


def test_trusted_record_with_a_collected_id(tables):
    t = tables["trusted"]
    replace_cell(tables["trusted_df"], "id", 4, tables["collected_df"]["id"][0]).write_parquet(t)
    c, out = tables["collected"], tables["out"]
    expect_failure(ingest_args(c, t, out), inputs=[c, t], outputs=[out],
                   mentions=[t, "row 4", "column 'id'", repr(tables["collected_df"]["id"][0])])


def test_trusted_record_with_collected_content(tables):
    """Same image and label under a fresh id: still the same record."""
    t = tables["trusted"]
    src = tables["collected_df"].row(9, named=True)
    df = tables["trusted_df"]
    for column in ("label", "image"):
        df = replace_cell(df, column, 6, src[column])
    df.write_parquet(t)
    c, out = tables["collected"], tables["out"]
    expect_failure(ingest_args(c, t, out), inputs=[c, t], outputs=[out],
                   mentions=[t, "row 6", repr(src["id"])])


def test_no_trusted_source_is_a_usage_error(tables):
    c, out = tables["collected"], tables["out"]
    expect_failure(["ingest", c, "--label", "label", "--id", "id", "--image", "image", "-o", out],
                   inputs=[c], outputs=[out], code=2, mentions=["--trusted"])


def test_class_without_trusted_record_warns_but_succeeds(tables):
    t = tables["trusted"]
    df = tables["trusted_df"]
    df.filter(pl.col("label") != "Bag").write_parquet(t)
    c, out = tables["collected"], tables["out"]
    before = {**digest(c), **digest(t)}
    result = cli(*ingest_args(c, t, out))
    assert result.exit_code == 0, (result.stderr, result.exception)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "'Bag'" in warnings[0], result.stderr
    assert (out / "manifest.json").is_file()
    assert {**digest(c), **digest(t)} == before


def test_class_skewed_trusted_set_warns_but_succeeds(tables):
    t, df = tables["trusted"], tables["trusted_df"]
    counts = df["label"].value_counts()
    common = counts.sort("count")["label"][-1]
    rare = [c for c in counts["label"] if c != common]
    # keep one record of every other class: the commonest then has more than 3x the rarest's
    df.filter((pl.col("label") == common) | (pl.int_range(pl.len()).over("label") == 0)).write_parquet(t)
    c, out = tables["collected"], tables["out"]
    result = cli(*ingest_args(c, t, out))
    assert result.exit_code == 0, (result.stderr, result.exception)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "class-skewed" in warnings[0] and repr(common) in warnings[0], result.stderr
    assert any(repr(r) in warnings[0] for r in rare)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["warnings"] == [warnings[0].removeprefix("warning: ")]


# --- flag / export / predict ----------------------------------------------------------------

def test_flag_with_two_rules_is_a_usage_error(digits_model, tmp_path):
    run, out = digits_model["run"], tmp_path / "flags.csv"
    expect_failure(["flag", run, "-o", out, "--threshold", "0.5", "--top-k", "10"],
                   inputs=[run], outputs=[out], code=2, mentions=["at most one"])
    expect_failure(["flag", run, "-o", out, "--contamination", "0.1", "--top-k", "10"],
                   inputs=[run], outputs=[out], code=2, mentions=["at most one"])


@pytest.mark.parametrize("command", ["flag", "export"])
def test_run_folder_that_does_not_exist(tmp_path, command):
    run = tmp_path / "no-such-run"
    out = tmp_path / ("flags.csv" if command == "flag" else "model.onnx")
    expect_failure([command, run, "-o", out], inputs=[], outputs=[out, run], code=2,
                   mentions=[run, "does not exist"])


@pytest.mark.parametrize("command", ["flag", "export"])
def test_folder_that_is_not_a_run(tmp_path, command):
    run = tmp_path / "not-a-run"
    run.mkdir()
    (run / "notes.txt").write_text("not a run\n")
    out = tmp_path / ("flags.csv" if command == "flag" else "model.onnx")
    expect_failure([command, run, "-o", out], inputs=[run], outputs=[out], code=1,
                   mentions=[run, "model.pt"])


def test_predict_on_wrong_image_size(digits_model, tables, tmp_path):
    """The digits model takes 8x8 images; a Fashion-MNIST table holds 28x28 ones."""
    model, c, out = digits_model["model"], tables["collected"], tmp_path / "preds.parquet"
    expect_failure(["predict", model, c, "-o", out, "--id", "id"], inputs=[model, c],
                   outputs=[out], mentions=[c, "row 0", "column 'image'"])


def test_predict_on_a_table_without_images(digits_model, tmp_path):
    """A tabular CSV handed to an image model names the file and what was found."""
    path, out = tmp_path / "cancer.csv", tmp_path / "preds.csv"
    breast_cancer_frame(20).write_csv(path)
    expect_failure(["predict", digits_model["model"], path, "-o", out], inputs=[path],
                   outputs=[out], mentions=[path, "image"])


@pytest.mark.parametrize("column", ["[raw]label", "label[/v2]"])
def test_error_names_column_with_brackets_verbatim(tables, column):
    c, t, out = tables["collected"], tables["trusted"], tables["out"]
    expect_failure(["ingest", c, "--trusted", t, "--label", column, "--id", "id", "--image", "image",
                    "-o", out], inputs=[c, t], outputs=[out], mentions=[c, repr(column)])
