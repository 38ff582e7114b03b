"""``sanitize demo``: the whole job end to end on the bundled Fashion-MNIST subset.

ingest -> poison (a BadNets patch planted in three workers' records, so the ground truth is
known) -> train (heal-and-select) -> flag -> export (ONNX) -> predict (onnxruntime on the
bundled test split) -> a short summary: records, flagged, how many poisoned records were caught,
the most suspicious workers, clean accuracy and attack success rate of the served model.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np
from rich.table import Table

from connectors.dataset_folder import read_dataset
from connectors.reports import read_table
from connectors.table_records import read_records
from pipelines.console import StageProgress, err
from pipelines.export import export_run, predict
from pipelines.flag import flag_run
from pipelines.ingest import ingest
from pipelines.poison import poison_dataset, read_attack
from pipelines.train import train
from sanitizer.attacks import AttackConfig, triggered_test_set
from sanitizer.heal_and_select import HealSelectConfig
from sanitizer.metrics import attack_success_rate, detection_report
from sanitizer.onnx_export import run_onnx, session

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "data"
POISONED_WORKERS = ["worker-03", "worker-11", "worker-17"]


def run_demo(workdir: Path, data: Path = EXAMPLES, seed: int = 0, quiet: bool = False) -> dict:
    """Run every step into ``workdir``; return the figures the summary prints."""
    workdir.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    t = time.perf_counter()
    ingest(data / "fashion_mnist_demo.parquet", workdir / "dataset", label="label", id="id",
           contributor="worker", image="image", trusted_column="trusted")
    times["ingest"] = time.perf_counter() - t
    truth_path = workdir / "truth.parquet"
    attack = AttackConfig(kind="badnets", target=0, rate=0.1, contributors=POISONED_WORKERS, seed=seed)
    t = time.perf_counter()
    poison_dataset(workdir / "dataset", workdir / "poisoned", truth_path, attack)
    times["poison"] = time.perf_counter() - t
    t = time.perf_counter()
    with StageProgress(quiet) as progress:
        summary = train(workdir / "poisoned", workdir / "run", HealSelectConfig(seed=seed), progress)
    times["train"] = time.perf_counter() - t
    t = time.perf_counter()
    flags = flag_run(workdir / "run", workdir / "flags.csv", contributors_output=workdir / "contributors.csv")
    times["flag"] = time.perf_counter() - t
    t = time.perf_counter()
    export = export_run(workdir / "run", workdir / "model.onnx")
    times["export"] = time.perf_counter() - t
    t = time.perf_counter()
    test_file = data / "fashion_mnist_demo_test.parquet"
    preds, _ = predict(workdir / "model.onnx", test_file, workdir / "predictions.parquet", id="id")
    times["predict"] = time.perf_counter() - t

    test = read_records(test_file, label="label", id="id", image="image")
    records, _ = read_dataset(workdir / "dataset")
    names = records.class_names
    truth_labels = np.asarray(test.class_names)[test.hard_labels]
    accuracy = float((preds["predicted_label"].to_numpy().astype(str) == truth_labels).mean())
    config, trigger = read_attack(truth_path)
    y_test = np.array([names.index(c) for c in truth_labels])
    x_bd, y_bd, _ = triggered_test_set(test.features, y_test, config, trigger=trigger)
    asr = attack_success_rate(run_onnx(session(str(workdir / "model.onnx")), x_bd.astype(np.float32)).argmax(1), y_bd)
    truth = read_table(truth_path)
    report = flags["report"].join(truth.select("id", "poisoned"), on="id", how="left")
    det = detection_report(report["score"].to_numpy(), report["flagged"].to_numpy(),
                           report["poisoned"].to_numpy())
    return {"records": flags["records"], "trusted": summary["trusted"], "flagged": flags["flagged"],
            "poisoned": int(truth["poisoned"].sum()), "caught": int(det["tp"]), "auroc": det["auroc"],
            "precision": det["precision"], "recall": det["recall"],
            "contributors": flags["contributors"], "clean_accuracy": accuracy, "asr": asr,
            "onnx_max_diff": export["max_abs_diff"], "times_s": times, "workdir": str(workdir)}


def print_summary(r: dict) -> None:
    table = Table(title="sanitize demo: Fashion-MNIST subset, BadNets backdoor in 3 workers' uploads",
                  show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("records", f"{r['records']} collected + {r['trusted']} trusted")
    table.add_row("flagged", f"{r['flagged']} (caught {r['caught']} of {r['poisoned']} poisoned; "
                  f"precision {r['precision']:.2f}, recall {r['recall']:.2f}, AUROC {r['auroc']:.3f})")
    table.add_row("top contributors", ", ".join(
        f"{c['contributor']} {c['flagged']}/{c['records']} flagged" for c in r["contributors"][:3]))
    table.add_row("served model", f"clean accuracy {r['clean_accuracy']:.1%}, attack success rate "
                  f"{r['asr']:.1%} (ONNX vs PyTorch max |diff| {r['onnx_max_diff']:.1e})")
    table.add_row("time", ", ".join(f"{k} {v:.1f}s" for k, v in r["times_s"].items()))
    w = r["workdir"]
    table.add_row("files", f"{w}/flags.csv, {w}/contributors.csv, {w}/model.onnx, {w}/predictions.parquet")
    err.print(table)


@click.command("demo")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("sanitize-demo"),
              show_default=True, help="Where the demo writes its dataset, run, report and model.")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=EXAMPLES,
              show_default=True, help="Folder with fashion_mnist_demo.parquet and fashion_mnist_demo_test.parquet.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON line on stdout.")
@click.option("-q", "--quiet", is_flag=True)
def demo_command(workdir, data, seed, as_json, quiet):
    """Run ingest, poison, train, flag, export and predict on the bundled data and summarise."""
    result = run_demo(workdir, data, seed, quiet)
    if as_json:
        import json
        click.echo(json.dumps(result, default=float))
    if not quiet:
        print_summary(result)
