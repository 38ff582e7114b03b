"""The heal-and-select engine (HaS-Nets, arXiv 2012.07474), as sanitize ships it.

The collected records may be poisoned: a few carry a hidden trigger and a chosen (possibly soft,
"low-confidence") label. A small *trusted* set is clean. The engine never lets a network that
selects records learn from records it has not vetted, and it makes the served network unlearn
whatever trigger the rejected records carry.

The loop, with every knob in :class:`HealSelectConfig`:

1. **Seed heal.** Train the network from scratch on the trusted set alone. It cannot know any
   trigger, so it is a fair judge of the collected records.
2. **Fast-learning probe** (``probe_epochs``). Train a second network briefly on *all* records.
   Backdoors are shortcuts: a network learns poisoned records long before hard clean ones
   (the ABL observation), so after one pass the probe already agrees with poisoned labels.
3. For each iteration:

   a. **Score.** Each collected record gets a *suspicion* in [0, 1]: how much the healed network
      disagrees with its given label (``1 - agreement``), sharpened by how readily the probe
      agrees with it (see :func:`sanitizer.scoring.suspicion`).
   b. **Select.** Records with suspicion below ``threshold`` are accepted; the rest are rejected.
   c. **Train** on trusted + accepted records with their labels (soft-label cross-entropy, the
      trusted set oversampled ``trusted_weight`` times) and, with ``unlearn``, on the rejected
      records with *negative learning* (their given label is pushed down), which erases the
      trigger-to-label link a few leaked poisoned records would otherwise implant.
   d. **Heal.** Fine-tune on the trusted set at a small learning rate.

4. The served model is the last healed network; the last scores are the report's scores, and
   every iteration's scores and selections are kept as the record's trajectory.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np
import torch

from sanitizer.networks import NetworkSpec, build_network, default_spec
from sanitizer.records import Records
from sanitizer.scoring import agreement, suspicion
from sanitizer.training import (TrainSet, optimise, pick_device, predict_proba, resident,
                                seed_everything)


@dataclass
class HealSelectConfig:
    """Every knob of the engine, with defaults that work across the bundled data sets."""

    iterations: int = 2
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 5e-4
    seed_steps: int = 400         # steps of the first heal (from scratch, trusted set only)
    heal_steps: int = 60          # steps of each later heal
    heal_lr: float = 1e-3
    train_epochs: float = 2.0     # passes over the collected records per iteration
    probe_epochs: float = 1.0     # passes of the fast-learning probe; 0 turns it off
    trusted_weight: int = 4       # how many times the trusted set is repeated in training
    threshold: float = 0.5        # accept records whose suspicion is below this
    rejected: str = "relabel"     # what rejected records train on: relabel | unlearn | drop
    max_shift: int = 2            # random translation of images, in pixels
    widths: tuple[int, ...] | None = None
    seed: int = 0
    device: str = "auto"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "HealSelectConfig":
        d = dict(d)
        if d.get("widths") is not None:
            d["widths"] = tuple(d["widths"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class Progress(Protocol):
    """What the engine reports while it runs (the CLI draws it with rich)."""

    def stage(self, name: str, total: int) -> None: ...
    def advance(self) -> None: ...


class _Silent:
    def stage(self, name: str, total: int) -> None:
        pass

    def advance(self) -> None:
        pass


@dataclass
class HealSelectResult:
    """What a run produces. Arrays over records are aligned with ``collected_index``."""

    model: torch.nn.Module
    spec: NetworkSpec
    config: HealSelectConfig
    collected_index: np.ndarray        # positions of the collected records in the input
    scores: np.ndarray                 # final suspicion per collected record, 1 = most suspect
    score_history: np.ndarray          # (iterations + 1, n_collected) suspicion at each scoring
    selected_history: np.ndarray       # (iterations, n_collected) accepted in each iteration
    probs: np.ndarray                  # (n_collected, K) final healed network's probabilities
    probe_agreement: np.ndarray | None
    timings: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


def steps_for(epochs: float, n: int, batch_size: int) -> int:
    return max(1, math.ceil(epochs * n / batch_size))


def heal_and_select(records: Records, config: HealSelectConfig | None = None,
                    progress: Progress | None = None) -> HealSelectResult:
    """Train a hardened network on ``records`` and score every collected record.

    ``records.trusted`` marks the healing set; everything else is treated as possibly
    poisoned. Returns a :class:`HealSelectResult`.
    """
    config = config or HealSelectConfig()
    progress = progress or _Silent()
    if not records.trusted.any():
        raise ValueError("heal-and-select needs at least one trusted record")
    t_start = time.perf_counter()
    device = pick_device(config.device)
    g = seed_everything(config.seed)

    spec = default_spec(records.features, records.num_classes, records.modality, config.widths)
    x = resident(records.features, device)
    y = torch.from_numpy(records.labels).to(device)
    trusted = torch.from_numpy(records.trusted).to(device)
    collected_index = np.flatnonzero(~records.trusted)
    c_idx = torch.from_numpy(collected_index).to(device)
    t_idx = torch.from_numpy(np.flatnonzero(records.trusted)).to(device)
    y_c = y[c_idx]
    max_shift = config.max_shift if records.modality == "image" else 0
    trusted_set = TrainSet(x[t_idx], y[t_idx])
    trusted_bs = max(8, min(config.batch_size, len(t_idx) // 4))
    timings: dict[str, float] = {"to_device": time.perf_counter() - t_start}

    def run(stage: str, model, data, steps, lr, bs, repeat=None):
        t0 = time.perf_counter()
        progress.stage(stage, steps)
        optimise(model, data, steps=steps, batch_size=bs, lr=lr, weight_decay=config.weight_decay,
                 generator=g, max_shift=max_shift, repeat=repeat, on_step=progress.advance)
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0

    # 1. seed heal: trusted set only
    model = build_network(spec).to(device)
    run("heal", model, trusted_set, config.seed_steps, config.lr, trusted_bs)

    # 2. fast-learning probe on everything
    probe_agree = None
    if config.probe_epochs > 0:
        probe = build_network(spec).to(device)
        run("probe", probe, TrainSet(x, y), steps_for(config.probe_epochs, len(x), config.batch_size),
            config.lr, config.batch_size)
        t0 = time.perf_counter()
        probe_agree = agreement(predict_proba(probe, x[c_idx]), y_c)
        timings["score"] = time.perf_counter() - t0
        del probe

    def score(model) -> tuple[torch.Tensor, torch.Tensor]:
        t0 = time.perf_counter()
        probs = predict_proba(model, x[c_idx])
        s = suspicion(agreement(probs, y_c), probs.max(1).values, probe_agree)
        timings["score"] = timings.get("score", 0.0) + time.perf_counter() - t0
        return s, probs

    score_hist, selected_hist = [], []
    repeat = torch.where(trusted, config.trusted_weight, 1).cpu()
    for _ in range(config.iterations):
        s, probs = score(model)
        score_hist.append(s)
        accepted = s < config.threshold
        selected_hist.append(accepted)
        # 3c. train on trusted + accepted (their labels) + rejected (relabelled, unlearned or left out)
        targets = y.clone()
        use = trusted.clone()
        use[c_idx] = accepted | (config.rejected != "drop")
        negative = torch.zeros_like(trusted)
        if config.rejected in ("relabel", "both"):
            targets[c_idx[~accepted]] = probs[~accepted]
        if config.rejected in ("unlearn", "both"):
            negative[c_idx] = ~accepted
        keep = torch.nonzero(use).squeeze(1)
        data = TrainSet(x[keep], targets[keep], y[keep], negative[keep] if config.rejected in ("unlearn", "both") else None)
        n_c = int(use[c_idx].sum())
        run("train", model, data, steps_for(config.train_epochs, n_c, config.batch_size),
            config.lr, config.batch_size, repeat=repeat[keep.cpu()])
        # 3d. heal on the trusted set
        run("heal", model, trusted_set, config.heal_steps, config.heal_lr, trusted_bs)

    s, probs = score(model)
    score_hist.append(s)
    t_probs = predict_proba(model, x[t_idx])
    metrics = {
        "trusted_accuracy": float((t_probs.argmax(1) == y[t_idx].argmax(1)).float().mean()),
        "collected_agreement": float((probs.argmax(1) == y_c.argmax(1)).float().mean()),
        "accepted_last_iteration": int(selected_hist[-1].sum()) if selected_hist else 0,
    }
    timings["total"] = time.perf_counter() - t_start
    model = model.cpu().eval()
    return HealSelectResult(
        model=model, spec=spec, config=config, collected_index=collected_index,
        scores=s.cpu().numpy(),
        score_history=torch.stack(score_hist).cpu().numpy(),
        selected_history=(torch.stack(selected_hist).cpu().numpy() if selected_hist
                          else np.zeros((0, len(collected_index)), dtype=bool)),
        probs=probs.cpu().numpy(),
        probe_agreement=None if probe_agree is None else probe_agree.cpu().numpy(),
        timings=timings, metrics=metrics,
    )
