"""Training primitives shared by the engine and the benchmarks: device choice, data resident on
the device, GPU-side augmentation, the two losses, one optimisation loop and batched inference.

Tricks, each named where it is used:

* **resident data** -- the whole training set is copied to the device once (images stay
  ``uint8``, a quarter of the memory of ``float32``) and batches are gathered there by index, so
  there is no per-batch host-to-device copy and no DataLoader.
* **soft-label cross-entropy** -- ``-(y * log p).sum()``: hard labels are one-hot rows, confidence
  labels are any distribution, one loss for both.
* **negative learning** -- ``-(y * log(1 - p)).sum()``: "this record is *not* of its given class".
  The engine uses it on records it rejected, so that a trigger carried by rejected records is
  actively unlearned instead of merely left out (the ABL idea, bounded so it cannot diverge).
* **random translation** -- images are shifted by up to ``max_shift`` pixels on the device,
  waveforms (2-D batches) by up to ``max_shift`` samples in time; callers pass 0 for tabular rows.
* **padding trimming** -- a batch of token ids is cut after its last real token, so short
  texts padded to the data set's longest do not pay for its length (``as_input``).
* **warm-up then linear decay** of the learning rate, AdamW (fused on CUDA), bf16 autocast and
  channels_last on CUDA, TF32 matmuls.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def pick_device(name: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU (using every core)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    return device


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch and return a CPU generator for shuffles, so a CPU run is reproducible."""
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def resident(features: np.ndarray, device: torch.device) -> torch.Tensor:
    """Copy the features to the device once (images keep their ``uint8`` dtype)."""
    array = np.ascontiguousarray(features)
    if not array.flags.writeable:  # torch refuses read-only memory (e.g. zero-copy Arrow data)
        array = array.copy()
    return torch.from_numpy(array).to(device)


def as_input(batch: torch.Tensor) -> torch.Tensor:
    """A resident batch as the input the networks take: ``float32`` (pixels stay 0..255), except
    token ids, which stay integers, cut after the batch's last real token (padding trimming).

    Padding trimming: token ids are padded with 0 to the longest text in the data set, but most
    short texts (SMS: median 12 of 190 ids) leave a batch's last columns all padding, and the
    text network's convolutions would spend most of their time there. The text network gives
    every position after a text's last token no weight (zero embedding, masked max), so cutting
    the all-padding columns changes no output and halves a step on SMS."""
    if not batch.is_floating_point() and batch.dtype != torch.uint8:
        if batch.dim() == 2:
            used = batch.ne(0).any(dim=0).nonzero()
            batch = batch[:, :int(used[-1]) + 1 if len(used) else 1]
        return batch
    x = batch.float()
    if x.dim() == 4 and x.is_cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def random_translate(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by a random (dy, dx) in ``[-max_shift, max_shift]``, filling with edge
    pixels: a whole batch with one gather, no Python loop per image. A 2-D batch is waveforms
    ``(B, samples)``: each is shifted in time by up to ``max_shift`` samples, edge-filled too."""
    if max_shift <= 0 or x.dim() not in (2, 4):
        return x
    if x.dim() == 2:
        n = x.shape[1]
        shifts = torch.randint(-max_shift, max_shift + 1, (x.shape[0],), generator=generator).to(x.device)
        return x.gather(1, (torch.arange(n, device=x.device)[None, :] + shifts[:, None]).clamp_(0, n - 1))
    b, _, h, w = x.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (2, b), generator=generator).to(x.device)
    rows = (torch.arange(h, device=x.device)[None, :] + shifts[0][:, None]).clamp_(0, h - 1)
    cols = (torch.arange(w, device=x.device)[None, :] + shifts[1][:, None]).clamp_(0, w - 1)
    x = x.gather(2, rows[:, None, :, None].expand(-1, x.shape[1], -1, w))
    return x.gather(3, cols[:, None, None, :].expand(-1, x.shape[1], h, -1))


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-record cross-entropy against probability rows ``targets``."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1)


def negative_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-record negative-learning loss: push probability *away* from the given label."""
    p = F.softmax(logits.float(), dim=1)
    return -(targets * torch.log1p(-p.clamp(max=1 - 1e-6))).sum(dim=1)


@dataclass
class TrainSet:
    """Records to optimise on, resident on the device.

    ``y`` holds the training targets (probability rows). Where ``negative[i]`` is set, record
    ``i`` trains by negative learning away from ``given[i]`` -- added to its cross-entropy on
    ``y[i]`` when ``given`` is provided (relabelled *and* unlearned), instead of it otherwise."""

    x: torch.Tensor
    y: torch.Tensor
    given: torch.Tensor | None = None      # the labels negative learning pushes away from
    negative: torch.Tensor | None = None


def epoch_order(n: int, generator: torch.Generator, weights: torch.Tensor | None = None) -> torch.Tensor:
    """A shuffled order of ``range(n)``; with ``weights`` (repeat counts), records appear that
    many times."""
    if weights is None:
        return torch.randperm(n, generator=generator)
    index = torch.repeat_interleave(torch.arange(n), weights.cpu())
    return index[torch.randperm(len(index), generator=generator)]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    fused = next(model.parameters()).is_cuda
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=fused)


