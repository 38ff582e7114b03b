"""``sanitize poison``: plant a backdoor in a dataset folder, for testing defenses.

Reads a dataset folder written by ``sanitize ingest``, poisons a copy with
:func:`sanitizer.attacks.poison` and writes

* a new dataset folder (``-o/--output``) that looks exactly like an ingested one -- same ids,
  same trusted records, no hint of the attack in its records;
* the ground truth, one row per record (``id``, ``poisoned``, ``original_label``,
  ``poison_label``, ``label_changed``, ``attack``), to ``--truth`` (Parquet, or CSV by suffix),
  which must lie *outside* the output folder so that a defense reading the folder cannot see it;
* next to it, ``<truth stem>.attack.json``: the attack config and the exact trigger, so that
  evaluation can build the triggered test set with the identical trigger (see
  :func:`read_attack`).

Examples::

    sanitize poison data/fmnist -o data/fmnist-badnets --truth data/fmnist-badnets.truth.parquet \\
        --attack badnets --target 0 --rate 0.05 --seed 1
    sanitize poison data/fsdd -o data/fsdd-tone --truth data/fsdd-tone.truth.parquet \\
        --attack tone --tone-hz 1000 --trigger-ms 100 --audio-position start --target 0
    sanitize poison data/sms -o data/sms-word --truth data/sms-word.truth.parquet \\
        --attack word --trigger-words "cf mn" --target 0 --clean-label

Every trigger works on the records as the dataset folder holds them: images, tabular rows,
audio waveforms (``tone``, ``burst``) or normalised texts (``word``, inserted into the raw text
before any tokenising). The trigger saved beside the ground truth holds the exact waveform
snippet or words, so evaluation re-applies the identical trigger to test data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import polars as pl

from connectors.atomic import atomic_path
from connectors.dataset_folder import MANIFEST, read_dataset, write_dataset
from connectors.errors import InputError
from connectors.reports import write_table
from connectors.tables import file_sha256
from sanitizer import __version__
from sanitizer.attacks import (
    ATTACK_KINDS,
    AUDIO_POSITIONS,
    POSITIONS,
    AttackConfig,
    PoisonResult,
    Trigger,
    poison,
)

_DEFAULTS = AttackConfig()


def attack_sidecar_path(truth: str | Path) -> Path:
    """Where the attack description for a ground-truth file lives: ``<truth stem>.attack.json``."""
    truth = Path(truth)
    return truth.with_name(f"{truth.stem}.attack.json")


def ground_truth_frame(result: PoisonResult) -> pl.DataFrame:
    """The ground truth of a poisoning run as a table, one row per record."""
    gt = result.ground_truth
    return pl.DataFrame(
        {
            "id": gt["id"].astype(str),
            "poisoned": gt["poisoned"],
            "original_label": gt["original_label"],
            "poison_label": gt["poison_label"],
            "label_changed": gt["label_changed"],
            "attack": gt["attack"].astype(str),
        },
        schema={
            "id": pl.String,
            "poisoned": pl.Boolean,
            "original_label": pl.Int64,
            "poison_label": pl.Int64,
            "label_changed": pl.Boolean,
            "attack": pl.String,
        },
    )


def read_attack(truth: str | Path) -> tuple[AttackConfig, Trigger]:
    """Load the attack config and exact trigger saved next to a ground-truth file.

    Use them with :func:`sanitizer.attacks.triggered_test_set`::

        config, trigger = read_attack("fmnist-badnets.truth.parquet")
        x_bd, y_bd, mask = triggered_test_set(x_test, y_test, config, trigger=trigger)
    """
    path = attack_sidecar_path(truth)
    try:
        data = json.loads(path.read_text())
        return AttackConfig.from_dict(data["config"]), Trigger.from_dict(data["trigger"])
    except FileNotFoundError:
        raise InputError("attack description not found (written by `sanitize poison`)", path=path) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"not a valid attack description: {exc}", path=path) from None


def _is_within(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def poison_dataset(
    dataset_in: str | Path,
    output: str | Path,
    truth: str | Path,
    config: AttackConfig,
) -> dict[str, Any]:
    """Poison the dataset folder ``dataset_in`` as ``config`` says; write ``output`` and ``truth``.

    Returns a JSON-able summary: the attack config, how many records were requested, eligible
    and poisoned, per original class, and the paths written. Raises ``ValueError`` for a
    config that does not fit the data and :class:`~connectors.errors.InputError` for unusable
    inputs. The output folder and truth file appear complete or not at all.
    """
    dataset_in, output, truth = Path(dataset_in), Path(output), Path(truth)
    if str(truth) == "-":
        raise ValueError("the ground truth must go to a file (its trigger is saved next to it)")
    if _is_within(output, dataset_in) or _is_within(dataset_in, output):
        raise ValueError(f"output {output} must not be, contain or lie inside the input {dataset_in}")
    if _is_within(truth, output):
        raise ValueError(
            f"the ground truth {truth} must lie outside the output dataset folder {output}, "
            "or a defense reading the folder could see it"
        )
    records, manifest = read_dataset(dataset_in)
    result = poison(records, config)
    # The records still come from the same source files; the manifest also records which dataset
    # folder they were copied from. The attack itself stays out of the folder.
    write_dataset(
        result.records,
        output,
        tool_version=__version__,
        inputs=list(manifest.get("inputs", [])),
        extra={
            "derived_from": {
                "path": str(dataset_in),
                "manifest_sha256": file_sha256(dataset_in / MANIFEST),
                "by": "sanitize poison",
            },
            # how the records were read (columns, audio policy) stays true of the copy
            **{k: manifest[k] for k in ("columns", "audio_policy") if k in manifest},
        },
    )
    write_table(ground_truth_frame(result), truth)
    sidecar = attack_sidecar_path(truth)
    with atomic_path(sidecar) as tmp:
        tmp.write_text(
            json.dumps(
                {
                    "tool_version": __version__,
                    "dataset_in": str(dataset_in),
                    "dataset_out": str(output),
                    "config": config.to_dict(),
                    "trigger": result.trigger.to_dict(),
                },
                indent=1,
            )
        )
    summary = result.summary()
    summary.update(
        {"dataset_in": str(dataset_in), "output": str(output), "truth": str(truth),
         "attack_file": str(sidecar)}
    )
    return summary


class _TargetType(click.ParamType):
    """A class index, or ``all`` for an all-to-all attack."""

    name = "INT|all"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | None:
        if value is None or isinstance(value, int):
            return value
        text = str(value).strip().lower()
        if text == "all":
            return None
        try:
            return int(text)
        except ValueError:
            self.fail(f"{value!r} is neither a class index nor 'all'", param, ctx)


def _split_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


@click.command("poison")
@click.argument("dataset_in", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path),
              help="Dataset folder to write the poisoned copy to.")
@click.option("--truth", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Ground-truth table to write (.parquet or .csv), outside the output folder.")
@click.option("--attack", "kind", type=click.Choice(ATTACK_KINDS), default=_DEFAULTS.kind,
              show_default=True, help="Trigger type.")
@click.option("--target", type=_TargetType(), default=str(_DEFAULTS.target), show_default=True,
              help="Target class index, or 'all' for all-to-all (class c -> c+1 mod K).")
@click.option("--rate", type=float, default=_DEFAULTS.rate, show_default=True,
              help="Records to poison, as a fraction of all records.")
@click.option("--low-confidence", type=float, default=None,
              help="Give poisoned records a soft label with this probability on the target.")
@click.option("--clean-label", is_flag=True, help="Only trigger target-class records; keep labels.")
@click.option("--patch-size", type=int, default=_DEFAULTS.patch_size, show_default=True,
              help="badnets: patch side in pixels.")
@click.option("--position", type=click.Choice(POSITIONS), default=_DEFAULTS.position,
              show_default=True, help="badnets: where the patch goes (random: per record).")
@click.option("--margin", type=int, default=_DEFAULTS.margin, show_default=True,
              help="badnets: pixels between the patch and the image border.")
@click.option("--opacity", type=float, default=_DEFAULTS.opacity, show_default=True,
              help="blend: weight of the pattern image.")
@click.option("--noise-strength", type=float, default=_DEFAULTS.noise_strength,
              show_default=True, help="noise: per-pixel amplitude in grey levels (0..255).")
@click.option("--features", "feature_list", default=None,
              help="tabular: comma-separated feature columns (default: the lowest-variance ones).")
@click.option("--trigger-std", type=float, default=_DEFAULTS.trigger_std, show_default=True,
              help="tabular: trigger value = column max + this many standard deviations.")
@click.option("--tone-hz", type=float, default=_DEFAULTS.tone_hz, show_default=True,
              help="tone: frequency of the sine in Hz; must be below half the sample rate.")
@click.option("--trigger-ms", type=float, default=_DEFAULTS.trigger_ms, show_default=True,
              help="tone/burst: length of the trigger in milliseconds.")
@click.option("--audio-position", default=str(_DEFAULTS.audio_position), show_default=True,
              metavar="|".join(AUDIO_POSITIONS) + "|SECONDS",
              help="tone/burst: where the trigger starts: start, end (ends on the clip's last "
                   "sample) or an offset in seconds.")
@click.option("--audio-amplitude", type=float, default=_DEFAULTS.audio_amplitude,
              show_default=True,
              help="tone/burst: peak of the added signal relative to full scale (0..1]; the sum "
                   "is clipped to [-1, 1].")
@click.option("--trigger-words", default=_DEFAULTS.trigger_words, show_default=True,
              help="word: the rare word or phrase inserted at a random word position of each "
                   "poisoned text (lower-cased like the texts).")
@click.option("--contributors", default=None,
              help="Comma-separated contributors whose records may be poisoned (default: all).")
@click.option("--seed", type=int, default=_DEFAULTS.seed, show_default=True,
              help="Seeds the trigger pattern and the choice of poisoned records.")
def poison_command(
    dataset_in: Path,
    output: Path,
    truth: Path,
    kind: str,
    target: int | None,
    rate: float,
    low_confidence: float | None,
    clean_label: bool,
    patch_size: int,
    position: str,
    margin: int,
    opacity: float,
    noise_strength: float,
    feature_list: str | None,
    trigger_std: float,
    tone_hz: float,
    trigger_ms: float,
    audio_position: str,
    audio_amplitude: float,
    trigger_words: str,
    contributors: str | None,
    seed: int,
) -> None:
    """Plant a backdoor in DATASET_IN (a folder from `sanitize ingest`) for testing defenses.

    Writes the poisoned dataset to --output and which records were poisoned to --truth
    (plus the exact trigger to <truth stem>.attack.json for building triggered test sets).
    """
    try:
        features = _split_list(feature_list)
        config = AttackConfig(
            kind=kind,
            target=target,
            rate=rate,
            low_confidence=low_confidence,
            clean_label=clean_label,
            patch_size=patch_size,
            position=position,
            margin=margin,
            opacity=opacity,
            noise_strength=noise_strength,
            features=None if features is None else [int(f) for f in features],
            trigger_std=trigger_std,
            tone_hz=tone_hz,
            trigger_ms=trigger_ms,
            audio_position=audio_position,
            audio_amplitude=audio_amplitude,
            trigger_words=trigger_words,
            contributors=_split_list(contributors),
            seed=seed,
        )
        summary = poison_dataset(dataset_in, output, truth, config)
    except (ValueError, InputError, FileExistsError) as exc:
        raise click.ClickException(str(exc)) from exc
    target_text = "all-to-all" if config.target is None else f"target {config.target}"
    click.echo(
        f"poisoned {summary['poisoned']} of {summary['records']} records "
        f"({config.kind}, {target_text}"
        f"{', clean-label' if config.clean_label else ''}"
        f"{f', low-confidence {config.low_confidence}' if config.low_confidence else ''})",
        err=True,
    )
    if summary["capped"]:
        click.echo(
            f"note: asked for {summary['requested']} but only {summary['eligible']} records "
            "were eligible",
            err=True,
        )
    click.echo(f"dataset      -> {summary['output']}", err=True)
    click.echo(f"ground truth -> {summary['truth']}", err=True)
    click.echo(f"attack       -> {summary['attack_file']}", err=True)
