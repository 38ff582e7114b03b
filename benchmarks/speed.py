"""Speed benchmark: what the heal-and-select defense costs over plain training, and how fast the
CLI pipeline moves records.

    python benchmarks/speed.py --config small          # CPU, minutes: 5000 Fashion-MNIST records
    python benchmarks/speed.py --config full --write   # GPU: Fashion-MNIST 60k + CIFAR-10 10k

For each data set, in one process on one machine (10% of the records, class-balanced, trusted;
nothing is poisoned -- only speed is measured):

1. **Engine vs plain training.** ``heal_and_select`` with the default ``HealSelectConfig``, then
   ``train_plain`` (same network, same AdamW and schedule, no defense) for the *same number of
   training samples* (passes over the data) the engine made. The engine's samples are counted
   per optimisation call -- every ``optimise`` the engine makes, and those of the provenance
   test's classifiers (``sanitizer.provenance``) -- with the batch each call really used::

       provenance: (folds + 2) x provenance_steps x 128           (collected-vs-trusted classifiers:
                                                                  one per fold of the first pass,
                                                                  ``fold_count(trusted)``, and two
                                                                  in the second, images and audio)
     + seed_steps x heal_bs                                       (first heal, trusted only)
     + iterations x ( train_steps x batch_size                    (train on the round's selection)
                    + 2 x probe_steps x probe_bs                  (the two halves of the backdoor test)
                    + heal_steps x heal_bs )                      (later heals)
     + retrain_steps x batch_size + heal_steps x heal_bs          (the served network, ``retrain``;
                                                                  text only by default)

   with ``heal_bs = max(8, min(batch_size, trusted // 4))``, ``train_steps`` from the records
   each round trains on and ``probe_bs`` the batch the engine gave each probe (it depends on how
   many records were suspects); all are read off the calls, and the engine's steps are checked
   against the totals it announced to its progress display. Every call's batch is clipped to the
   size of the set it trains on, as ``optimise`` does. ``train_plain`` then gets
   ``epochs = samples / records``, i.e. ``round(samples / batch_size)`` full batches. Reported:
   wall seconds of each (device synchronised), the overhead ratio (engine s / plain s; the
   engine's time also holds its scoring passes, which plain training does not have), training
   samples/s of each, and the engine's own per-stage ``result.timings`` (``provenance`` holds
   the provenance test's classifiers and their scoring; ``other`` = total minus the named
   stages: probe copies, data gathers, selection arithmetic).
2. **Scoring throughput**: ``predict_proba`` of the served network over every record, resident on
   the device (best of three), in samples/s.
3. **Peak memory**: the process's peak RSS after each phase (``getrusage``, never goes down)
   and, on CUDA, ``torch.cuda.max_memory_allocated`` of each phase.
4. **The CLI as real subprocesses** (``python -m pipelines ...``, process start included) in a
   temporary folder: ``ingest`` of a Parquet table with PNG bytes (``connectors.images.encode_png``)
   and a boolean ``trusted`` column, ``train`` (default knobs), ``flag``, ``export``; and an
   ``ingest`` of the same records as a fixed-size pixel-list column. Each child reads its own
   peak RSS at exit (``VmHWM``). ``--version`` is timed as the bare start-up cost; ingest
   records/s is given with it included and net of it (``—`` where the difference is under
   0.25 s, i.e. within the jitter of the start-up itself).

Prints a Markdown table (machine, commit, exact command); ``--write`` puts it into
``benchmarks/RESULTS.md`` between ``<!-- speed:<config> -->`` markers. Always writes
``benchmarks/speed-<config>.json``. Data comes from ``../shared/data``; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sanitizer.heal_and_select as engine  # noqa: E402
import sanitizer.provenance as provenance  # noqa: E402
from sanitizer.heal_and_select import HealSelectConfig, heal_and_select  # noqa: E402
from sanitizer.plain_training import train_plain  # noqa: E402
from sanitizer.records import Records, one_hot  # noqa: E402
from sanitizer.training import pick_device, predict_proba, resident  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
TRUSTED_SHARE = 0.10
CONFIGS = {
    "small": {"fashion_mnist": 5000},
    "full": {"fashion_mnist": 60000, "cifar10": 10000},
}
TINY_ENGINE = dict(iterations=1, seed_steps=20, heal_steps=5, probe_steps=10, train_epochs=0.5,
                   provenance_steps=10, retrain=True, few_trusted=0)
"""Engine knobs of the hidden ``--tiny-engine`` smoke-test switch (never for reported figures):
every stage runs, the served network's retrain too (by default on text only), and the heals
after the first (skipped by default for fewer than 100 trusted images, as the smoke test has)."""
NET_MIN_S = 0.25  # below this, "net of start-up" is start-up jitter, not ingest work
STAGES = ("to_device", "provenance", "heal", "probe", "train", "retrain", "score")
TRAINING = ("provenance", "heal", "probe", "train", "retrain")  # the stages that optimise


# --------------------------------------------------------------------------- data

def load(name: str, n: int, seed: int, data: Path = SHARED) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``n`` training records of ``name`` (from the folder ``data``, laid out as
    ``../shared/data``) as ``(N, C, H, W)`` uint8, integer labels, class names."""
    if name == "fashion_mnist":
        d = np.load(data / "fashion_mnist" / "fashion_mnist.npz")
        x = d["x_train"][:, None]
    elif name == "cifar10":
        d = np.load(data / "cifar10" / "cifar10_subset.npz")
        x = d["x_train"].transpose(0, 3, 1, 2)
    else:
        raise SystemExit(f"unknown data set {name}")
    pick = np.sort(np.random.default_rng(seed).permutation(len(x))[:n])
    return (np.ascontiguousarray(x[pick]), d["y_train"][pick].astype(np.int64),
            [str(c) for c in d["class_names"]])