def lr_at(step: int, total: int, peak: float, warmup: float = 0.1) -> float:
    """Linear warm-up over the first ``warmup`` share of steps, then linear decay to zero."""
    w = max(1, int(total * warmup))
    if step < w:
        return peak * (step + 1) / w
    return peak * max(0.0, (total - step) / max(1, total - w))


def optimise(model: nn.Module, data: TrainSet, *, steps: int, batch_size: int, lr: float,
             weight_decay: float, generator: torch.Generator, max_shift: int = 0,
             repeat: torch.Tensor | None = None, on_step=None) -> float:
    """Run ``steps`` AdamW steps over ``data`` in shuffled epochs; returns the mean loss.

    Each step gathers a batch by index from the resident tensors, augments it on the device,
    and takes the per-record loss (cross-entropy, or negative learning where
    ``data.negative`` says so)."""
    device = data.x.device
    model.train()
    opt = make_optimizer(model, lr, weight_decay)
    order = epoch_order(len(data.x), generator, repeat)
    pos, total = 0, 0.0
    bs = max(1, min(batch_size, len(order)))
    use_bf16 = device.type == "cuda"
    for step in range(steps):
        if pos + bs > len(order):
            order, pos = epoch_order(len(data.x), generator, repeat), 0
        idx = order[pos:pos + bs].to(device, non_blocking=True)
        pos += bs
        x = random_translate(as_input(data.x[idx]), max_shift, generator)
        y = data.y[idx]
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(x)
        loss = soft_cross_entropy(logits, y)
        if data.negative is not None:
            neg = data.negative[idx]
            given = data.given[idx] if data.given is not None else y
            away = negative_cross_entropy(logits, given)
            loss = torch.where(neg, loss + away if data.given is not None else away, loss)
        loss = loss.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach()) if step % 50 == 0 or step == steps - 1 else 0.0
        if on_step is not None:
            on_step()
    model.eval()
    return total / max(1, math.ceil(steps / 50))


def _batched(model: nn.Module, x: torch.Tensor, batch_size: int | None, output) -> torch.Tensor:
    """``output(model, batch)`` for every record, in large batches (16384 on a GPU; 512 on a
    CPU, where a smaller batch stays in cache), in eval mode, bf16 autocast on CUDA."""
    model.eval()
    device = x.device
    batch_size = batch_size or (16384 if device.type == "cuda" else 512)
    out = []
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for i in range(0, len(x), batch_size):
            out.append(output(model, as_input(x[i:i + batch_size])).float())
    return torch.cat(out) if out else torch.zeros((0, 0), device=device)


@torch.inference_mode()
def predict_proba(model: nn.Module, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Softmax probabilities for every record, in large batches, in inference mode."""
    return _batched(model, x, batch_size, lambda m, b: F.softmax(m(b).float(), dim=1))


@torch.inference_mode()
def embed(model: nn.Module, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Unit-length feature vectors (the network's ``features``, the layer under its classifier)
    for every record, batched as :func:`predict_proba` is: the space in which the engine finds
    each record's look-alikes by cosine similarity."""
    return F.normalize(_batched(model, x, batch_size, lambda m, b: m.features(b)), dim=1)
