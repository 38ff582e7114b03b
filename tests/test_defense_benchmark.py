"""The defense benchmark's ``--engine`` overrides (each parsed as its knob's type) and its
results files (written after every case, continued with ``--resume``)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sanitizer.heal_and_select import HealSelectConfig

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # ``benchmarks`` is not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks.defense import engine_value  # noqa: E402


def test_engine_overrides_take_each_knobs_type():
    assert engine_value("few_trusted", "0") == 0 and isinstance(engine_value("lr", "1"), float)
    assert engine_value("prior_correction", "false") is False
    # a switch that the data decide by default (None) takes 0/1 and none
    assert engine_value("retrain", "1") is True and engine_value("retrain", "0") is False
    assert engine_value("retrain", "none") is None
    # ... and a count that the data decide by default takes a number or none
    assert engine_value("heal_steps", "30") == 30 and engine_value("heal_steps", "none") is None
    for knob, text in (("retrain", "maybe"), ("heal_steps", "some"), ("widths", "8"),
                       ("lr", "none")):
        with pytest.raises(SystemExit):
            engine_value(knob, text)


def test_a_partial_table_says_how_many_cases_it_holds_and_which_run_made_each_row():
    from benchmarks.defense import table
    row = dict(data="fashion_mnist", attack="badnets", rate=0.1, trusted_share=0.02, method="none",
               clean_accuracy=0.87, asr=0.99, seconds=1.0)
    one = [dict(machine="cpu", commit="abc", command="python benchmarks/defense.py")]
    text = table([dict(row, run=0)], one, "small", cases=3)
    assert "Partial: 1 of 3 cases" in text and "| run |" not in text
    assert "Partial" not in table([dict(row, run=0)], one, "small", cases=1)
    two = one + [dict(machine="gpu", commit="def", command="python benchmarks/defense.py --resume")]
    text = table([dict(row, run=0), dict(row, attack="blend", run=1)], two, "small", cases=2)
    assert "Partial" not in text and "2. Machine: gpu. Commit: `def`" in text
    assert text.rstrip().splitlines()[-1].endswith("| 2 |")  # the blended row came from run 2


def test_results_written_before_runs_were_listed_are_read_as_one_run(tmp_path: Path):
    from benchmarks.defense import case_key, read_results
    (tmp_path / "old.json").write_text(json.dumps(
        {"machine": "cpu", "commit": "abc", "command": "c", "rows": [{"data": "d", "attack": "clean",
                                                                      "trusted_share": 0.02}]}))
    saved = read_results(tmp_path / "old.json")
    assert saved["runs"] == [{"machine": "cpu", "commit": "abc", "command": "c"}]
    assert saved["rows"][0]["run"] == 0 and case_key(saved["rows"][0]) == ("d", "clean", 0.02, 0, "")
    assert read_results(tmp_path / "absent.json") == {"runs": [], "rows": []}


def test_resume_skips_the_cases_a_results_file_holds(shared_data: Path, tmp_path: Path):
    """Two runs into one results folder (a tiny Fashion-MNIST copy, plain training only): the
    second, with --resume, runs only the case the first did not, and the table lists both runs."""
    import numpy as np
    d = np.load(shared_data / "fashion_mnist" / "fashion_mnist.npz")
    (tmp_path / "data" / "fashion_mnist").mkdir(parents=True)
    np.savez(tmp_path / "data" / "fashion_mnist" / "fashion_mnist.npz", x_train=d["x_train"][:300],
             y_train=d["y_train"][:300], x_test=d["x_test"][:100], y_test=d["y_test"][:100],
             class_names=d["class_names"])
    out = tmp_path / "out"
    out.mkdir()

    def bench(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "defense.py"), "--config", "small", "--methods",
             "none", "--device", "cpu", "--data", str(tmp_path / "data"), "--results-dir", str(out),
             "--write", *extra], capture_output=True, text=True, timeout=300, check=True)

    bench("--attacks", "clean")
    first = json.loads((out / "results-small.json").read_text())
    assert first["cases"] == 1 and [r["attack"] for r in first["rows"]] == ["clean"]
    run = bench("--attacks", "clean,badnets", "--resume")
    assert "clean 2.0% is in the results file, skipped" in run.stderr
    saved = json.loads((out / "results-small.json").read_text())
    assert [(r["attack"], r["run"]) for r in saved["rows"]] == [("clean", 0), ("badnets", 1)]
    assert len(saved["runs"]) == 2 and saved["cases"] == 2
    block = (out / "RESULTS.md").read_text()
    assert "<!-- defense:small -->" in block and "| run |" in block and "Partial" not in block
    assert not list(out.glob(".*"))  # no temporary file left behind
    with pytest.raises(subprocess.CalledProcessError):  # --resume continues a written file only
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "defense.py"), "--resume"],
                       capture_output=True, check=True, timeout=60)
