"""``sanitize train``: run heal-and-select on a dataset folder and write a run folder
(layout in :mod:`connectors.run_folder`).

Text datasets hold normalised texts; training first fits a :class:`TextTokenizer` on all of
them (collected and trusted: the vocabulary is not a label, and a trigger word the attacker
planted must have an id of its own to be unlearned), encodes them as token ids and stores the
tokenizer in the run, so that serving applies exactly the same one."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import numpy as np
import polars as pl
import torch

from connectors.dataset_folder import read_dataset
from connectors.run_folder import write_run
from connectors.text_tokens import TextTokenizer
from sanitizer import __version__
from sanitizer.heal_and_select import HealSelectConfig, HealSelectResult, heal_and_select
from sanitizer.records import Records
from sanitizer.training import pick_device


def scores_frame(records: Records, result: HealSelectResult,
                 tokenizer: TextTokenizer | None = None) -> pl.DataFrame:
    """One row per collected record: the report's raw material. For text (``tokenizer``), the
    planted word a record carries, if any (``""`` otherwise)."""
    idx = result.collected_index
    names = np.asarray(records.class_names, dtype=object)
    contributors = records.contributors[idx] if records.contributors is not None else None
    n = len(idx)
    planted = ([tokenizer.describe(t) if t else "" for t in result.planted_token.tolist()]
               if tokenizer is not None else [""] * n)
    return pl.DataFrame({
        "id": records.ids[idx].astype(str),
        "contributor": (pl.Series(contributors.astype(object), dtype=pl.String)
                        if contributors is not None else pl.Series([None] * n, dtype=pl.String)),
        "given_label": names[records.hard_labels[idx]].astype(str),
        "label_confidence": records.labels[idx].max(axis=1),
        "predicted_label": names[result.served_probs.argmax(1)].astype(str),
        "confidence": result.served_probs.max(1),
        "score": result.scores.astype(np.float32),
        "heldout_agreement": result.heldout_agreement.astype(np.float32),
        "score_history": result.score_history.T.astype(np.float32),
        "selected_history": result.selected_history.T,
        "unlearned_history": result.unlearned_history.T,
        "provenance": result.provenance.astype(np.float32),
        "provenance_spreads": result.provenance_spreads.astype(np.float32),
        "shifted": result.shifted,
        "held_back": result.held_back,
        "planted_word": pl.Series(planted, dtype=pl.String),
    })


def tokenize(records: Records, max_tokens: int = 256) -> tuple[Records, TextTokenizer]:
    """Text records as token ids, with the tokenizer fitted on their texts: the first
    ``max_tokens`` ids for the network, and each whole text's distinct ids as ``token_sets``
    for the engine's word count."""
    tokenizer = TextTokenizer.fit(records.features, max_tokens=max_tokens)
    ids = tokenizer.encode(records.features)
    return records.with_features(ids, vocabulary_size=tokenizer.vocabulary_size,
                                 token_sets=tokenizer.distinct_ids(records.features)), tokenizer


def train(dataset: str | Path, output: str | Path, config: HealSelectConfig | None = None,
          progress=None, argv: list[str] | None = None, max_tokens: int = 256) -> dict:
    """Train on the dataset folder ``dataset``; write the run folder ``output``; return a summary.
    ``max_tokens``: text only, the longest token sequence the model reads (longer texts are
    truncated, see :class:`TextTokenizer`)."""
    config = config or HealSelectConfig()
    records, ds_manifest = read_dataset(dataset)
    tokenizer = None
    if records.modality == "text":
        records, tokenizer = tokenize(records, max_tokens)
    result = heal_and_select(records, config, progress)
    manifest = {
        "tool_version": __version__,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "numpy": np.__version__, "polars": pl.__version__},
        "device": str(pick_device(config.device)),
        "seed": config.seed,
        "argv": argv if argv is not None else sys.argv,
        "dataset": str(Path(dataset).resolve()),
        "dataset_inputs": ds_manifest.get("inputs", []),
        "class_names": records.class_names,
        "modality": records.modality,
        "input_shape": list(records.input_shape),
        "sample_rate": records.sample_rate,
        "audio_policy": ds_manifest.get("audio_policy"),
        "feature_names": records.feature_names,
        "records": {"collected": int((~records.trusted).sum()), "trusted": int(records.trusted.sum())},
    }
    metrics = {**result.metrics, "timings_s": result.timings}
    if tokenizer is not None:  # the provenance test's planted-word suspects, as words
        metrics["planted_words"] = [tokenizer.describe(t) for t in metrics["planted_tokens"]]
    write_run(output, state_dict=result.model.state_dict(), network=result.spec.to_dict(),
              config=config.to_dict(), scores=scores_frame(records, result, tokenizer), metrics=metrics,
              manifest=manifest, tokenizer=None if tokenizer is None else tokenizer.to_dict())
    return {"output": str(output), **manifest["records"], **metrics}
