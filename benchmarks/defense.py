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
plain training is what the defense costs data that holds no backdoor. A Markdown table (with
machine, commit and command) goes to stdout; with ``--write`` also into ``benchmarks/RESULTS.md``
between markers and, machine-readable, ``benchmarks/results-<config>.json``, both rewritten
after every case.

**In pieces.** A run stopped between cases (a time limit) leaves the cases it finished, and the
table says how many of the configuration's it holds; ``--resume`` (with ``--write``) runs the
rest, skipping every case the results file already has (same data set, attack, healing share,
seed and ``--engine``), and the table then names each run and which rows it made. So the
``full`` configuration can be measured on a machine lent for a few minutes at a time::

    timeout 540 python benchmarks/defense.py --config full --datasets fashion_mnist --write --resume --data .data

repeated until the table stops saying "Partial", each piece's ``benchmarks/results-full.json``
carried to the next.

Data comes from ``../shared/data`` (see its README), or from the folder ``--data`` names, laid
out the same way; nothing is downloaded. Image data sets need no file readers: torch and numpy
are all an image configuration imports (text and audio bring polars and soundfile).
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

from connectors.atomic import atomic_path  # noqa: E402
from sanitizer.attacks import AttackConfig, poison, triggered_test_set  # noqa: E402
from sanitizer.heal_and_select import HealSelectConfig, first_pass_folds, heal_and_select  # noqa: E402
from sanitizer.metrics import accuracy, attack_success_rate, detection_report  # noqa: E402
from sanitizer.plain_training import train_plain  # noqa: E402
from sanitizer.records import Records, one_hot  # noqa: E402
from sanitizer.provenance import beyond_trusted, provenance_scores  # noqa: E402
from sanitizer.scoring import flag  # noqa: E402
from sanitizer.training import pick_device, predict_proba, resident  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"  # the default of --data

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


def load(name: str, n: int | None, n_test: int | None, seed: int, data: Path = SHARED) -> Split:
    """A data set from the folder ``data`` (laid out as ``../shared/data``) as train/test arrays:
    FSDD with its official split (recordings 0-4 are the test set), the text sets with a seeded
    80/20 split, images with their own test sets. The file readers are imported only for the
    data sets that need them: images need neither polars nor the audio stack, so a machine with
    torch and numpy alone runs the image configurations."""
    rng = np.random.default_rng(seed)
    if name == "fsdd":
        from connectors.audio_files import read_audio_records
        records, _, _ = read_audio_records(data / "fsdd" / "wav")
        index = np.array([int(Path(i).stem.rsplit("_", 1)[1]) for i in records.ids])
        return _split_records(records, index < 5)
    if name in ("sms_spam", "cfpb"):
        from connectors.table_records import read_records
        path, label, text = {"sms_spam": ("sms_spam/sms_spam.csv", "label", "text"),
                             "cfpb": ("cfpb_complaints/cfpb_sample_b.csv", "product", "narrative")}[name]
        records = read_records(data / path, label=label, text=text)
        return _split_records(records, rng.random(len(records)) < 0.2)
    if name == "fashion_mnist":
        d = np.load(data / "fashion_mnist" / "fashion_mnist.npz")
        x, xt = d["x_train"][:, None], d["x_test"][:, None]
    elif name == "cifar10":
        d = np.load(data / "cifar10" / "cifar10_subset.npz")
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
    from pipelines.train import tokenize  # (polars comes with the pipelines: text only)
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


def table(rows: list[dict], runs: list[dict], config: str, cases: int | None = None) -> str:
    """The Markdown block of a configuration: each run's machine, commit and command (a table
    written by one run, the usual case, names them in one line; one continued with ``--resume``
    lists its runs and says which made each row), then a row per case and method. ``cases``,
    when given, is how many cases the configuration has: a table that holds fewer says so."""
    lines = [f"### Defense benchmark, `{config}` configuration", ""]
    several = len(runs) > 1
    if several:
        lines += ["Runs (the `run` column names each row's):", ""]
        lines += [f"{i + 1}. Machine: {r['machine']}. Commit: `{r['commit']}`. Command: `{r['command']}`."
                  for i, r in enumerate(runs)]
    else:
        lines += [f"Machine: {r['machine']}. Commit: `{r['commit']}`. Command: `{r['command']}`."
                  for r in runs]
    done = len({case_key(r) for r in rows})
    if cases is not None and done < cases:
        lines += ["", f"**Partial: {done} of {cases} cases.** The same command with `--resume` runs the rest."]
    head = ["data", "attack", "poison", "trusted", "method", "clean acc", "ASR", "AUROC", "precision",
            "recall", "F1", "flagged", "time s"] + (["run"] if several else [])
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["data"], r["attack"], f"{r['rate']:.0%}", f"{r['trusted_share']:.1%}", r["method"],
            fmt(r["clean_accuracy"]), fmt(r["asr"]), fmt(r.get("auroc")), fmt(r.get("precision")),
            fmt(r.get("recall")), fmt(r.get("f1")),
            f"{r['flagged']} / {r['collected']}" if "flagged" in r else "—", f"{r['seconds']:.1f}"]
            + ([str(r.get("run", 0) + 1)] if several else [])) + " |")
    return "\n".join(lines) + "\n"


