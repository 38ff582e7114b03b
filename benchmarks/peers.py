"""Peer defenses for the benchmark: published poison / label-noise detectors, each used as its
own package documents it, on the same records and with the same network and training as
``hasnets`` (``sanitizer.plain_training.train_plain``).

    model, det = run_peer("spectral", records, poisoned, epochs=8.0, seed=0, device="auto")

Every peer (1) gives each *collected* record a suspicion score (higher = more suspicious) and a
yes/no flag, (2) retrains a fresh network with ``train_plain`` on the trusted records plus every
collected record it did not flag, and returns that model and ``det``: ``auroc``, ``precision``,
``recall``, ``f1`` (from :func:`sanitizer.metrics.detection_report`, over the collected records
only: trusted records are vetted, never flagged and never dropped) and ``flagged``.

Peers (``pip install '.[peers]'``):

``cleanlab``
    Confident learning (Northcutt et al., 2021) with `cleanlab <https://docs.cleanlab.ai>`_.
    Out-of-sample predicted probabilities come from K-fold cross-fitting: the collected records
    are split into ``folds`` random folds; for each fold a network is trained with
    ``train_plain`` on the trusted records plus the other folds and predicts the held-out fold.
    ``cleanlab.filter.find_label_issues`` (default ``prune_by_noise_rate``) over the collected
    records gives the flags; the score is ``1 - cleanlab.rank.get_label_quality_scores``
    (self-confidence). Hard labels are the argmax of each label row.
``spectral``
    Spectral signatures (Tran et al., 2018) with ART's ``SpectralSignatureDefense``. A network
    trained with ``train_plain`` on every record is wrapped in ART's ``PyTorchClassifier``;
    the defence reads the activations of the classifier's last named layer, which
    :class:`PenultimateNamed` makes the network's penultimate features (``net.features``).
    **It needs the expected poison share**: ``expected_pp_poison`` is set to the *true* poison
    rate of the run (ground truth a real defender does not have, so this peer is favoured), with
    ART's default ``eps_multiplier=1.5``; in every class the records whose outlier score is in
    the top ``1.5 x rate`` share are flagged. ART's report only holds the scores of the flagged
    records, and raw scores of different classes are on different scales, so the continuous
    score is recomputed from the same activations with ART's own
    ``SpectralSignatureDefense.spectral_signature_scores`` and expressed as its quantile rank
    within the record's class (in ``(0, 1]``, ties averaged): the same per-class quantile ART
    thresholds, so the flagged records are the ones ranked above ``1 - 1.5 x rate`` in their class
    (ties and interpolation aside).
``activation``
    Activation clustering (Chen et al., 2018) with ART's ``ActivationDefence`` on the same
    wrapped network, with its defaults: per class, the penultimate activations reduced to 10
    dimensions by PCA, k-means with 2 clusters, the smaller cluster flagged (``"smaller"``
    analysis). The score is ``1 - (size of the record's cluster / size of its class)`` from the
    defence's ``clusters_by_class``: flagged records score above 0.5, and the smaller their
    cluster the higher (the relative-size criterion of the paper). k-means and PCA draw from
    numpy's global random state, which is seeded with ``seed`` for the call and restored after.

Spectral and activation defences run over *all* records (the network was trained on all of
them); only the collected records' flags and scores are used.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sanitizer.metrics import detection_report, rankdata
from sanitizer.plain_training import train_plain
from sanitizer.records import Records, one_hot
from sanitizer.training import pick_device, predict_proba, resident

__all__ = ["PEERS", "run_peer", "retrain_without_flagged", "PenultimateNamed", "cleanlab_detect", "art_detect"]

PEERS = ("cleanlab", "spectral", "activation")
PIP_HINT = ("the peer defenses need their packages: pip install '.[peers]' "
            "(or: pip install cleanlab adversarial-robustness-toolbox scikit-learn)")


def _require(*modules: str) -> None:
    import importlib
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise SystemExit(f"{name} is not installed ({e}); {PIP_HINT}") from e


def run_peer(method: str, records: Records, poisoned: np.ndarray, *, epochs: float = 8.0, seed: int = 0,
             device: str = "auto", folds: int = 3) -> tuple[nn.Module, dict]:
    """Run peer ``method`` on ``records``; ``poisoned`` is the ground truth over *all* records,
    used only for the figures. Returns ``(retrained model on the CPU, det)``."""
    poisoned = np.asarray(poisoned, dtype=bool)
    if poisoned.shape != (len(records),):
        raise ValueError(f"poisoned must be a bool array of {len(records)} records, got {poisoned.shape}")
    if method == "cleanlab":
        _require("cleanlab", "sklearn")
        scores, flags = cleanlab_detect(records, epochs=epochs, seed=seed, device=device, folds=folds)
    elif method in ("spectral", "activation"):
        _require("art", "sklearn")
        model, _ = train_plain(records, epochs=epochs, seed=seed, device=device)
        scores, flags = art_detect(method, model, records, seed=seed, device=device,
                                   expected_poison=float(poisoned.mean()))
        del model
    else:
        raise SystemExit(f"unknown peer {method!r}; choose among {', '.join(PEERS)}")
    return retrain_without_flagged(records, scores, flags, poisoned, epochs=epochs, seed=seed, device=device)


def retrain_without_flagged(records: Records, scores: np.ndarray, flags: np.ndarray, poisoned: np.ndarray,
                            *, epochs: float, seed: int, device: str) -> tuple[nn.Module, dict]:
    """What every detect-then-retrain method shares: plain training on the trusted records and
    the collected records not flagged, and the detection figures of ``scores`` / ``flags`` (over
    the collected records, in their order) against ``poisoned`` (over all records)."""
    collected = np.flatnonzero(~records.trusted)
    if scores.shape != (len(collected),) or flags.shape != (len(collected),):
        raise AssertionError("a detector returned scores / flags of the wrong length")
    keep = records.trusted.copy()
    keep[collected[~flags]] = True
    model, _ = train_plain(records.subset(keep), epochs=epochs, seed=seed, device=device)
    rep = detection_report(scores, flags, poisoned[collected])
    det = {k: rep[k] for k in ("auroc", "precision", "recall", "f1")}
    det["flagged"] = int(flags.sum())
    return model, det


# --------------------------------------------------------------------------------------------
# cleanlab


def cleanlab_detect(records: Records, *, epochs: float, seed: int, device: str,
                    folds: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Scores and flags over the collected records (in their order) by confident learning on
    cross-fitted predicted probabilities (see the module docstring)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    dev = pick_device(device)
    collected = np.flatnonzero(~records.trusted)
    trusted = np.flatnonzero(records.trusted)
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(collected), dtype=np.int64)
    fold_of[rng.permutation(len(collected))] = np.arange(len(collected)) % folds
    pred_probs = np.zeros((len(collected), records.num_classes), dtype=np.float32)
    for k in range(folds):
        held = fold_of == k
        train_idx = np.sort(np.concatenate([trusted, collected[~held]]))
        model, _ = train_plain(records.subset(train_idx), epochs=epochs, seed=seed + k, device=device)
        model.to(dev)
        pred_probs[held] = predict_proba(model, resident(records.features[collected[held]], dev)).float().cpu().numpy()
        del model
    labels = records.hard_labels[collected]
    # cleanlab wants rows summing to 1 in float64-ish precision
    pred_probs = pred_probs.astype(np.float64)
    pred_probs /= pred_probs.sum(axis=1, keepdims=True)
    flags = np.asarray(find_label_issues(labels, pred_probs, n_jobs=1), dtype=bool)
    scores = 1.0 - np.asarray(get_label_quality_scores(labels, pred_probs), dtype=np.float64)
    return scores, flags


# --------------------------------------------------------------------------------------------
# ART: spectral signatures and activation clustering


class _Features(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)


class PenultimateNamed(nn.Module):
    """The same network (shared weights, same outputs) with its penultimate features as the
    *last* named child, ``penultimate``: ART's poison defences read the activations of
    ``layer_names[-1]``, and ART lists the top-level children in registration order."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.head = net.head
        self.penultimate = _Features(net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.penultimate(x))


