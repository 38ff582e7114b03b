"""Shared pytest fixtures: the real data sets under ``../shared/data``.

Tests use real, public data (no synthetic samples). The data lives next to the repository, in
``<repo>/../shared/data`` (see its README), and is not part of the project, so every fixture here
skips the test, with the reason, when the folder or file is absent (a fresh clone has none).
``SANITIZE_TEST_DATA`` names another folder laid out the same way (a copy of some of the data
sets, on a machine where ``../shared`` is not at hand).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from sanitizer.records import Records

SHARED_DATA = Path(os.environ.get("SANITIZE_TEST_DATA")
                   or Path(__file__).resolve().parents[1].parent / "shared" / "data")


def _load_npz(shared_data: Path, relative: str) -> dict[str, np.ndarray]:
    path = shared_data / relative
    if not path.is_file():
        pytest.skip(f"real data set {path} is absent")
    with np.load(path, allow_pickle=False) as arrays:
        return {key: arrays[key] for key in arrays.files}


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder ``<repo>/../shared/data`` (or ``SANITIZE_TEST_DATA``); skips
    the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared real-data folder {SHARED_DATA} is absent "
                    "(it lives beside the repository, not in it)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def fmnist(shared_data: Path) -> dict[str, np.ndarray]:
    """Fashion-MNIST arrays: x_train (60000, 28, 28) uint8, y_train, x_test, y_test, class_names."""
    return _load_npz(shared_data, "fashion_mnist/fashion_mnist.npz")


@pytest.fixture(scope="session")
def cifar10(shared_data: Path) -> dict[str, np.ndarray]:
    """CIFAR-10 subset: x_train (10000, 32, 32, 3) uint8, y_train, x_test, y_test, class_names."""
    return _load_npz(shared_data, "cifar10/cifar10_subset.npz")


def _digest(value) -> str:
    if isinstance(value, np.ndarray):
        return hashlib.blake2b(value.tobytes(), digest_size=16).hexdigest() + str(value.shape)
    if isinstance(value, Records):
        return _digest(value.features) + _digest(value.trusted) + _digest(value.labels)
    return repr(value)


@pytest.fixture
def reuse_provenance(monkeypatch):
    """Compute the engine's provenance test (both passes) once per records and knobs.

    For tests that run ``heal_and_select`` twice on the same records with a switch that acts
    after the provenance test (the look-alike test, the dominance test, the gate of few trusted images):
    the provenance classifiers are deterministic on the CPU and most of such a run's time, so
    the second run reuses the first one's scores instead of training them again. Keyed by the
    content of every argument, so different records or knobs are computed afresh."""
    import sanitizer.heal_and_select as engine

    def once(function):
        memo = {}

        def cached(*args, **kwargs):
            key = (tuple(_digest(a) for a in args),
                   tuple((k, _digest(v)) for k, v in sorted(kwargs.items())))
            if key not in memo:
                memo[key] = function(*args, **kwargs)
            return tuple(a.copy() for a in memo[key])
        return cached

    for name in ("provenance_scores", "refined_provenance_scores"):
        monkeypatch.setattr(engine, name, once(getattr(engine, name)))
