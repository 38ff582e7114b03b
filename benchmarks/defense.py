"""Defense benchmark: data set x attack x poison rate x healing-set size, methods side by side.

    python benchmarks/defense.py --config small          # CPU, minutes: Fashion-MNIST subset
    python benchmarks/defense.py --config small-tiny-heal  # the same with a 0.5% healing set
    python benchmarks/defense.py --config small-cifar    # CPU, ~40 min: CIFAR-10 subset (10k), 2% healing set
    python benchmarks/defense.py --config audio-text     # CPU, minutes: spoken digits, SMS, complaints
    python benchmarks/defense.py --config full           # GPU: Fashion-MNIST 60k + CIFAR-10 subset
    python benchmarks/defense.py --config audio-text --trusted-sampling random  # random, not balanced, trusted sets
    python benchmarks/defense.py --config audio-text --datasets sms_spam --trusted 0.014  # 31 vetted per class
    python benchmarks/defense.py --config small --save-scores out/scores  # also each case's scores + truth

Methods, each on the same poisoned records in the same run:

* ``none``    -- plain training on every record (no defense);
* ``oracle``  -- plain training on the truly clean records only (the ground truth is used);
* ``hasnets`` -- ``sanitizer.heal_and_select`` with the defaults the product ships;
* ``provenance`` -- the provenance test alone (only with ``--methods``; the engine uses it as
  a gate): ``sanitizer.provenance`` ranks collected records by how well a cross-fitted
  classifier tells them from trusted ones, flags those above every held-out trusted record,
  and plain training runs on the rest;
* peers, when their packages are installed (``pip install '.[peers]'``) and ``--peers`` is
  given: see ``benchmarks/peers.py``.

Measured: clean test accuracy, attack success rate (ASR: share of triggered test records of
other classes classified as the target), detection AUROC and precision / recall / F1 of the flags
at the default threshold, how many collected records were flagged, wall time. Each modality
also runs ``clean`` (nothing poisoned): its flags are false alarms and its accuracy against
plain training is what the defense costs data that holds no backdoor. A Markdown table (with machine, commit and command) goes to stdout; with ``--write`` also into
``benchmarks/RESULTS.md`` between markers and, machine-readable, ``benchmarks/results-<config>.json``.

Data comes from ``../shared/data`` (see its README); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.audio_files import read_audio_records  # noqa: E402
from connectors.table_records import read_records  # noqa: E402
from pipelines.train import tokenize  # noqa: E402
from sanitizer.attacks import AttackConfig, poison, triggered_test_set  # noqa: E402
from sanitizer.heal_and_select import HealSelectConfig, first_pass_folds, heal_and_select  # noqa: E402
from sanitizer.metrics import accuracy, attack_success_rate, detection_report  # noqa: E402
from sanitizer.plain_training import train_plain  # noqa: E402
from sanitizer.records import Records, one_hot  # noqa: E402
from sanitizer.provenance import beyond_trusted, provenance_scores  # noqa: E402
from sanitizer.scoring import flag  # noqa: E402
from sanitizer.training import pick_device, predict_proba, resident  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"

# "clean": nothing poisoned -- what the defense costs a data set that holds no backdoor (its
# flags are all false alarms; no ASR, no oracle, which would be plain training again)
IMAGE_ATTACKS = {
    "clean": None,
    "badnets": dict(kind="badnets"),
    "badnets-all2all": dict(kind="badnets", target=None),
    "blend": dict(kind="blend"),
    "noise": dict(kind="noise"),
    "badnets-lowconf": dict(kind="badnets", low_confidence=0.64),
    "blend-lowconf": dict(kind="blend", low_confidence=0.64),
    "badnets-cleanlabel": dict(kind="badnets", clean_label=True),
}
AUDIO_ATTACKS = {
    "clean": None,
    "tone": dict(kind="tone"),
    "burst": dict(kind="burst"),
    "tone-all2all": dict(kind="tone", target=None),
    "tone-lowconf": dict(kind="tone", low_confidence=0.64),
    "tone-cleanlabel": dict(kind="tone", clean_label=True),
}
TEXT_ATTACKS = {
    "clean": None,
    "word": dict(kind="word"),
    "word-all2all": dict(kind="word", target=None),
    "word-lowconf": dict(kind="word", low_confidence=0.64),
    "word-cleanlabel": dict(kind="word", clean_label=True),
}
ATTACKS = {"image": IMAGE_ATTACKS, "audio": AUDIO_ATTACKS, "text": TEXT_ATTACKS}
MODALITY = {"fashion_mnist": "image", "cifar10": "image", "fsdd": "audio", "sms_spam": "text",
            "cfpb": "text"}

CONFIGS = {
    "small": dict(datasets={"fashion_mnist": 10000}, test=2000, rates=[0.1], trusted=[0.02],
                  epochs=8.0),
    "small-tiny-heal": dict(datasets={"fashion_mnist": 10000}, test=2000, rates=[0.1], trusted=[0.005],
                            epochs=8.0),
    "small-cifar": dict(datasets={"cifar10": 10000}, test=None, rates=[0.1], trusted=[0.02], epochs=8.0),
    "audio-text": dict(datasets={"fsdd": None, "sms_spam": None, "cfpb": None}, test=None,
                       rates=[0.1], trusted=[0.05], epochs=8.0),
    "full": dict(datasets={"fashion_mnist": 60000, "cifar10": 10000}, test=None, rates=[0.1],
                 trusted=[0.02, 0.005], epochs=8.0),
}


@dataclass
class Split:
    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    modality: str = "image"
    sample_rate: int | None = None


def _split_records(records: Records, test: np.ndarray) -> Split:
    y = records.hard_labels.astype(np.int64)
    return Split(records.features[~test], y[~test], records.features[test], y[test],
                 records.class_names, records.modality, records.sample_rate)


def load(name: str, n: int | None, n_test: int | None, seed: int) -> Split:
    """A data set as train/test arrays: FSDD with its official split (recordings 0-4 are the
    test set), the text sets with a seeded 80/20 split, images with their own test sets."""
    rng = np.random.default_rng(seed)
    if name == "fsdd":
        records, _, _ = read_audio_records(SHARED / "fsdd" / "wav")
        index = np.array([int(Path(i).stem.rsplit("_", 1)[1]) for i in records.ids])
        return _split_records(records, index < 5)
    if name in ("sms_spam", "cfpb"):
        path, label, text = {"sms_spam": ("sms_spam/sms_spam.csv", "label", "text"),
                             "cfpb": ("cfpb_complaints/cfpb_sample_b.csv", "product", "narrative")}[name]
        records = read_records(SHARED / path, label=label, text=text)
        return _split_records(records, rng.random(len(records)) < 0.2)
    if name == "fashion_mnist":
        d = np.load(SHARED / "fashion_mnist" / "fashion_mnist.npz")
        x, xt = d["x_train"][:, None], d["x_test"][:, None]
    elif name == "cifar10":
        d = np.load(SHARED / "cifar10" / "cifar10_subset.npz")
        x, xt = d["x_train"].transpose(0, 3, 1, 2), d["x_test"].transpose(0, 3, 1, 2)
    else:
        raise SystemExit(f"unknown data set {name}")
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(x))[:n]
    pick_t = rng.permutation(len(xt))[:n_test] if n_test else np.arange(len(xt))
    return Split(np.ascontiguousarray(x[pick]), d["y_train"][pick].astype(np.int64),
                 np.ascontiguousarray(xt[pick_t]), d["y_test"][pick_t].astype(np.int64),
                 [str(c) for c in d["class_names"]])


def make_records(s: Split, trusted_share: float, seed: int, sampling: str = "balanced") -> Records:
    """A trusted split of ``trusted_share`` of the records: class-balanced (the same number of
    each class, as curators who vet N records per class get) or a random sample (the class mix
    of the data, as curators who vet whatever comes get)."""
    rng = np.random.default_rng(seed + 1)
    k = len(s.class_names)
    trusted = np.zeros(len(s.y), bool)
    if sampling == "random":
        trusted[rng.permutation(len(s.y))[:max(1, int(round(trusted_share * len(s.y))))]] = True
    else:
        per_class = max(1, int(round(trusted_share * len(s.y) / k)))
        for c in range(k):
            trusted[rng.permutation(np.flatnonzero(s.y == c))[:per_class]] = True
    return Records(s.x, one_hot(s.y, k), np.array([f"r{i}" for i in range(len(s.y))], dtype=object),
                   trusted, s.class_names, s.modality, sample_rate=s.sample_rate)


def model_inputs(records: Records):
    """What the networks take, and the same transform for test inputs: texts become token ids
    with a tokenizer fitted on the (poisoned) training texts, as ``sanitize train`` does."""
    if records.modality != "text":
        return records, lambda x: x
    encoded, tokenizer = tokenize(records)
    return encoded, tokenizer.encode


def evaluate(model: torch.nn.Module, s: Split, result, encode) -> tuple[float, float]:
    dev = torch.device("cpu")
    pred = predict_proba(model, resident(encode(s.x_test), dev)).argmax(1).numpy()
    if result is None:  # nothing poisoned, no trigger to test
        return accuracy(pred, s.y_test), float("nan")
    x_bd, y_bd, _ = triggered_test_set(s.x_test, s.y_test, result)
    pred_bd = predict_proba(model, resident(encode(x_bd), dev)).argmax(1).numpy()
    return accuracy(pred, s.y_test), attack_success_rate(pred_bd, y_bd)


def run_case(s: Split, attack: str, rate: float, trusted_share: float, epochs: float, seed: int,
             methods: list[str], device: str, engine: dict | None = None,
             sampling: str = "balanced", save_scores: Path | None = None) -> list[dict]:
    records = make_records(s, trusted_share, seed, sampling)
    attack_spec = ATTACKS[s.modality][attack]
    if attack_spec is None:
        result, rate, poisoned = None, 0.0, np.zeros(len(records), dtype=bool)
        methods = [m for m in methods if m != "oracle"]
    else:
        result = poison(records, AttackConfig(**attack_spec, rate=rate, seed=seed))
        poisoned = result.poisoned
    train_records, encode = model_inputs(result.records if result is not None else records)
    rows = []
    base = dict(attack=attack, rate=rate, trusted_share=trusted_share,
                records=len(records), poisoned=int(poisoned.sum()), trusted=int(records.trusted.sum()),
                collected=int((~records.trusted).sum()))
    for method in methods:
        t0 = time.perf_counter()
        row = dict(base, method=method)
        if method == "none":
            model, _ = train_plain(train_records, epochs=epochs, seed=seed, device=device)
        elif method == "oracle":
            model, _ = train_plain(train_records.subset(~poisoned), epochs=epochs, seed=seed, device=device)
        elif method == "hasnets":
            res = heal_and_select(train_records, HealSelectConfig(seed=seed, device=device, **(engine or {})))
            model = res.model
            truth = poisoned[res.collected_index]
            flags = flag(res.scores)
            det = detection_report(res.scores, flags, truth)
            row.update(auroc=det["auroc"], precision=det["precision"], recall=det["recall"], f1=det["f1"],
                       flagged=int(flags.sum()))
            if save_scores is not None:  # for trying flag rules offline: scores and the truth
                save_scores.mkdir(parents=True, exist_ok=True)
                np.savez_compressed(save_scores / f"{attack}-{rate}-{trusted_share}-seed{seed}.npz",
                                    scores=res.scores, poisoned=truth, score_history=res.score_history,
                                    selected_history=res.selected_history,
                                    unlearned_history=res.unlearned_history, probs=res.probs,
                                    labels=train_records.labels[res.collected_index],
                                    true_labels=records.labels[res.collected_index],
                                    heldout_agreement=res.heldout_agreement,
                                    provenance=res.provenance, spreads=res.provenance_spreads,
                                    shifted=res.shifted,
                                    shifted_classes=np.array(res.metrics["shifted_classes"], dtype=str))
            if not truth.any():  # every flag is a false alarm: only their number means anything
                row.update(auroc=None, precision=None, recall=None, f1=None)
        elif method == "provenance":  # the provenance test alone: see sanitizer/provenance.py
            from benchmarks.peers import retrain_without_flagged
            scores, trusted_scores = provenance_scores(  # the engine's first pass, its folds too
                train_records, folds=first_pass_folds(train_records, HealSelectConfig()), seed=seed,
                device=device)
            model, det = retrain_without_flagged(train_records, scores, beyond_trusted(scores, trusted_scores),
                                                 poisoned, epochs=epochs, seed=seed, device=device)
            row.update(det)
            if not poisoned.any():
                row.update(auroc=None, precision=None, recall=None, f1=None)
        else:
            from benchmarks.peers import run_peer
            model, det = run_peer(method, train_records, poisoned, epochs=epochs, seed=seed, device=device)
            row.update(det)
        row["seconds"] = time.perf_counter() - t0
        row["clean_accuracy"], row["asr"] = evaluate(model, s, result, encode)
        rows.append(row)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
              file=sys.stderr, flush=True)
    return rows


def machine() -> str:
    """The device, named as the speed benchmark names it: the CPU model too, since CPU tables
    differ from host to host (the 0.5% rows moved by up to 15 points of ASR between an Intel
    and an AMD host at one commit: RESULTS.md, session 23)."""
    from benchmarks.speed import machine as named
    return named(pick_device("auto"))


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "sanitizer",
                                "benchmarks/defense.py"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.strip()
        return head + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def fmt(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def table(rows: list[dict], command: str, config: str) -> str:
    lines = [f"### Defense benchmark, `{config}` configuration",
             "", f"Machine: {machine()}. Commit: `{commit()}`. Command: `{command}`.", "",
             "| data | attack | poison | trusted | method | clean acc | ASR | AUROC | precision | recall | F1 | flagged | time s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| " + " | ".join([
            r["data"], r["attack"], f"{r['rate']:.0%}", f"{r['trusted_share']:.1%}", r["method"],
            fmt(r["clean_accuracy"]), fmt(r["asr"]), fmt(r.get("auroc")), fmt(r.get("precision")),
            fmt(r.get("recall")), fmt(r.get("f1")),
            f"{r['flagged']} / {r['collected']}" if "flagged" in r else "—", f"{r['seconds']:.1f}"]) + " |")
    return "\n".join(lines) + "\n"


def engine_value(knob: str, text: str):
    """An ``--engine`` override parsed as the type the knob is declared with in
    :class:`HealSelectConfig` (``0``/``1``, ``false``/``true`` for switches); a knob whose
    default is ``None``, "by the data", also takes ``none``."""
    declared = HealSelectConfig.__dataclass_fields__[knob].type  # e.g. "int | None"
    if text.lower() == "none" and "None" in declared:
        return None
    base = declared.split("|")[0].strip()
    if base == "bool":
        if text.lower() not in ("0", "1", "false", "true"):
            raise SystemExit(f"engine switch {knob} expects 0/1 or false/true, got {text!r}")
        return text.lower() in ("1", "true")
    parse = {"int": int, "float": float, "str": str}.get(base)
    if parse is None:
        raise SystemExit(f"engine knob {knob} ({declared}) cannot be set with --engine")
    try:
        return parse(text)
    except ValueError:
        raise SystemExit(f"engine knob {knob} expects {base}, got {text!r}") from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="small")
    ap.add_argument("--attacks", help="comma-separated subset of: " + ", ".join(
        a for attacks in ATTACKS.values() for a in attacks) + " (each data set runs its modality's)")
    ap.add_argument("--datasets", help="comma-separated subset of the config's data sets")
    ap.add_argument("--peers", default="", help="comma-separated peers (see benchmarks/peers.py)")
    ap.add_argument("--methods", default="none,oracle,hasnets", help="comma-separated methods to run")
    ap.add_argument("--engine", default="", help="engine overrides, e.g. 'probe_steps=300,iterations=3'")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--trusted-sampling", choices=["balanced", "random"], default="balanced",
                    help="class-balanced trusted sets, or random samples (written as <config>-random-trusted)")
    ap.add_argument("--trusted", help="comma-separated trusted shares instead of the config's, e.g. "
                    "0.014 (written as <config>-trusted-<shares>)")
    ap.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    ap.add_argument("--save-scores", type=Path, metavar="DIR",
                    help="also save each hasnets case's collected records' scores, ground truth "
                         "(poisoned or not), labels, final probabilities, provenance scores, their distance "
                         "from the trusted ones (spreads) and "
                         "set-apart marks, and per-iteration scores, selections and unlearnings as DIR/<data>/<attack>-<rate>-<trusted>-seed<seed>.npz")
    args = ap.parse_args()
    if not SHARED.exists():
        raise SystemExit(f"{SHARED} not found: the benchmark needs the shared real data sets")
    cfg = CONFIGS[args.config]
    datasets = {k: v for k, v in cfg["datasets"].items()
                if not args.datasets or k in args.datasets.split(",")}
    methods = [m for m in args.methods.split(",") if m] + [p for p in args.peers.split(",") if p]
    engine = {k: engine_value(k, v) for k, v in
              (kv.split("=") for kv in args.engine.split(",") if kv)}
    shares = [float(v) for v in args.trusted.split(",")] if args.trusted else cfg["trusted"]
    rows = []
    for name, n in datasets.items():
        s = load(name, n, cfg["test"], args.seed)
        attacks = [a for a in ATTACKS[s.modality] if not args.attacks or a in args.attacks.split(",")]
        for attack in attacks:
            for rate in cfg["rates"]:
                for share in shares:
                    for r in run_case(s, attack, rate, share, cfg["epochs"], args.seed, methods,
                                      args.device, engine, args.trusted_sampling,
                                      args.save_scores / name if args.save_scores else None):
                        rows.append(dict(r, data=name))
    command = "python " + " ".join([str(Path(sys.argv[0]).resolve().relative_to(ROOT)
                                        if Path(sys.argv[0]).resolve().is_relative_to(ROOT) else sys.argv[0])]
                                   + sys.argv[1:])
    label = (args.config + ("-random-trusted" if args.trusted_sampling == "random" else "")
             + (f"-trusted-{args.trusted.replace(',', '-')}" if args.trusted else ""))
    md = table(rows, command, label)
    print(md)
    if args.write:
        out_json = ROOT / "benchmarks" / f"results-{label}.json"
        out_json.write_text(json.dumps({"machine": machine(), "commit": commit(), "command": command,
                                        "rows": rows}, indent=1, default=float) + "\n")
        path = ROOT / "benchmarks" / "RESULTS.md"
        text = path.read_text() if path.exists() else "# Benchmark results\n"
        start, end = f"<!-- defense:{label} -->", f"<!-- /defense:{label} -->"
        block = f"{start}\n{md}{end}"
        if start in text:
            text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
        path.write_text(text)


if __name__ == "__main__":
    main()
