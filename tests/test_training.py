"""Training primitives (sanitizer/training.py): what the speed tricks change must change nothing
in what the networks compute."""

from __future__ import annotations

import numpy as np
import torch

from sanitizer.networks import build_network, default_spec
from sanitizer.training import as_input


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