def case_key(row: dict) -> tuple:
    """What one case of a configuration is: data set, attack, healing-set share, seed and engine
    overrides (the poison rate of ``clean`` is 0 whatever the configuration's: the attack names it)."""
    return (row["data"], row["attack"], row["trusted_share"], row.get("seed", 0), row.get("engine", ""))


def read_results(path: Path) -> dict:
    """A results file as written by ``--write``: ``runs`` (machine, commit, command) and ``rows``
    (each naming its run). Files from before runs were listed hold one run at the top level."""
    if not path.exists():
        return {"runs": [], "rows": []}
    saved = json.loads(path.read_text())
    if "runs" not in saved:
        saved = {"runs": [{k: saved[k] for k in ("machine", "commit", "command")}],
                 "rows": [dict(r, run=0) for r in saved["rows"]]}
    return saved


def write_results(saved: dict, label: str, cases: int, folder: Path = ROOT / "benchmarks") -> None:
    """``results-<label>.json`` and the block between ``label``'s markers in ``RESULTS.md``
    (in ``folder``), each written whole to a temporary name and renamed: a run stopped between
    cases (a time limit) leaves the cases it finished, never half a file."""
    out_json = folder / f"results-{label}.json"
    write_whole(out_json, json.dumps(dict(saved, cases=cases), indent=1, default=float) + "\n")
    path = folder / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start, end = f"<!-- defense:{label} -->", f"<!-- /defense:{label} -->"
    block = f"{start}\n{table(saved['rows'], saved['runs'], label, cases)}{end}"
    if start in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    write_whole(path, text)


def write_whole(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


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
    ap.add_argument("--resume", action="store_true",
                    help="with --write: continue the configuration's results file, skipping the "
                         "cases it holds (a run stopped by a time limit, or run in pieces)")
    ap.add_argument("--data", type=Path, default=SHARED,
                    help="folder of the real data sets, laid out as ../shared/data (its default)")
    ap.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks", help=argparse.SUPPRESS)  # tests
    args = ap.parse_args()
    if not args.data.exists():
        raise SystemExit(f"{args.data} not found: the benchmark needs the shared real data sets "
                         "(--data names another folder laid out as ../shared/data)")
    if args.resume and not args.write:
        raise SystemExit("--resume continues a written results file: give --write too")
    cfg = CONFIGS[args.config]
    datasets = {k: v for k, v in cfg["datasets"].items()
                if not args.datasets or k in args.datasets.split(",")}
    methods = [m for m in args.methods.split(",") if m] + [p for p in args.peers.split(",") if p]
    engine = {k: engine_value(k, v) for k, v in
              (kv.split("=") for kv in args.engine.split(",") if kv)}
    shares = [float(v) for v in args.trusted.split(",")] if args.trusted else cfg["trusted"]
    command = "python " + " ".join([str(Path(sys.argv[0]).resolve().relative_to(ROOT)
                                        if Path(sys.argv[0]).resolve().is_relative_to(ROOT) else sys.argv[0])]
                                   + sys.argv[1:])
    label = (args.config + ("-random-trusted" if args.trusted_sampling == "random" else "")
             + (f"-trusted-{args.trusted.replace(',', '-')}" if args.trusted else ""))
    attacks_of = {name: [a for a in ATTACKS[MODALITY[name]] if not args.attacks or a in args.attacks.split(",")]
                  for name in datasets}
    cases = sum(len(attacks_of[name]) for name in datasets) * len(cfg["rates"]) * len(shares)
    saved = read_results(args.results_dir / f"results-{label}.json") if args.resume else {"runs": [], "rows": []}
    run = len(saved["runs"])  # this run's number in the results file (the code is what it is now)
    saved["runs"].append({"machine": machine(), "commit": commit(), "command": command})
    done = {case_key(r) for r in saved["rows"]}
    for name, n in datasets.items():
        s = None
        for attack in attacks_of[name]:
            for rate in cfg["rates"]:
                for share in shares:
                    key = case_key(dict(data=name, attack=attack, trusted_share=share, seed=args.seed,
                                        engine=args.engine))
                    if key in done:
                        print(f"resume: {name} {attack} {share:.1%} is in the results file, skipped",
                              file=sys.stderr)
                        continue
                    if s is None:  # loaded once a case of it is to run
                        s = load(name, n, cfg["test"], args.seed, args.data)
                    rows = run_case(s, attack, rate, share, cfg["epochs"], args.seed, methods,
                                    args.device, engine, args.trusted_sampling,
                                    args.save_scores / name if args.save_scores else None)
                    saved["rows"] += [dict(r, data=name, seed=args.seed, engine=args.engine, run=run)
                                      for r in rows]
                    if args.write:  # after every case: a run stopped by a time limit keeps what it did
                        write_results(saved, label, cases, args.results_dir)
    if not any(r["run"] == run for r in saved["rows"]):
        saved["runs"].pop()  # nothing new: the file's runs stay as they were
    print(table(saved["rows"], saved["runs"], label, cases))


if __name__ == "__main__":
    main()