def trusted_mask(y: np.ndarray, k: int, share: float, seed: int) -> np.ndarray:
    """A class-balanced ``share`` of the records."""
    rng = np.random.default_rng(seed + 1)
    mask = np.zeros(len(y), bool)
    per_class = max(1, int(round(share * len(y) / k)))
    for c in range(k):
        mask[rng.permutation(np.flatnonzero(y == c))[:per_class]] = True
    return mask


# --------------------------------------------------------------------------- machine

def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {model} x{len(os.sched_getaffinity(0))} cores, torch {torch.__version__}"


def commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class CudaPeak:
    """``torch.cuda.max_memory_allocated`` over a ``with`` block (``None`` on the CPU)."""

    def __init__(self, device: torch.device):
        self.device, self.mib = device, None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = torch.cuda.max_memory_allocated(self.device) / 2**20


# --------------------------------------------------------------------------- counting passes

class StageLog:
    """A ``Progress`` for the engine that records each stage it starts and how many steps."""

    def __init__(self):
        self.stages: list[tuple[str, int]] = []

    def stage(self, name: str, total: int) -> None:
        self.stages.append((name, int(total)))

    def advance(self) -> None:
        pass


def counted_engine_run(records: Records, config: HealSelectConfig):
    """Run the engine, recording for each ``optimise`` call its stage, steps and the batch it
    really used (``min(batch_size, rows of the set it trains on)``, repeats included): the
    engine's own calls under the stage it announced last, the provenance test's classifiers
    (which announce none) as ``provenance``. Also returns the steps each announced stage
    declared, to check that every engine call was counted."""
    log, calls = StageLog(), []

    def counting(real, stage_of):
        def call(model, data, *, steps, batch_size, repeat=None, **kw):
            rows = int(repeat.sum()) if repeat is not None else len(data.x)
            calls.append({"stage": stage_of(), "steps": int(steps),
                          "batch": max(1, min(int(batch_size), rows))})
            return real(model, data, steps=steps, batch_size=batch_size, repeat=repeat, **kw)
        return call

    def announced() -> str:
        return log.stages[-1][0] if log.stages else "?"

    with mock.patch.object(engine, "optimise", counting(engine.optimise, announced)), \
            mock.patch.object(provenance, "optimise", counting(provenance.optimise, lambda: "provenance")):
        result = heal_and_select(records, config, log)
    if not any(c["stage"] != "provenance" for c in calls):
        raise SystemExit("could not count the engine's training calls: heal_and_select no longer "
                         "calls sanitizer.heal_and_select.optimise")
    return result, calls, log.stages


