"""Peer defenses of the benchmark (``benchmarks/peers.py``) on real data.

Skipped when the optional peers (``pip install '.[peers]'``) or the shared Fashion-MNIST data are
absent. A 2000-record subset with 10% BadNets poison and one training epoch: the checks are that
each peer runs end to end through its package and returns coherent figures, not that it is good.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("cleanlab")
pytest.importorskip("art")
pytest.importorskip("sklearn")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # ``benchmarks`` is not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks.peers import PEERS, PenultimateNamed, art_classifier, run_peer  # noqa: E402
from sanitizer.attacks import AttackConfig, poison  # noqa: E402
from sanitizer.networks import build_network, default_spec  # noqa: E402
from sanitizer.records import Records, one_hot  # noqa: E402

N = 2000


def _records(fmnist, n: int, seed: int = 0) -> Records:
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(fmnist["y_train"]))[:n]
    x = np.ascontiguousarray(fmnist["x_train"][pick][:, None])
    y = fmnist["y_train"][pick].astype(np.int64)
    trusted = np.zeros(n, bool)
    trusted[rng.permutation(n)[: n // 50]] = True
    return Records(x, one_hot(y, 10), np.array([f"r{i}" for i in range(n)], dtype=object), trusted,
                   [str(c) for c in fmnist["class_names"]], "image")


@pytest.fixture(scope="module")
def attacked(fmnist):
    return poison(_records(fmnist, N), AttackConfig(kind="badnets", target=0, rate=0.1, seed=0))


def test_penultimate_is_arts_last_layer(fmnist):
    records = _records(fmnist, 64)
    torch.manual_seed(0)
    net = build_network(default_spec(records.features, 10, "image")).eval()
    x = records.features.astype(np.float32)
    with torch.no_grad():
        logits = net(torch.from_numpy(x))
        feats = net.features(torch.from_numpy(x))
        assert torch.allclose(PenultimateNamed(net)(torch.from_numpy(x)), logits)
    clf = art_classifier(net, records, "cpu")
    acts = clf.get_activations(x, layer=len(clf.layer_names) - 1, batch_size=16)
    np.testing.assert_allclose(acts, feats.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(clf.predict(x, batch_size=16), logits.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", PEERS)
def test_peer_runs_and_reports(attacked, method):
    records, poisoned = attacked.records, attacked.poisoned
    model, det = run_peer(method, records, poisoned, epochs=1.0, seed=0, device="cpu", folds=2)
    assert set(det) == {"auroc", "precision", "recall", "f1", "flagged"}
    for key in ("auroc", "precision", "recall", "f1"):
        assert 0.0 <= det[key] <= 1.0, (key, det)
    collected = int((~records.trusted).sum())
    positives = int(poisoned[~records.trusted].sum())
    flagged = det["flagged"]
    assert isinstance(flagged, int) and 0 < flagged < collected
    # precision * flagged and recall * positives both count the true positives
    assert round(det["precision"] * flagged) == round(det["recall"] * positives)
    if method == "spectral":  # top 1.5 x 10% of every class, ties and rounding aside
        assert abs(flagged - 0.15 * len(records)) <= 0.15 * len(records) * 0.1 + 10 + records.trusted.sum()
    if method == "activation":  # the smaller of two clusters in every class
        assert flagged <= len(records) // 2
    with torch.no_grad():
        out = model(torch.from_numpy(records.features[:8].astype(np.float32)))
    assert out.shape == (8, 10) and torch.isfinite(out).all()


def test_unknown_peer_exits(attacked):
    with pytest.raises(SystemExit):
        run_peer("nope", attacked.records, attacked.poisoned, epochs=1.0, seed=0, device="cpu")