def art_classifier(model: nn.Module, records: Records, device: str):
    """``model`` (a sanitize network, raw inputs) as ART's ``PyTorchClassifier``."""
    from art.estimators.classification import PyTorchClassifier

    dev = pick_device(device)
    wrapped = PenultimateNamed(model).eval()
    clf = PyTorchClassifier(
        model=wrapped, loss=nn.CrossEntropyLoss(), input_shape=records.input_shape,
        nb_classes=records.num_classes,
        clip_values=(0.0, 255.0) if records.modality == "image" else None,
        device_type="gpu" if dev.type == "cuda" else "cpu")
    if clf.layer_names[-1] != "penultimate":
        raise AssertionError(f"ART saw layers {clf.layer_names}; expected 'penultimate' last")
    return clf


def art_detect(method: str, model: nn.Module, records: Records, *, seed: int, device: str,
               expected_poison: float, batch_size: int = 512,
               eps_multiplier: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Scores and flags over the collected records of ART's spectral-signature
    (``method="spectral"``) or activation-clustering (``"activation"``) defence, run on all
    records with the network ``model`` trained on them."""
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense

    clf = art_classifier(model, records, device)
    x = records.features.astype(np.float32)  # ART wants numpy float inputs; raw 0..255 pixels
    hard = records.hard_labels
    y = one_hot(hard, records.num_classes)
    n = len(records)
    scores = np.zeros(n, dtype=np.float64)
    if method == "spectral":
        defence = SpectralSignatureDefense(clf, x, y, expected_pp_poison=expected_poison,
                                           batch_size=batch_size, eps_multiplier=eps_multiplier)
        _, is_clean = defence.detect_poison()
        # continuous score: quantile rank of ART's spectral score within the record's class
        acts = clf.get_activations(x, layer=len(clf.layer_names) - 1, batch_size=batch_size)
        acts = acts.reshape(n, -1)
        for c in range(records.num_classes):
            idx = np.flatnonzero(hard == c)
            if len(idx) == 0:
                continue
            s = SpectralSignatureDefense.spectral_signature_scores(acts[idx]).ravel()
            scores[idx] = rankdata(s) / len(idx)
    elif method == "activation":
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            defence = ActivationDefence(clf, x, y)
            _, is_clean = defence.detect_poison(nb_clusters=2, nb_dims=10, reduce="PCA",
                                                cluster_analysis="smaller")
        finally:
            np.random.set_state(state)
        for c, clusters in enumerate(defence.clusters_by_class):
            idx = np.flatnonzero(hard == c)
            clusters = np.asarray(clusters, dtype=np.int64)
            if len(idx) == 0 or len(clusters) == 0:
                continue
            sizes = np.bincount(clusters)
            scores[idx] = 1.0 - sizes[clusters] / len(clusters)
    else:
        raise ValueError(f"unknown ART defence {method!r}")
    flags = np.asarray(is_clean, dtype=np.int64) == 0
    collected = ~records.trusted
    return scores[collected], flags[collected]
