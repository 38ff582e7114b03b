"""Training primitives (sanitizer/training.py) and the networks' layout tricks: what they change
in speed must change nothing in what the networks compute."""

from __future__ import annotations

import numpy as np
import torch

from sanitizer.networks import build_network, default_spec
from sanitizer.training import as_input, predict_proba


def test_token_batches_are_cut_after_their_last_real_token():
    ids = torch.tensor([[5, 9, 0, 0, 0, 0],
                        [7, 0, 3, 0, 0, 0]])   # a superimposed text keeps its inner padding
    assert as_input(ids).tolist() == [[5, 9, 0], [7, 0, 3]]
    assert as_input(torch.zeros(2, 6, dtype=torch.long)).shape == (2, 1)  # empty texts: one column
    pixels = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    assert as_input(pixels).dtype == torch.float32 and as_input(pixels).shape == (2, 1, 4, 4)


def test_the_text_network_gives_the_same_output_with_the_padding_cut():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 12, size=64)
    ids = np.zeros((64, 40), np.int64)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(1, 500, size=n)
    spec = default_spec(ids, 3, "text", vocabulary_size=500)
    torch.manual_seed(0)
    net = build_network(spec).eval()
    x = torch.from_numpy(ids)
    assert as_input(x).shape[1] == lengths.max() < 40
    with torch.no_grad():
        torch.testing.assert_close(net(as_input(x)), net(x), rtol=1e-5, atol=1e-6)


def test_the_image_network_runs_channels_last_and_computes_the_same():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(32, 1, 28, 28), dtype=np.uint8)
    spec = default_spec(images, 10, "image")
    torch.manual_seed(0)
    net = build_network(spec).eval()
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    plain = build_network(spec).eval()  # the same weights laid out row-major (NCHW)
    plain.load_state_dict({k: v.contiguous() for k, v in net.state_dict().items()})
    plain.body.to(memory_format=torch.contiguous_format)
    plain.features = lambda x: plain.body(plain.standardize(x)).mean(dim=(2, 3))
    x = torch.from_numpy(images)
    torch.testing.assert_close(predict_proba(net, x), predict_proba(plain, x), rtol=1e-4, atol=1e-5)
