"""Networks sized by the data: a small 2D CNN for images and an MLP for tabular records.

Both take *raw* inputs, exactly what a user's table holds, and normalise inside the network
(``Standardize``): images as ``float32`` pixel values 0..255 of shape ``(N, C, H, W)``, tabular
records as ``float32`` features ``(N, F)``. The statistics are buffers of the model, so the
ONNX export and ``sanitize predict`` need no preprocessing code of their own.

``build_network(spec)`` builds either from a :class:`NetworkSpec`, which is plain data and is
stored in every run folder, so a model can be rebuilt from its weights and spec alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn


@dataclass
class NetworkSpec:
    """Everything needed to rebuild a network: kind, input shape, classes and widths."""

    kind: str  # "cnn" | "mlp"
    input_shape: tuple[int, ...]
    num_classes: int
    widths: tuple[int, ...] = ()
    mean: list[float] = field(default_factory=list)  # per channel (images) or per feature
    std: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "NetworkSpec":
        d = dict(d)
        d["input_shape"] = tuple(d["input_shape"])
        d["widths"] = tuple(d["widths"])
        return cls(**d)


class Standardize(nn.Module):
    """``(x - mean) / std`` with the statistics stored as buffers (broadcast per channel)."""

    def __init__(self, mean: list[float], std: list[float], image: bool):
        super().__init__()
        shape = (1, -1, 1, 1) if image else (1, -1)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(shape))
        self.register_buffer("inv_std", 1.0 / torch.tensor(std, dtype=torch.float32).reshape(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.inv_std


def conv_block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    """3x3 conv -> batch norm -> ReLU, then 2x2 max-pool when the map is still large."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class ImageCNN(nn.Module):
    """A small VGG-style CNN: one conv block per width, pooling while the map is >= 8 px,
    global average pooling, then a linear classifier. ``features(x)`` returns the penultimate
    activations (used by peers such as spectral signatures)."""

    def __init__(self, spec: NetworkSpec):
        super().__init__()
        c, h, w = spec.input_shape
        self.standardize = Standardize(spec.mean, spec.std, image=True)
        blocks, size, c_in = [], min(h, w), c
        for width in spec.widths:
            pool = size >= 8
            blocks.append(conv_block(c_in, width, pool))
            size = size // 2 if pool else size
            c_in = width
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(c_in, spec.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.standardize(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MLP(nn.Module):
    """Standardise, then ``Linear -> ReLU`` per hidden width, then a linear classifier."""

    def __init__(self, spec: NetworkSpec):
        super().__init__()
        (f,) = spec.input_shape
        self.standardize = Standardize(spec.mean, spec.std, image=False)
        layers: list[nn.Module] = []
        d_in = f
        for width in spec.widths:
            layers += [nn.Linear(d_in, width), nn.ReLU(inplace=True)]
            d_in = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d_in, spec.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.standardize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def default_spec(features: np.ndarray, num_classes: int, modality: str,
                 widths: tuple[int, ...] | None = None) -> NetworkSpec:
    """Choose the network for the data: a CNN for images (three blocks of 32/64/128 channels,
    two for maps under 16 px), an MLP with two hidden layers for tabular records. Normalisation
    statistics are measured on ``features`` (pass the training records)."""
    if modality == "image":
        _, c, h, w = features.shape
        if widths is None:
            if min(h, w) < 16:
                widths = (32, 64)
            else:
                widths = (16, 32, 64) if c == 1 else (32, 64, 128)
        sample = features[:20000].astype(np.float32)  # statistics from a slice: no full copy
        mean = sample.mean(axis=(0, 2, 3)).tolist()
        std = (sample.std(axis=(0, 2, 3)) + 1e-3).tolist()
        return NetworkSpec("cnn", (c, h, w), num_classes, tuple(widths), mean, std)
    if widths is None:
        widths = (128, 128)
    x = features.astype(np.float32, copy=False)
    mean = x.mean(axis=0).tolist()
    std = (x.std(axis=0) + 1e-6).tolist()
    return NetworkSpec("mlp", (x.shape[1],), num_classes, tuple(widths), mean, std)


def build_network(spec: NetworkSpec) -> nn.Module:
    if spec.kind == "cnn":
        return ImageCNN(spec)
    if spec.kind == "mlp":
        return MLP(spec)
    raise ValueError(f"unknown network kind {spec.kind!r}")