# --------------------------------------------------------------------------- in-process phases

def warm_up(records: Records, device: str) -> None:
    """Lazy initialisation (CUDA context, cuDNN autotuning, thread pools) outside the timings."""
    sub = records.subset(np.arange(min(len(records), 1024)))
    heal_and_select(sub, HealSelectConfig(device=device, iterations=1, seed_steps=3, heal_steps=2,
                                          probe_steps=2, train_epochs=0.3,
                                          provenance_steps=3))
    train_plain(sub, epochs=0.5, device=device)


def bench_training(records: Records, config: HealSelectConfig, dev: torch.device, seed: int) -> dict:
    n_c = int((~records.trusted).sum())
    with CudaPeak(dev) as mem_engine:
        sync(dev)
        t0 = time.perf_counter()
        result, calls, announced = counted_engine_run(records, config)
        sync(dev)
        engine_s = time.perf_counter() - t0
    rss_engine = peak_rss_mib()
    samples = sum(c["steps"] * c["batch"] for c in calls)
    steps = sum(c["steps"] for c in calls)
    own = sum(c["steps"] for c in calls if c["stage"] != "provenance")
    declared = sum(n for _, n in announced)
    if own != declared:
        print(f"warning: engine ran {own} steps, it announced {declared}", file=sys.stderr)
    per_stage = {}
    for c in calls:
        s = per_stage.setdefault(c["stage"], {"calls": 0, "steps": 0, "samples": 0, "batches": []})
        s["calls"] += 1
        s["steps"] += c["steps"]
        s["samples"] += c["steps"] * c["batch"]
        if c["batch"] not in s["batches"]:
            s["batches"].append(c["batch"])
    timings = {k: float(v) for k, v in result.timings.items()}
    named = sum(v for k, v in timings.items() if k != "total")
    timings["other"] = timings.get("total", engine_s) - named
    train_s = sum(timings.get(k, 0.0) for k in TRAINING)

    epochs = samples / len(records)
    with CudaPeak(dev) as mem_plain:
        sync(dev)
        t0 = time.perf_counter()
        _, plain_t = train_plain(records, epochs=epochs, batch_size=config.batch_size, lr=config.lr,
                                 weight_decay=config.weight_decay, max_shift=config.max_shift,
                                 widths=config.widths, seed=seed, device=config.device)
        sync(dev)
        plain_s = time.perf_counter() - t0
    rss_plain = peak_rss_mib()
    plain_samples = int(plain_t["steps"]) * min(config.batch_size, len(records))

    # scoring throughput of the served network over every record
    model = result.model.to(dev).eval()
    x = resident(records.features, dev)
    with CudaPeak(dev) as mem_score:
        predict_proba(model, x[:1024])
        best = float("inf")
        for _ in range(3):
            sync(dev)
            t0 = time.perf_counter()
            predict_proba(model, x)
            sync(dev)
            best = min(best, time.perf_counter() - t0)
    del x, model
    return {
        "records": len(records), "collected": n_c, "trusted": int(records.trusted.sum()),
        "engine": {"seconds": engine_s, "steps": steps, "samples": samples,
                   "samples_per_s": samples / engine_s,
                   "training_samples_per_s": samples / train_s if train_s > 0 else None,
                   "stages": per_stage, "timings": timings,
                   "cuda_peak_mib": mem_engine.mib, "peak_rss_mib": rss_engine},
        "plain": {"seconds": plain_s, "steps": int(plain_t["steps"]), "samples": plain_samples,
                  "epochs": epochs, "samples_per_s": plain_samples / plain_s,
                  "train_loop_samples_per_s": float(plain_t["samples_per_s"]),
                  "cuda_peak_mib": mem_plain.mib, "peak_rss_mib": rss_plain},
        "overhead": engine_s / plain_s,
        "scoring": {"seconds": best, "samples_per_s": len(records) / best,
                    "cuda_peak_mib": mem_score.mib, "peak_rss_mib": peak_rss_mib()},
    }


