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
    default = HealSelectConfig()
    assert engine_value(default.few_trusted, "0") == 0 and isinstance(engine_value(default.lr, "1"), float)
    assert engine_value(default.prior_correction, "false") is False
    # a switch that the data decide by default (None) takes 0/1 and none
    assert engine_value(default.retrain, "1") is True and engine_value(default.retrain, "0") is False
    assert engine_value(default.retrain, "none") is None
    with pytest.raises(SystemExit):
        engine_value(default.retrain, "maybe")
