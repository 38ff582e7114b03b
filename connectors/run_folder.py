"""The run folder that ``sanitize train`` writes and ``flag``/``export`` read.

===================  ==========================================================================
file                 what it holds
===================  ==========================================================================
``model.pt``         the served network's ``state_dict``; load with
                     ``torch.load(..., weights_only=True)``: plain tensors, no pickled code
``network.json``     the :class:`~sanitizer.networks.NetworkSpec` to rebuild the network
``config.json``      the :class:`~sanitizer.heal_and_select.HealSelectConfig` used
``scores.parquet``   one row per collected record: ``id``, ``contributor``, ``given_label``,
                     ``predicted_label``, ``confidence`` (of the prediction), ``score``
                     (suspicion, 1 = most likely poisoned), ``heldout_agreement``,
                     ``score_history`` (suspicion at each scoring, list) and
                     ``selected_history`` (accepted in each iteration, list),
                     ``unlearned_history`` (rejected and unlearned in each iteration, list),
                     ``provenance`` (the provenance test's P(collected), NaN when off),
                     ``provenance_spreads`` (its log-odds above the trusted records', in their
                     standard deviations; NaN when off) and
                     ``shifted`` (set apart by it: never accepted)
``metrics.json``     timings and training figures
``run.json``         the run manifest: tool and library versions, seed, argv, device, the
                     dataset folder and the hashes of its inputs, class names
``tokenizer.json``   text runs only: the tokenizer built from the data
                     (:class:`connectors.text_tokens.TextTokenizer`), needed to serve the model
===================  ==========================================================================

The folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import torch

from connectors.atomic import atomic_path
from connectors.errors import InputError

FILES = ("model.pt", "network.json", "config.json", "scores.parquet", "metrics.json", "run.json")


def write_run(folder: str | Path, *, state_dict: dict, network: dict, config: dict,
              scores: pl.DataFrame, metrics: dict, manifest: dict,
              tokenizer: dict | None = None) -> Path:
    """Write a complete run folder atomically; returns its path."""
    folder = Path(folder)
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, tmp / "model.pt")
        for name, obj in (("network.json", network), ("config.json", config),
                          ("metrics.json", metrics), ("run.json", manifest)):
            (tmp / name).write_text(json.dumps(obj, indent=2, default=str) + "\n")
        if tokenizer is not None:
            (tmp / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False) + "\n")
        scores.write_parquet(tmp / "scores.parquet")
    return folder


def read_run(folder: str | Path) -> dict[str, Any]:
    """Read a run folder: a dict with ``state_dict``, ``network``, ``config``, ``scores``
    (a polars DataFrame), ``metrics``, ``manifest`` and ``tokenizer`` (a dict, or ``None``
    unless the run is on text)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("no such run folder (write one with 'sanitize train')", path=folder)
    missing = [f for f in FILES if not (folder / f).exists()]
    if missing:
        raise InputError(f"not a complete run folder: missing {', '.join(missing)}", path=folder)

    def load_json(name: str) -> dict:
        try:
            return json.loads((folder / name).read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"unreadable JSON: {e}", path=folder / name) from None

    return {
        "state_dict": torch.load(folder / "model.pt", map_location="cpu", weights_only=True),
        "network": load_json("network.json"),
        "config": load_json("config.json"),
        "scores": pl.read_parquet(folder / "scores.parquet"),
        "metrics": load_json("metrics.json"),
        "manifest": load_json("run.json"),
        "tokenizer": load_json("tokenizer.json") if (folder / "tokenizer.json").exists() else None,
    }
