"""Plain training without any defense: the reference the benchmarks compare against.

``train_plain(records, epochs=...)`` trains the same network the engine would build, with the
same optimiser and schedule, on every record it is given (trusted and collected alike). Given
all records it is the *no defense* baseline; given only the truly clean ones it is the *oracle*.
"""

from __future__ import annotations

import time

import torch

from sanitizer.networks import build_network, default_spec
from sanitizer.records import Records
from sanitizer.training import TrainSet, optimise, pick_device, resident, seed_everything


def train_plain(records: Records, *, epochs: float = 8.0, batch_size: int = 256, lr: float = 1e-2,
                weight_decay: float = 5e-4, max_shift: int = 0, widths: tuple[int, ...] | None = None,
                seed: int = 0, device: str = "auto", progress=None) -> tuple[torch.nn.Module, dict]:
    """Train a fresh network on all of ``records``; returns ``(model on the CPU, timings)``."""
    t0 = time.perf_counter()
    dev = pick_device(device)
    g = seed_everything(seed)
    spec = default_spec(records.features, records.num_classes, records.modality, widths,
                        sample_rate=records.sample_rate, vocabulary_size=records.vocabulary_size)
    model = build_network(spec).to(dev)
    data = TrainSet(resident(records.features, dev), resident(records.labels, dev))
    steps = max(1, int(round(epochs * len(records) / batch_size)))
    if progress is not None:
        progress.stage("train", steps)
    t1 = time.perf_counter()
    optimise(model, data, steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
             generator=g, max_shift=max_shift if records.modality == "image" else 0,
             on_step=progress.advance if progress is not None else None)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t2 = time.perf_counter()
    return model.cpu().eval(), {"train": t2 - t1, "total": t2 - t0, "steps": steps,
                                "samples_per_s": steps * batch_size / max(1e-9, t2 - t1)}
