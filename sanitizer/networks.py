"""Networks sized by the data, one per modality, each taking *raw* inputs:

============ ============== ===================================================================
modality     network        input
============ ============== ===================================================================
image        ``ImageCNN``   ``float32`` pixel values 0..255, ``(N, C, H, W)``
tabular      ``MLP``        ``float32`` features ``(N, F)``
audio        ``AudioCNN``   ``float32`` waveforms in [-1, 1] at the dataset's rate, ``(N, S)``
text         ``TextCNN``    ``int64`` token ids ``(N, L)``, 0 = padding
============ ============== ===================================================================

Normalisation happens inside the network (``Standardize``), and for audio so does the log-mel
front end (``LogMel``, torchaudio's ``MelSpectrogram``), computed on the training device batch
by batch. The statistics are buffers of the model, so the ONNX export and ``sanitize predict``
need no preprocessing code of their own (text needs only its tokenizer, stored with the run).

``build_network(spec)`` builds either from a :class:`NetworkSpec`, which is plain data and is
stored in every run folder, so a model can be rebuilt from its weights and spec alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torchaudio
from torch import nn


@dataclass
class NetworkSpec:
    """Everything needed to rebuild a network: kind, input shape, classes and widths."""

    kind: str  # "cnn" | "mlp" | "audio-cnn" | "text-cnn"
    input_shape: tuple[int, ...]
    num_classes: int
    widths: tuple[int, ...] = ()
    mean: list[float] = field(default_factory=list)  # per channel, feature or mel band
    std: list[float] = field(default_factory=list)
    sample_rate: int | None = None  # audio
    vocabulary_size: int | None = None  # text
    embedding_dim: int = 64  # text

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

    def __init__(self, mean: list[float], std: list[float], image: bool = False,
                 sequence: bool = False):
        super().__init__()
        shape = (1, -1, 1, 1) if image else (1, -1, 1) if sequence else (1, -1)
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


def pooled_blocks(block, c_in: int, size: int, widths) -> tuple[nn.Sequential, int]:
    """One ``block(c_in, width, pool)`` per width, pooling (halving ``size``, the map side or the
    number of frames) while it is still >= 8; returns the stack and its output channels."""
    blocks = []
    for width in widths:
        pool = size >= 8
        blocks.append(block(c_in, width, pool))
        size = size // 2 if pool else size
        c_in = width
    return nn.Sequential(*blocks), c_in


class ImageCNN(nn.Module):
    """A small VGG-style CNN: one conv block per width, pooling while the map is >= 8 px,
    global average pooling, then a linear classifier. ``features(x)`` returns the penultimate
    activations (used by peers such as spectral signatures)."""

    def __init__(self, spec: NetworkSpec):
        super().__init__()
        c, h, w = spec.input_shape
        self.standardize = Standardize(spec.mean, spec.std, image=True)
        self.body, c_out = pooled_blocks(conv_block, c, min(h, w), spec.widths)
        self.head = nn.Linear(c_out, spec.num_classes)

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


def mel_settings(sample_rate: int) -> dict:
    """The log-mel front end for a sample rate: 25 ms windows every 10 ms (the speech
    recognition standard), 40 mel bands up to 8 kHz audio and 64 above."""
    win = round(0.025 * sample_rate)
    return {"sample_rate": sample_rate, "n_fft": 1 << (win - 1).bit_length(), "win_length": win,
            "hop_length": round(0.010 * sample_rate), "n_mels": 40 if sample_rate <= 16000 else 64}


class LogMel(nn.Module):
    """Waveforms ``(N, S)`` -> log-mel spectrograms ``(N, n_mels, frames)``, with torchaudio's
    ``MelSpectrogram`` (exported to ONNX with the rest of the network)."""

    def __init__(self, sample_rate: int):
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(**mel_settings(sample_rate))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(self.mel(x.float()) + 1e-6)


def conv1d_block(c_in: int, c_out: int, pool: bool, kernel: int = 3) -> nn.Sequential:
    """1D version of :func:`conv_block`: conv over time -> batch norm -> ReLU (-> max-pool)."""
    layers: list[nn.Module] = [
        nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm1d(c_out),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool1d(2))
    return nn.Sequential(*layers)


class AudioCNN(nn.Module):
    """Log-mel front end, per-band standardisation, then a 1D CNN over time with the mel bands
    as channels (the HaS-Nets paper's audio model is a 1D CNN), pooling while the sequence is
    >= 8 frames, global average pooling, a linear classifier."""

    def __init__(self, spec: NetworkSpec):
        super().__init__()
        self.frontend = LogMel(spec.sample_rate)
        self.standardize = Standardize(spec.mean, spec.std, sequence=True)
        mel = mel_settings(spec.sample_rate)
        frames = spec.input_shape[0] // mel["hop_length"] + 1
        self.body, c_out = pooled_blocks(conv1d_block, mel["n_mels"], frames, spec.widths)
        self.head = nn.Linear(c_out, spec.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.standardize(self.frontend(x))).mean(dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class TextCNN(nn.Module):
    """Token embedding, one 1D convolution per width over word windows of 3, ReLU, max over
    the tokens that are not padding, a linear classifier (Kim, 2014, one filter size). Max
    pooling over time lets one trigger word anywhere in a long text light up a filter, as real
    keywords do."""

    def __init__(self, spec: NetworkSpec):
        super().__init__()
        self.embed = nn.Embedding(spec.vocabulary_size, spec.embedding_dim, padding_idx=0)
        convs, c_in = [], spec.embedding_dim
        for width in spec.widths:
            convs += [nn.Conv1d(c_in, width, 3, padding=1), nn.ReLU(inplace=True)]
            c_in = width
        self.body = nn.Sequential(*convs)
        self.head = nn.Linear(c_in, spec.num_classes)

    def features(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.body(self.embed(ids).transpose(1, 2))  # (N, width, L), >= 0 after the ReLU
        real = (ids > 0).unsqueeze(1).to(h.dtype)  # padding positions count as 0
        return (h * real).amax(dim=2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(ids))


def _log_mel_statistics(features: np.ndarray, sample_rate: int) -> tuple[list[float], list[float]]:
    """Mean and spread of each log-mel band over (a slice of) the training waveforms."""
    frontend = LogMel(sample_rate)
    with torch.no_grad():
        mels = torch.cat([frontend(torch.from_numpy(np.array(features[i:i + 512], np.float32)))
                          for i in range(0, min(len(features), 4096), 512)])
    return mels.mean(dim=(0, 2)).tolist(), (mels.std(dim=(0, 2)) + 1e-3).tolist()


def default_spec(features: np.ndarray, num_classes: int, modality: str,
                 widths: tuple[int, ...] | None = None, *, sample_rate: int | None = None,
                 vocabulary_size: int | None = None) -> NetworkSpec:
    """Choose the network for the data: a CNN for images (three blocks of 32/64/128 channels,
    two for maps under 16 px), an MLP with two hidden layers for tabular records, a 1D CNN of
    64/128/128 channels over log-mel frames for audio (needs ``sample_rate``) and a text CNN of
    128 filters over 64-dimensional embeddings (needs ``vocabulary_size``). Normalisation
    statistics are measured on ``features`` (pass the training records)."""
    if modality == "audio":
        if not sample_rate:
            raise ValueError("audio networks need the sample rate")
        mean, std = _log_mel_statistics(features, sample_rate)
        return NetworkSpec("audio-cnn", (features.shape[1],), num_classes,
                           tuple(widths or (64, 128, 128)), mean, std, sample_rate=sample_rate)
    if modality == "text":
        if not vocabulary_size or features.dtype.kind not in "iu":
            raise ValueError("text networks take token ids: encode the texts with a tokenizer")
        return NetworkSpec("text-cnn", (features.shape[1],), num_classes, tuple(widths or (128,)),
                           vocabulary_size=vocabulary_size)
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
    if spec.kind == "audio-cnn":
        return AudioCNN(spec)
    if spec.kind == "text-cnn":
        return TextCNN(spec)
    raise ValueError(f"unknown network kind {spec.kind!r}")
