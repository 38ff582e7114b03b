"""The defense benchmark's ``--engine`` overrides: each parsed as its knob's type."""
from __future__ import annotations

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