# --------------------------------------------------------------------------- CLI subprocesses

# ``python -m pipelines ARGS`` plus one thing: at exit the child writes its own peak RSS (VmHWM
# of /proc/self/status) to the file named first. The parent cannot get it from wait4: on Linux a
# child's ru_maxrss starts at the parent's RSS at fork time (kept across exec), so every step
# would report at least the benchmark process's own peak.
CHILD = """import atexit, runpy, sys
out = sys.argv.pop(1)
def peak():
    try:
        with open('/proc/self/status') as status:
            kib = next(int(l.split()[1]) for l in status if l.startswith('VmHWM:'))
        with open(out, 'w') as f:
            f.write(str(kib))
    except (OSError, StopIteration, ValueError):
        pass
atexit.register(peak)
runpy.run_module('pipelines', run_name='__main__', alter_sys=True)
"""


def run_step(name: str, args: list[str], cwd: Path, log_dir: Path) -> dict:
    """Run ``python -m pipelines *args`` as a child process: wall seconds (process start
    included) and the child's own peak RSS."""
    peak_file = log_dir / f"{name}.peak"
    cmd = [sys.executable, "-c", CHILD, str(peak_file), *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log_dir / f"{name}.out", "wb") as out, open(log_dir / f"{name}.err", "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=err, env=env)
        seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (log_dir / f"{name}.err").read_text(errors="replace")[-2000:]
        raise SystemExit(f"`python -m pipelines {shlex.join(args)}` failed with exit code "
                         f"{proc.returncode}:\n{tail}")
    try:
        peak = int(peak_file.read_text()) / 1024
    except (OSError, ValueError):
        peak = None  # no /proc (not Linux)
    return {"step": name, "argv": args, "seconds": seconds, "peak_rss_mib": peak}


def cli_option(knob: str, value) -> list[str]:
    """An engine knob as ``sanitize train`` options: ``--name value``, or ``--name`` /
    ``--no-name`` for a switch."""
    name = knob.replace("_", "-")
    if isinstance(value, bool):
        return [f"--{name}" if value else f"--no-{name}"]
    return [f"--{name}", str(value)]


def bench_cli(x: np.ndarray, y: np.ndarray, classes: list[str], trusted: np.ndarray,
              device: str, knobs: dict, work: Path) -> dict:
    import polars as pl

    from connectors.images import encode_png

    n = len(x)
    meta = {"id": [f"r{i}" for i in range(n)], "label": [classes[c] for c in y], "trusted": trusted}
    t0 = time.perf_counter()
    png = encode_png(x)
    encode_s = time.perf_counter() - t0
    pl.DataFrame({**meta, "image": pl.Series(png, dtype=pl.Binary)}).write_parquet(work / "png.parquet")
    flat = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(n, -1)  # row-major, channels last
    pl.DataFrame({**meta, "pixels": pl.Series(flat, dtype=pl.Array(pl.UInt8, flat.shape[1]))}
                 ).write_parquet(work / "pixels.parquet")
    common = ["--label", "label", "--trusted-column", "trusted", "--id", "id", "-q"]
    # start-up: three bare starts (the first one also warms the file cache), the fastest counts
    starts = [run_step("start-up", ["--version"], work, work) for _ in range(3)]
    start_up = min(starts, key=lambda s: s["seconds"])
    start_up["all_seconds"] = [s["seconds"] for s in starts]
    steps = [
        start_up,
        run_step("ingest-png", ["ingest", "png.parquet", "-o", "ds", "--image", "image", *common],
                 work, work),
        run_step("ingest-pixels", ["ingest", "pixels.parquet", "-o", "ds-pixels", "--image", "pixels",
                                   *common], work, work),
        run_step("train", ["train", "ds", "-o", "run", "--device", device, "-q",
                           *[a for k, v in knobs.items() for a in cli_option(k, v)]],
                 work, work),
        run_step("flag", ["flag", "run", "-o", "flags.parquet", "-q"], work, work),
        run_step("export", ["export", "run", "-o", "model.onnx", "-q"], work, work),
    ]
    for s in steps:
        if s["step"].startswith("ingest"):
            s["records_per_s"] = n / s["seconds"]
            # net of start-up only where the work stands out of the start-up's own jitter
            net = s["seconds"] - start_up["seconds"]
            s["records_per_s_net_of_start_up"] = n / net if net >= NET_MIN_S else None
    sizes = {p: (work / p).stat().st_size for p in ("png.parquet", "pixels.parquet")}
    return {"records": n, "png_encode_s": encode_s, "file_bytes": sizes, "steps": steps}


# --------------------------------------------------------------------------- report

def f(v, digits: int = 1) -> str:
    if v is None:
        return "—"
    return f"{v:,.{digits}f}"


def table(out: dict) -> str:
    runs = out["datasets"]
    lines = [f"### Speed benchmark, `{out['config']}` configuration", "",
             f"Machine: {out['machine']}. Commit: `{out['commit']}`. Command: `{out['command']}`. "
             f"Trusted: {TRUSTED_SHARE:.0%} of the records (boolean column); engine: "
             + (f"`HealSelectConfig` overridden by {out['engine_overrides']} (smoke test)"
                if out["engine_overrides"] else "default `HealSelectConfig`")
             + "; plain training gets as many training samples as the engine "
             "processed (counted per optimisation call: steps x batch).", "",
             "**Engine vs plain training** (wall seconds, device synchronised)", "",
             "| data | records | engine s | plain s | overhead | samples (passes) | engine samples/s "
             "| engine training samples/s | plain samples/s | engine steps | plain steps |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        e, p = r["engine"], r["plain"]
        lines.append(f"| {name} | {r['records']:,} | {f(e['seconds'])} | {f(p['seconds'])} | "
                     f"{r['overhead']:.2f}x | {e['samples']:,} ({e['samples'] / r['records']:.1f}) | "
                     f"{f(e['samples_per_s'], 0)} | {f(e['training_samples_per_s'], 0)} | "
                     f"{f(p['samples_per_s'], 0)} | {e['steps']:,} | {p['steps']:,} |")
    lines += ["", "**Engine stages** (`result.timings`, seconds; samples = steps x batch per stage)", "",
              "| data | " + " | ".join(STAGES)
              + " | other | total | " + " | ".join(f"{k} samples" for k in TRAINING) + " |",
              "|---|" + "---|" * (len(STAGES) + 2 + len(TRAINING))]
    for name, r in runs.items():
        t, st = r["engine"]["timings"], r["engine"]["stages"]
        lines.append(f"| {name} | " + " | ".join(f(t.get(k), 2) for k in STAGES)
                     + f" | {f(t.get('other'), 2)} | {f(t.get('total'), 2)} | "
                     + " | ".join(f"{st[k]['samples']:,}" if k in st else "0"
                                  for k in TRAINING) + " |")
    lines += ["", "**Scoring and memory**", "",
              "| data | predict_proba samples/s "
              "| peak RSS MiB (data loaded / warm-up / engine / plain / scoring) "
              "| CUDA peak MiB (engine / plain / scoring) |", "|---|---|---|---|"]
    for name, r in runs.items():
        e, p, s = r["engine"], r["plain"], r["scoring"]
        lines.append(f"| {name} | {f(s['samples_per_s'], 0)} | {f(r.get('peak_rss_mib_loaded'), 0)} / "
                     f"{f(r.get('peak_rss_mib_warmed_up'), 0)} / {f(e['peak_rss_mib'], 0)} / "
                     f"{f(p['peak_rss_mib'], 0)} / {f(s['peak_rss_mib'], 0)} | "
                     f"{f(e['cuda_peak_mib'], 0)} / {f(p['cuda_peak_mib'], 0)} / "
                     f"{f(s['cuda_peak_mib'], 0)} |")
    lines += ["", "**CLI steps as subprocesses** (`python -m pipelines ...`, process start "
              "included; peak RSS of the child)", "",
              "| data | step | seconds | records/s | records/s net of start-up | peak RSS MiB |",
              "|---|---|---|---|---|---|"]
    for name, r in runs.items():
        c = r["cli"]
        for s in c["steps"]:
            lines.append(f"| {name} ({c['records']:,}) | {s['step']} | {f(s['seconds'], 2)} | "
                         f"{f(s.get('records_per_s'), 0)} | "
                         f"{f(s.get('records_per_s_net_of_start_up'), 0)} | "
                         f"{f(s['peak_rss_mib'], 0)} |")
    return "\n".join(lines) + "\n"


def write_section(md: str, config: str) -> None:
    path = ROOT / "benchmarks" / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start, end = f"<!-- speed:{config} -->", f"<!-- /speed:{config} -->"
    block = f"{start}\n{md}{end}"
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="small")
    ap.add_argument("--datasets", help="comma-separated subset of the config's data sets")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda ...")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-cli", action="store_true", help="leave out the CLI subprocess steps")
    ap.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    ap.add_argument("--limit", type=int, help=argparse.SUPPRESS)  # cap records per data set (tests)
    ap.add_argument("--tiny-engine", action="store_true", help=argparse.SUPPRESS)  # smoke tests only
    ap.add_argument("--json-dir", type=Path, default=ROOT / "benchmarks", help=argparse.SUPPRESS)  # tests
    ap.add_argument("--data", type=Path, default=SHARED,
                    help="folder of the real data sets, laid out as ../shared/data (its default)")
    args = ap.parse_args()
    if not args.data.exists():
        raise SystemExit(f"{args.data} not found: the benchmark needs the shared real data sets "
                         "(--data names another folder laid out as ../shared/data)")
    datasets = {k: v for k, v in CONFIGS[args.config].items()
                if not args.datasets or k in args.datasets.split(",")}
    dev = pick_device(args.device)
    knobs = TINY_ENGINE if args.tiny_engine else {}
    config = HealSelectConfig(seed=args.seed, device=args.device, **knobs)
    script = Path(sys.argv[0]).resolve()
    command = "python " + shlex.join([str(script.relative_to(ROOT)) if script.is_relative_to(ROOT)
                                      else sys.argv[0]] + sys.argv[1:])
    out = {"config": args.config, "machine": machine(dev), "commit": commit(), "command": command,
           "device": str(dev), "engine_config": config.to_dict(), "engine_overrides": knobs,
           "trusted_share": TRUSTED_SHARE, "datasets": {}}
    for name, n in datasets.items():
        n = min(n, args.limit) if args.limit else n
        x, y, classes = load(name, n, args.seed, args.data)
        trusted = trusted_mask(y, len(classes), TRUSTED_SHARE, args.seed)
        records = Records(x, one_hot(y, len(classes)),
                          np.array([f"r{i}" for i in range(len(y))], dtype=object), trusted,
                          classes, "image")
        print(f"{name}: {len(records)} records ({int(trusted.sum())} trusted) on {dev}",
              file=sys.stderr, flush=True)
        rss_loaded = peak_rss_mib()
        warm_up(records, args.device)
        rss_warm = peak_rss_mib()
        row = bench_training(records, config, dev, args.seed)
        row["peak_rss_mib_loaded"], row["peak_rss_mib_warmed_up"] = rss_loaded, rss_warm
        print(f"  engine {row['engine']['seconds']:.1f}s, plain {row['plain']['seconds']:.1f}s, "
              f"overhead {row['overhead']:.2f}x", file=sys.stderr, flush=True)
        if not args.skip_cli:
            with tempfile.TemporaryDirectory(prefix="sanitize-speed-") as tmp:
                row["cli"] = bench_cli(x, y, classes, trusted, args.device, knobs, Path(tmp))
            print("  cli " + ", ".join(f"{s['step']} {s['seconds']:.1f}s" for s in row["cli"]["steps"]),
                  file=sys.stderr, flush=True)
        else:
            row["cli"] = {"records": len(records), "steps": []}
        out["datasets"][name] = row
    out["peak_rss_mib"] = peak_rss_mib()
    (args.json_dir / f"speed-{args.config}.json").write_text(
        json.dumps(out, indent=1, default=float) + "\n")
    md = table(out)
    print(md)
    if args.write:
        write_section(md, args.config)


if __name__ == "__main__":
    main()
