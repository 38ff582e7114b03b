"""The in-memory dataset every part of sanitize passes around: :class:`Records`.

A dataset is a set of *records*. Each record has

* ``features`` -- one row of an array, by ``modality``:

  ========== ============================== ===============================================
  modality   dtype and shape                what a row is
  ========== ============================== ===============================================
  image      ``uint8`` ``(N, C, H, W)``     pixels 0..255, channels first
  tabular    ``float32`` ``(N, F)``         raw feature values
  audio      ``float32`` ``(N, S)``         a mono waveform in [-1, 1] at ``sample_rate`` Hz,
                                            padded or cropped to ``S`` samples
  text       ``object`` ``(N,)`` of ``str``  the normalised text, as read and as poisoned; or
             or ``int64`` ``(N, L)``        token ids (0 = padding) once a tokenizer has
                                            encoded it for training (``vocabulary_size`` set)
  ========== ============================== ===============================================

  Text as token ids may also carry ``token_sets``: each *whole* text's distinct token ids
  ``(N, U)``, 0-padded. ``features`` holds only the ``L`` tokens the network reads (long texts
  are truncated); a word count (the engine's planted-word test) reads the whole text.

* ``labels`` -- a probability vector over the classes, shape ``(N, K)``, ``float32``, rows summing
  to 1. A hard label is a one-hot row; a "confidence" label (the HaS-Nets threat model) is any
  other distribution, such as 0.64 on one class and the rest spread over the others.
* ``ids`` -- a unique string per record, stable across runs.
* ``contributors`` -- who supplied the record (a worker, vendor or upload source), or ``None``.
* ``trusted`` -- ``True`` for the small vetted "healing" set, ``False`` for collected records.

Nothing here reads or writes files: ``connectors`` turns Parquet/CSV/audio folders into
``Records`` and back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# A trusted set is *class-skewed* when its commonest class has more than this many times the
# rarest's records: ingest warns, and the engine heals its judging network on a balanced core.
TRUSTED_SKEW = 3.0


def class_skewed(counts: np.ndarray, skew: float = TRUSTED_SKEW) -> bool:
    """Whether per-class record counts are class-skewed: the commonest class has more than
    ``skew`` times the records of the rarest class present (classes with no record are left out)."""
    counts = np.asarray(counts)
    present = counts[counts > 0]
    return bool(len(present) and present.max() > skew * present.min())

MODALITIES = ("image", "tabular", "audio", "text")


@dataclass
class Records:
    features: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    trusted: np.ndarray
    class_names: list[str]
    modality: str
    contributors: np.ndarray | None = None
    feature_names: list[str] = field(default_factory=list)
    sample_rate: int | None = None  # audio: samples per second of every waveform
    vocabulary_size: int | None = None  # text as token ids: ids are 0 .. vocabulary_size - 1
    token_sets: np.ndarray | None = None  # text as token ids: each whole text's distinct ids (N, U)

    def __post_init__(self) -> None:
        n = len(self.features)
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        if self.labels.shape != (n, len(self.class_names)):
            raise ValueError(
                f"labels must have shape ({n}, {len(self.class_names)}), got {self.labels.shape}"
            )
        for name in ("ids", "trusted"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows, features has {n}")
        if self.contributors is not None and len(self.contributors) != n:
            raise ValueError(f"contributors has {len(self.contributors)} rows, features has {n}")
        if self.token_sets is not None and len(self.token_sets) != n:
            raise ValueError(f"token_sets has {len(self.token_sets)} rows, features has {n}")
        if self.modality == "audio" and not self.sample_rate:
            raise ValueError("audio records need a sample_rate")
        self.trusted = np.asarray(self.trusted, dtype=bool)
        self.labels = np.asarray(self.labels, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.features)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one record's features, e.g. ``(1, 28, 28)`` or ``(30,)``."""
        return tuple(self.features.shape[1:])

    @property
    def hard_labels(self) -> np.ndarray:
        """The most probable class of each record's label, shape ``(N,)``."""
        return self.labels.argmax(axis=1)

    @property
    def soft(self) -> np.ndarray:
        """``True`` where a record's label is not one-hot (a confidence label)."""
        return self.labels.max(axis=1) < 1.0 - 1e-6

    def subset(self, index: np.ndarray) -> "Records":
        """The records at ``index`` (a boolean mask or integer positions), as new ``Records``."""
        return Records(
            features=self.features[index],
            labels=self.labels[index],
            ids=self.ids[index],
            trusted=self.trusted[index],
            class_names=list(self.class_names),
            modality=self.modality,
            contributors=None if self.contributors is None else self.contributors[index],
            feature_names=list(self.feature_names),
            sample_rate=self.sample_rate,
            vocabulary_size=self.vocabulary_size,
            token_sets=None if self.token_sets is None else self.token_sets[index],
        )

    def with_features(self, features: np.ndarray, vocabulary_size: int | None = None,
                      token_sets: np.ndarray | None = None) -> "Records":
        """The same records with other features (e.g. texts replaced by their token ids, and
        with ``token_sets`` each whole text's distinct ids). Token sets are kept only when the
        vocabulary is: new ids make the old sets meaningless."""
        if token_sets is None and vocabulary_size in (None, self.vocabulary_size):
            token_sets = self.token_sets
        return Records(features=features, labels=self.labels, ids=self.ids, trusted=self.trusted,
                       class_names=list(self.class_names), modality=self.modality,
                       contributors=self.contributors, feature_names=list(self.feature_names),
                       sample_rate=self.sample_rate,
                       vocabulary_size=vocabulary_size or self.vocabulary_size,
                       token_sets=token_sets)

    @property
    def collected(self) -> "Records":
        return self.subset(~self.trusted)

    @property
    def trusted_set(self) -> "Records":
        return self.subset(self.trusted)


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Integer class indices ``(N,)`` as one-hot probability rows ``(N, K)`` of ``float32``."""
    out = np.zeros((len(labels), num_classes), dtype=np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def concat(parts: list[Records]) -> Records:
    """Stack several ``Records`` with the same classes and modality into one."""
    first = parts[0]
    contributors = None
    if any(p.contributors is not None for p in parts):
        contributors = np.concatenate(
            [p.contributors if p.contributors is not None else np.full(len(p), None, dtype=object)
             for p in parts]
        )
    token_sets = None
    if all(p.token_sets is not None for p in parts):  # 0-padded to the widest part
        width = max(p.token_sets.shape[1] for p in parts)
        token_sets = np.concatenate([np.pad(p.token_sets, ((0, 0), (0, width - p.token_sets.shape[1])))
                                     for p in parts])
    return Records(
        features=np.concatenate([p.features for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        ids=np.concatenate([p.ids for p in parts]),
        trusted=np.concatenate([p.trusted for p in parts]),
        class_names=list(first.class_names),
        modality=first.modality,
        contributors=contributors,
        feature_names=list(first.feature_names),
        sample_rate=first.sample_rate,
        vocabulary_size=first.vocabulary_size,
        token_sets=token_sets,
    )
