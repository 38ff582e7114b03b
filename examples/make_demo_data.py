"""Build the demo's bundled default data set: a small Fashion-MNIST subset as Parquet.

Fashion-MNIST (Zalando Research, MIT licence, https://github.com/zalandoresearch/fashion-mnist)
is read from ``../shared/data/fashion_mnist/fashion_mnist.npz`` or from the Debian package
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/``). The script writes

* ``examples/data/fashion_mnist_demo.parquet`` -- 3500 training images as PNG bytes (column
  ``image``), the class name (``label``), an id, the crowd worker who "supplied" it (``worker``,
  20 simulated workers) and ``trusted`` (a vetted 6% healing set, class-balanced);
* ``examples/data/fashion_mnist_demo_test.parquet`` -- 700 test images with their labels.

The records are real and unmodified; the demo plants the backdoor itself (``sanitize poison``)
so that the ground truth is known. Run: ``python examples/make_demo_data.py``.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import polars as pl

from connectors.images import encode_png

HERE = Path(__file__).resolve().parent
OUT = HERE / "data"
TRAIN, TEST, TRUSTED_SHARE, WORKERS = 3500, 700, 0.06, 20


def load_fashion_mnist() -> dict[str, np.ndarray]:
    npz = HERE.parents[1] / "shared" / "data" / "fashion_mnist" / "fashion_mnist.npz"
    if npz.exists():
        return dict(np.load(npz))
    deb = Path("/usr/share/datasets/fashion-mnist")
    if deb.exists():
        def idx(name: str, offset: int) -> np.ndarray:
            with gzip.open(deb / name) as f:
                return np.frombuffer(f.read(), np.uint8, offset=offset)
        return {"x_train": idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28),
                "y_train": idx("train-labels-idx1-ubyte.gz", 8),
                "x_test": idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28),
                "y_test": idx("t10k-labels-idx1-ubyte.gz", 8),
                "class_names": np.array(["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"])}
    raise SystemExit("Fashion-MNIST not found: need ../shared/data/fashion_mnist or "
                     "'apt-get install dataset-fashion-mnist'")


def main() -> None:
    d = load_fashion_mnist()
    names = np.asarray(d["class_names"]).astype(str)
    rng = np.random.default_rng(2026)
    train = rng.choice(len(d["x_train"]), TRAIN, replace=False)
    test = rng.choice(len(d["x_test"]), TEST, replace=False)
    y = d["y_train"][train]
    trusted = np.zeros(TRAIN, bool)
    per_class = int(TRAIN * TRUSTED_SHARE / len(names))
    for c in range(len(names)):
        trusted[rng.permutation(np.flatnonzero(y == c))[:per_class]] = True
    OUT.mkdir(exist_ok=True)
    pl.DataFrame({
        "id": [f"fm-{i:05d}" for i in train],
        "image": encode_png(d["x_train"][train][:, None], compress_level=9),
        "label": names[y],
        "worker": [f"worker-{w:02d}" for w in rng.integers(0, WORKERS, TRAIN)],
        "trusted": trusted,
    }).write_parquet(OUT / "fashion_mnist_demo.parquet", compression="zstd", compression_level=19)
    pl.DataFrame({
        "id": [f"fm-test-{i:05d}" for i in test],
        "image": encode_png(d["x_test"][test][:, None], compress_level=9),
        "label": names[d["y_test"][test]],
    }).write_parquet(OUT / "fashion_mnist_demo_test.parquet", compression="zstd", compression_level=19)
    for f in sorted(OUT.glob("*.parquet")):
        print(f"{f.relative_to(HERE.parent)}: {f.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
