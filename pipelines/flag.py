"""``sanitize flag``: turn a run's scores into a per-record report for curators.

One row per collected record, most suspect first: ``rank``, ``id``, ``contributor``,
``given_label``, ``predicted_label``, ``score`` (1 = most likely poisoned), ``score_min`` /
``score_max`` / ``times_rejected`` / ``times_unlearned`` (the record's trajectory over the
iterations; unlearned: rejected and trained away from its label), ``provenance`` /
``provenance_spreads`` / ``shifted`` (the provenance test's score, how many trusted standard
deviations above the trusted records' it lies, and whether it set the record apart),
``held_back`` (kept out of training by the gate of images with few trusted records: a label
the first judge doubted on a record the provenance test puts far out), for text
``planted_word`` (a word far more collected texts carry than the trusted sample explains, which
this record carries; empty otherwise), ``flagged`` and a short ``reason``. A second table
summarises contributors (records, flagged rate, z and p-value against the overall rate). Optionally the collected records are split into a clean and
a quarantined Parquet file (the dataset folder is not touched).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from connectors.atomic import atomic_path
from connectors.dataset_folder import read_dataset
from connectors.reports import write_table
from connectors.run_folder import read_run
from sanitizer.scoring import FlagRule, contributor_summary, flag, rank, reasons


def build_report(run: dict, rule: FlagRule) -> tuple[pl.DataFrame, pl.DataFrame, str]:
    """The report table, the contributor table and a description of the rule applied."""
    s = run["scores"]
    scores = s["score"].to_numpy().astype(np.float64)
    flags = flag(scores, rule)
    classes = run["manifest"]["class_names"]
    index = {c: i for i, c in enumerate(classes)}
    given = np.array([index[c] for c in s["given_label"].to_list()], dtype=np.int64)
    pred = np.array([index[c] for c in s["predicted_label"].to_list()], dtype=np.int64)
    held = s["heldout_agreement"].to_numpy()
    history = np.stack(s["score_history"].to_numpy()) if len(s) else np.zeros((0, 1))
    rejected = np.stack(s["selected_history"].to_numpy()) if len(s) else np.zeros((0, 1), bool)
    unlearned = (np.stack(s["unlearned_history"].to_numpy()) if len(s) and "unlearned_history" in s.columns
                 else np.zeros((len(s), 1), bool))  # runs written before the column existed

    def optional(name: str, fill) -> np.ndarray:
        """A column that runs written before it existed lack: ``fill`` in every row there."""
        return s[name].to_numpy() if name in s.columns else np.full(len(s), fill)

    provenance = optional("provenance", np.float32(np.nan))
    spreads = optional("provenance_spreads", np.float32(np.nan))
    shifted = optional("shifted", False)
    held_back = optional("held_back", False)
    planted = optional("planted_word", "").astype(object)
    report = pl.DataFrame({
        "rank": rank(scores),
        "id": s["id"],
        "contributor": s["contributor"],
        "given_label": s["given_label"],
        "predicted_label": s["predicted_label"],
        "score": s["score"],
        "score_min": history.min(axis=1).astype(np.float32),
        "score_max": history.max(axis=1).astype(np.float32),
        "times_rejected": (~rejected.astype(bool)).sum(axis=1).astype(np.int32),
        "times_unlearned": unlearned.astype(bool).sum(axis=1).astype(np.int32),
        "provenance": provenance.astype(np.float32),
        "provenance_spreads": spreads.astype(np.float32),
        "shifted": shifted.astype(bool),
        "held_back": held_back.astype(bool),
        "planted_word": pl.Series(planted.astype(str), dtype=pl.String),
        "flagged": flags,
        "reason": reasons(flags, given, pred, s["confidence"].to_numpy(), held, classes, shifted, planted,
                          held_back),
    }).sort("rank")
    contributors = s["contributor"].to_numpy()
    summary = pl.DataFrame(contributor_summary(contributors, flags),
                           schema={"contributor": pl.String, "records": pl.Int64, "flagged": pl.Int64,
                                   "flagged_rate": pl.Float64, "z": pl.Float64, "p_value": pl.Float64})
    return report, summary, rule.describe(scores)


def split_records(run: dict, flagged_ids: set[str], folder: str | Path) -> tuple[Path, Path]:
    """Write the collected records of the run's dataset as ``clean.parquet`` and
    ``quarantined.parquet`` (columns as in the dataset folder) into ``folder``."""
    records, _ = read_dataset(run["manifest"]["dataset"])
    records = records.collected
    bad = np.array([i in flagged_ids for i in records.ids.astype(str)], dtype=bool)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, mask in (("clean", ~bad), ("quarantined", bad)):
        part = records.subset(mask)
        data = {"id": part.ids.astype(str),
                "contributor": (part.contributors.astype(object) if part.contributors is not None
                                else [None] * len(part)),
                "label": [part.class_names[c] for c in part.hard_labels],
                "label_probs": part.labels}
        key = "pixels" if part.modality == "image" else "features"
        data[key] = part.features.reshape(len(part), -1)
        path = folder / f"{name}.parquet"
        with atomic_path(path) as tmp:
            pl.DataFrame(data).write_parquet(tmp)
        paths.append(path)
    return paths[0], paths[1]


def flag_run(run_folder: str | Path, output: str | Path | None, *, rule: FlagRule | None = None,
             fmt: str | None = None, contributors_output: str | Path | None = None,
             split: str | Path | None = None) -> dict:
    """Build the report for ``run_folder``, write it to ``output`` (``-`` = stdout) and return a
    summary dict (counts, the rule, the top contributors)."""
    run = read_run(run_folder)
    report, summary, described = build_report(run, rule or FlagRule())
    if output is not None:
        write_table(report, output, fmt)
    if contributors_output is not None:
        write_table(summary, contributors_output)
    split_paths = None
    if split is not None:
        flagged_ids = set(report.filter(pl.col("flagged"))["id"].to_list())
        split_paths = [str(p) for p in split_records(run, flagged_ids, split)]
    return {"records": report.height, "flagged": int(report["flagged"].sum()), "rule": described,
            "contributors": summary.head(5).to_dicts(), "split": split_paths,
            "report": report, "contributor_table": summary}
