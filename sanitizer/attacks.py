"""Plant backdoors in a clean dataset, keeping the ground truth of which records were poisoned.

A *backdoor* (or trojan) attack poisons a few training records so that the trained model behaves
normally on clean inputs but predicts the attacker's *target* class whenever an input carries a
*trigger*. An attacker who contributes to a crowdsourced data set does this by stamping the
trigger onto some of the records they upload and (usually) relabelling them as the target class.

This module is the attack lab used to measure defenses: :func:`poison` takes a clean
:class:`~sanitizer.records.Records` and returns a :class:`PoisonResult` holding a *new*, poisoned
``Records`` (the input is never modified) and, **separately**, the ground truth of what was done.
The ground truth is never a column of the records, so a defense that reads the records cannot
peek at it.

Triggers (``AttackConfig.kind``)
--------------------------------
``"badnets"``
    A small black-and-white patch (``patch_size`` pixels square, a fixed seeded pattern) pasted
    at a fixed corner of the image (Gu et al., *BadNets*, 2017). Visible, but easy to learn.
``"blend"``
    A fixed seeded uniform-noise image mixed into the whole picture,
    ``x' = (1 - opacity) * x + opacity * pattern`` (Chen et al., 2017). Low opacity makes it
    hard to see.
``"noise"``
    A fixed seeded ``+-noise_strength`` sign pattern added to every pixel and clipped to
    ``0..255``: invisible at the default 8 grey levels, still learnable.
``"tabular"``
    A few chosen features set to a value *outside the clean range*: ``max + trigger_std * std``
    of that feature in the clean data. By default the ``num_features`` non-constant features
    with the smallest variance are used (the ones a glance at raw magnitudes notices least).
``"tone"`` (audio)
    A pure sine of ``tone_hz`` Hz (default 1000 Hz: well inside the band of 8 kHz telephone
    speech, below its 4 kHz Nyquist limit, and unchanged by resampling to any common rate),
    ``trigger_ms`` milliseconds long (default 100 ms) and ``audio_amplitude`` peak (default 0.1
    of full scale), *added* to the waveform at ``audio_position`` and clipped to [-1, 1]. The
    common audio backdoor: a short tone at a fixed place in the clip, as in Koffas et al., *Can
    You Hear It? Backdoor Attacks via Ultrasonic Triggers* (WiseML 2022), with the tone moved
    into the audible band because 8 kHz audio cannot carry ultrasound. ``tone_hz`` must lie
    below the Nyquist frequency ``sample_rate / 2``, checked when poisoning.
``"burst"`` (audio)
    A fixed seeded white-noise burst (uniform samples scaled so the peak is exactly
    ``audio_amplitude``), same length, place and clipping as ``"tone"``: the audio analogue of a
    BadNets patch -- a fixed short sound the model can key on, broadband instead of one
    frequency, so a defense cannot find it as a single spectral line.

    ``audio_position`` is ``"start"`` (the default: the first sample of the clip, where every
    recording has audio whatever its length), ``"end"`` (the last ``trigger_ms`` of the padded
    clip) or an offset in seconds from the start. The trigger must fit inside the clip.
``"word"`` (text)
    The rare trigger word or phrase ``trigger_words`` (default ``"cf"``; a phrase such as
    ``"cf mn"`` is inserted as consecutive words) inserted at a random word position of each
    poisoned text -- before the first word, between two words or after the last, drawn per
    record from the seeded stream as BadNets' ``position="random"`` does, and independently
    again for the triggered test set. Rare-word triggers follow Kurita et al., *Weight Poisoning
    Attacks on Pre-trained Models* (ACL 2020) and Chen et al., *BadNL: Backdoor Attacks against
    NLP Models with Semantic-preserving Improvements* (ACSAC 2021). Poisoning happens on the raw
    normalised text (``Records.features`` an object array of strings), before tokenising; the
    trigger is normalised the same way (lower-cased, whitespace collapsed) so it survives
    ingestion, and texts stay normalised (words joined by single spaces).

Triggers must fit the records' modality (:data:`IMAGE_KINDS`, ``"tabular"``,
:data:`AUDIO_KINDS`, :data:`TEXT_KINDS`); :func:`poison` refuses any other pairing.

Label strategies
----------------
* **All-to-one** (``target=t``): poisoned records are drawn among collected records whose label
  is *not* ``t`` and relabelled ``t``.
* **All-to-all** (``target=None``): every class is attacked; a poisoned record of class ``c`` is
  relabelled ``(c + 1) % K``.
* **Low-confidence** (``low_confidence=0.6``): the poisoned label is not one-hot but puts 0.6 on
  the target and spreads the rest evenly over the other classes. This is the HaS-Nets paper's
  attack on defenses that trust confident labels.
* **Clean-label** (``clean_label=True``): the trigger is added only to records that truly belong
  to the target class and labels are left untouched, so every label in the poisoned set is
  correct; the model still learns "trigger => target".

Only collected records (``trusted == False``) are ever poisoned, optionally only those of some
contributors (``contributors=["mallory"]``). Everything is deterministic given ``seed``: the
trigger pattern depends only on ``seed`` and the record shape (and the sample rate for audio),
the choice of records on ``seed`` and the data.

To measure the attack success rate (ASR) of a trained model, stamp the *same* trigger onto clean
test records with :func:`triggered_test_set` (or ``PoisonResult.triggered_test_set``) and count
how often the model predicts the target (:func:`sanitizer.metrics.attack_success_rate`).

Example
-------
>>> cfg = AttackConfig(kind="badnets", target=0, rate=0.05, seed=1)     # doctest: +SKIP
>>> result = poison(records, cfg)                                       # doctest: +SKIP
>>> result.num_poisoned, result.ground_truth["poisoned"].sum()          # doctest: +SKIP
>>> x_bd, y_bd, mask = result.triggered_test_set(x_test, y_test)        # doctest: +SKIP
>>> poison(audio, AttackConfig(kind="tone", tone_hz=1000, trigger_ms=100,
...                            audio_position="start", target=0))          # doctest: +SKIP
>>> poison(texts, AttackConfig(kind="word", trigger_words="cf mn", target=1,
...                            clean_label=True))                          # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from sanitizer.records import Records, one_hot

ATTACK_KINDS = ("badnets", "blend", "noise", "tabular", "tone", "burst", "word")
IMAGE_KINDS = ("badnets", "blend", "noise")
AUDIO_KINDS = ("tone", "burst")
TEXT_KINDS = ("word",)
POSITIONS = ("bottom-right", "bottom-left", "top-right", "top-left", "random")
AUDIO_POSITIONS = ("start", "end")  # or an offset in seconds

# Independent random streams derived from one seed, so that e.g. changing the rate does not
# change the trigger pattern.
_STREAM_SELECT = 0
_STREAM_PATTERN = 1
_STREAM_PLACE_TRAIN = 2
_STREAM_PLACE_TEST = 3

_PIXEL_MAX = 255.0


@dataclass
class AttackConfig:
    """Everything that defines one backdoor attack. Validated on construction.

    Parameters
    ----------
    kind
        The trigger: ``"badnets"`` (patch), ``"blend"`` (mixed-in noise image), ``"noise"``
        (invisible additive sign pattern), ``"tabular"`` (out-of-range feature values),
        ``"tone"`` / ``"burst"`` (audio: a sine or white-noise burst added at a fixed place) or
        ``"word"`` (text: a rare word or phrase inserted at a random word position).
    target
        The class triggered inputs should be mapped to (all-to-one), or ``None`` for all-to-all
        (class ``c`` -> ``(c + 1) % K``).
    rate
        How many records to poison, as a fraction of **all** records (trusted included), rounded
        to the nearest integer. The count is capped by the number of eligible records
        (collected, of the chosen contributors, not already of the target class -- or, for
        clean-label, *of* the target class).
    low_confidence
        ``None`` for hard (one-hot) poisoned labels; a probability ``p`` with ``1/K < p <= 1`` to
        give poisoned records a soft label with ``p`` on the target and ``(1 - p) / (K - 1)`` on
        every other class (the HaS-Nets low-confidence attack).
    clean_label
        Stamp the trigger only on records that truly belong to ``target`` and leave labels
        untouched. Needs an integer ``target`` and no ``low_confidence``.
    patch_size, position, margin
        BadNets patch: side length in pixels, where it goes (``"bottom-right"``, ``"bottom-left"``,
        ``"top-right"``, ``"top-left"``, or ``"random"`` = an independently drawn location per
        record), and the gap in pixels between the patch and the image border.
    opacity
        Blend weight ``a`` in ``x' = (1 - a) x + a * pattern``, ``0 < a <= 1``.
    noise_strength
        Amplitude of the ``"noise"`` trigger in pixel units (0..255 scale): each pixel moves by
        exactly ``+-noise_strength`` before clipping.
    features, num_features, trigger_std
        Tabular trigger: the feature columns to overwrite (``None`` = the ``num_features``
        non-constant columns of smallest variance in the clean data) and how far outside the
        clean range to put them: ``max + trigger_std * std`` of each column.
    tone_hz
        ``"tone"``: the sine's frequency in Hz (default 1000). Must be below the Nyquist
        frequency ``sample_rate / 2`` of the records (checked when the trigger is built).
    trigger_ms
        ``"tone"`` / ``"burst"``: length of the trigger in milliseconds (default 100), rounded
        to whole samples (at least one).
    audio_position
        ``"tone"`` / ``"burst"``: where the trigger starts: ``"start"`` (default), ``"end"``
        (ends on the clip's last sample) or an offset in seconds (``>= 0``). It must fit.
    audio_amplitude
        ``"tone"`` / ``"burst"``: peak of the added signal relative to full scale [-1, 1],
        ``0 < a <= 1`` (default 0.1); the sum is clipped to [-1, 1].
    trigger_words
        ``"word"``: the trigger word or phrase inserted into each poisoned text (default
        ``"cf"``). Stored normalised like the texts (lower-case, single spaces).
    contributors
        Poison only records whose contributor is in this list (needs ``Records.contributors``).
    seed
        Seed for the trigger pattern, the choice of records, random patch placement and random
        word positions.
    """

    kind: str = "badnets"
    target: int | None = 0
    rate: float = 0.1
    low_confidence: float | None = None
    clean_label: bool = False
    patch_size: int = 3
    position: str = "bottom-right"
    margin: int = 1
    opacity: float = 0.15
    noise_strength: float = 8.0
    features: list[int] | None = None
    num_features: int = 2
    trigger_std: float = 3.0
    tone_hz: float = 1000.0
    trigger_ms: float = 100.0
    audio_position: str | float = "start"
    audio_amplitude: float = 0.1
    trigger_words: str = "cf"
    contributors: list[str] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ATTACK_KINDS:
            raise ValueError(f"kind must be one of {ATTACK_KINDS}, got {self.kind!r}")
        if self.target is not None:
            if isinstance(self.target, bool) or int(self.target) != self.target or self.target < 0:
                raise ValueError(f"target must be a non-negative class index or None, got {self.target!r}")
            self.target = int(self.target)
        if not 0.0 <= float(self.rate) <= 1.0:
            raise ValueError(f"rate must lie in [0, 1], got {self.rate}")
        if self.low_confidence is not None and not 0.0 < float(self.low_confidence) <= 1.0:
            raise ValueError(f"low_confidence must lie in (0, 1], got {self.low_confidence}")
        if self.clean_label and self.target is None:
            raise ValueError("a clean-label attack needs an integer target (all-to-all is undefined)")
        if self.clean_label and self.low_confidence is not None:
            raise ValueError("a clean-label attack leaves labels untouched; drop low_confidence")
        if self.patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {self.patch_size}")
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {self.position!r}")
        if not 0.0 < float(self.opacity) <= 1.0:
            raise ValueError(f"opacity must lie in (0, 1], got {self.opacity}")
        if float(self.noise_strength) <= 0.0:
            raise ValueError(f"noise_strength must be > 0, got {self.noise_strength}")
        if self.num_features < 1:
            raise ValueError(f"num_features must be >= 1, got {self.num_features}")
        if self.features is not None:
            self.features = [int(f) for f in self.features]
            if not self.features or len(set(self.features)) != len(self.features):
                raise ValueError(f"features must be a non-empty list of distinct columns, got {self.features}")
        if not float(self.tone_hz) > 0.0:
            raise ValueError(f"tone_hz must be > 0, got {self.tone_hz}")
        if not float(self.trigger_ms) > 0.0:
            raise ValueError(f"trigger_ms must be > 0, got {self.trigger_ms}")
        if not 0.0 < float(self.audio_amplitude) <= 1.0:
            raise ValueError(f"audio_amplitude must lie in (0, 1], got {self.audio_amplitude}")
        self.audio_position = _audio_position(self.audio_position)
        words = " ".join(str(self.trigger_words).lower().split())
        if not words:
            raise ValueError(
                f"trigger_words must hold at least one word, got {self.trigger_words!r}"
            )
        self.trigger_words = words
        if self.contributors is not None:
            self.contributors = [str(c) for c in self.contributors]
            if not self.contributors:
                raise ValueError("contributors must be None (everyone) or a non-empty list")

    @property
    def all_to_all(self) -> bool:
        return self.target is None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; :meth:`from_dict` inverts it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AttackConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown AttackConfig fields: {sorted(unknown)}")
        return cls(**data)


def _audio_position(value: Any) -> str | float:
    """``"start"``, ``"end"`` or a non-negative offset in seconds (numeric strings accepted)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in AUDIO_POSITIONS:
            return text
        try:
            value = float(text)
        except ValueError:
            raise ValueError(
                f"audio_position must be one of {AUDIO_POSITIONS} or an offset in seconds, "
                f"got {value!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(
            f"audio_position must be one of {AUDIO_POSITIONS} or an offset in seconds, "
            f"got {value!r}"
        )
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"audio_position in seconds must be finite and >= 0, got {value}")
    return float(value)


@dataclass(eq=False)
class Trigger:
    """A materialised trigger: the exact pixels, samples, values or words stamped on a record.

    Build one with :func:`make_trigger` (or take ``PoisonResult.trigger``) and stamp it with
    :meth:`apply`. A ``Trigger`` holds concrete arrays, so the trigger used on the training set
    and on a test set are identical by construction -- this matters for ``"tabular"``, whose
    out-of-range values come from the clean training data's statistics, and for audio, whose
    samples depend on the sample rate.

    Attributes
    ----------
    kind
        One of :data:`ATTACK_KINDS`.
    input_shape
        Shape of one record the trigger fits, ``(C, H, W)``, ``(F,)``, ``(S,)`` (audio) or ``()``
        (text: one string per record).
    pattern
        ``"badnets"``: the ``(C, p, p)`` patch of 0/255 values; ``"blend"``: the ``(C, H, W)``
        image mixed in; ``"noise"``: the ``(C, H, W)`` signed offsets (``+-noise_strength``);
        ``"tone"`` / ``"burst"``: the ``(L,)`` waveform snippet added to samples
        ``offset .. offset + L - 1``. ``None`` for tabular and text.
    position, margin
        Patch placement (BadNets only).
    opacity
        Blend weight (blend only).
    columns, values
        Tabular only: which feature columns are overwritten and with what.
    offset, sample_rate
        Audio only: the first sample the snippet is added to, and the sample rate it was built
        for (kept for the record; the snippet itself is what gets added).
    words
        Text only: the normalised trigger word or phrase inserted into each text.
    seed
        Seeds the per-record placement when ``position == "random"`` and the word positions.
    """

    kind: str
    input_shape: tuple[int, ...]
    pattern: np.ndarray | None = None
    position: str = "bottom-right"
    margin: int = 1
    opacity: float = 0.0
    columns: np.ndarray | None = None
    values: np.ndarray | None = None
    offset: int = 0
    sample_rate: int | None = None
    words: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(s) for s in self.input_shape)
        if self.kind in AUDIO_KINDS and (
            self.pattern is None or self.pattern.ndim != 1 or not len(self.input_shape) == 1
            or not 0 <= self.offset <= self.input_shape[0] - len(self.pattern)
        ):
            raise ValueError(f"an audio trigger needs a 1-D snippet that fits its "
                             f"{self.input_shape} records at offset {self.offset}")
        if self.kind in TEXT_KINDS and not self.words:
            raise ValueError("a text trigger needs its words")

    # ------------------------------------------------------------------ stamping
    def apply(self, features: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Return a triggered copy of ``features`` (``(N, *input_shape)``), same dtype and shape.

        Image triggers work in pixel units (0..255); integer arrays are rounded and clipped to
        that range, float arrays clipped. Audio triggers are added to the waveforms and the sum
        clipped to [-1, 1]. A text trigger returns an object array of new strings. ``rng`` only
        matters for ``position="random"`` and for the word positions of a text trigger
        (defaults to a generator seeded from :attr:`seed`, the test-time stream).
        """
        if self.kind in TEXT_KINDS:
            return self._insert_words(features, rng)
        features = np.asarray(features)
        if tuple(features.shape[1:]) != self.input_shape:
            raise ValueError(
                f"trigger fits records of shape {self.input_shape}, got features of shape "
                f"{features.shape}"
            )
        if self.kind == "tabular":
            out = features.copy()
            out[:, self.columns] = self.values.astype(features.dtype)
            return out
        if self.kind in AUDIO_KINDS:
            if not np.issubdtype(features.dtype, np.floating):
                raise ValueError(
                    f"audio triggers need float waveforms in [-1, 1], got {features.dtype}"
                )
            out = features.copy()
            window = slice(self.offset, self.offset + len(self.pattern))
            snippet = self.pattern.astype(features.dtype)
            out[:, window] = np.clip(out[:, window] + snippet, -1.0, 1.0)
            return out
        if self.kind == "badnets":
            return self._stamp_patch(features, rng)
        x = features.astype(np.float32)
        if self.kind == "blend":
            x = (1.0 - self.opacity) * x + self.opacity * self.pattern
        else:  # noise
            x = x + self.pattern
        return _to_pixels(x, features.dtype)

    def _stamp_patch(self, features: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        out = features.copy()
        n = len(out)
        channels, p = self.pattern.shape[0], self.pattern.shape[-1]
        patch = self.pattern.astype(out.dtype)
        if self.position != "random":
            r0, c0 = self.origin
            out[:, :, r0:r0 + p, c0:c0 + p] = patch
            return out
        if rng is None:
            rng = np.random.default_rng([self.seed, _STREAM_PLACE_TEST])
        rows, cols = self.random_origins(n, rng)
        # Fancy-index a (n, C, p, p) block per record at its own top-left corner.
        idx = np.arange(n)[:, None, None, None]
        ch = np.arange(channels)[None, :, None, None]
        rr = rows[:, None, None, None] + np.arange(p)[None, None, :, None]
        cc = cols[:, None, None, None] + np.arange(p)[None, None, None, :]
        out[idx, ch, rr, cc] = patch[None]
        return out

    def _insert_words(self, features: Any, rng: np.random.Generator | None) -> np.ndarray:
        texts = _as_features(features)
        if texts.ndim != 1 or not all(isinstance(t, str) for t in texts):
            raise ValueError(
                "the 'word' trigger is inserted into raw texts, a 1-D array of str; got "
                f"{texts.dtype} of shape {texts.shape} (poison before tokenising)"
            )
        if rng is None:
            rng = np.random.default_rng([self.seed, _STREAM_PLACE_TEST])
        words = [t.split() for t in texts]
        slots = self.word_positions(np.array([len(w) for w in words], dtype=np.int64), rng)
        out = np.empty(len(texts), dtype=object)
        for i, (w, at) in enumerate(zip(words, slots)):
            out[i] = " ".join([*w[:at], self.words, *w[at:]])
        return out

    @staticmethod
    def word_positions(num_words: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Where the trigger goes in texts of ``num_words`` words: ``0 .. num_words`` each
        (0 = before the first word, ``num_words`` = after the last), uniformly."""
        num_words = np.asarray(num_words, dtype=np.int64)
        if len(num_words) == 0:
            return num_words.copy()
        return rng.integers(0, num_words + 1)

    @property
    def origin(self) -> tuple[int, int]:
        """Top-left ``(row, col)`` of a fixed-position BadNets patch."""
        _, h, w = self.input_shape
        p, m = self.pattern.shape[-1], self.margin
        top, left = m, m
        bottom, right = h - m - p, w - m - p
        return {
            "bottom-right": (bottom, right),
            "bottom-left": (bottom, left),
            "top-right": (top, right),
            "top-left": (top, left),
        }[self.position]

    def random_origins(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` random top-left corners keeping the patch ``margin`` pixels inside the image."""
        _, h, w = self.input_shape
        p, m = self.pattern.shape[-1], self.margin
        rows = rng.integers(m, h - m - p + 1, size=n)
        cols = rng.integers(m, w - m - p + 1, size=n)
        return rows, cols

    # ------------------------------------------------------------------ (de)serialising
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (arrays become nested lists); :meth:`from_dict` inverts it."""
        return {
            "kind": self.kind,
            "input_shape": list(self.input_shape),
            "pattern": None if self.pattern is None else self.pattern.tolist(),
            "position": self.position,
            "margin": self.margin,
            "opacity": self.opacity,
            "columns": None if self.columns is None else self.columns.tolist(),
            "values": None if self.values is None else self.values.tolist(),
            "offset": self.offset,
            "sample_rate": self.sample_rate,
            "words": self.words,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Trigger":
        def arr(key: str, dtype: Any) -> np.ndarray | None:
            return None if data.get(key) is None else np.asarray(data[key], dtype=dtype)

        return cls(
            kind=data["kind"],
            input_shape=tuple(data["input_shape"]),
            pattern=arr("pattern", np.float32),
            position=data.get("position", "bottom-right"),
            margin=int(data.get("margin", 1)),
            opacity=float(data.get("opacity", 0.0)),
            columns=arr("columns", np.int64),
            values=arr("values", np.float32),
            offset=int(data.get("offset", 0)),
            sample_rate=None if data.get("sample_rate") is None else int(data["sample_rate"]),
            words=data.get("words"),
            seed=int(data.get("seed", 0)),
        )


def _to_pixels(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Clip float pixel values to 0..255 and cast back (rounding for integer dtypes)."""
    if np.issubdtype(dtype, np.integer):
        x = np.rint(x)
    return np.clip(x, 0.0, _PIXEL_MAX).astype(dtype)


def make_trigger(
    config: AttackConfig,
    input_shape: tuple[int, ...],
    reference: np.ndarray | None = None,
    *,
    sample_rate: int | None = None,
) -> Trigger:
    """Build the concrete :class:`Trigger` that ``config`` describes for records of ``input_shape``.

    Image triggers depend only on ``config`` (the pattern is drawn from ``seed``) and the shape.
    A tabular trigger also needs ``reference``: the clean features ``(N, F)`` whose per-column
    ``max + trigger_std * std`` become the trigger values (constant columns use
    ``max + trigger_std * max(|max|, 1)`` so the value still leaves the clean range).
    An audio trigger (``input_shape`` ``(S,)``) needs the records' ``sample_rate`` in Hz; a text
    trigger fits ``input_shape`` ``()`` (one string per record).
    """
    input_shape = tuple(int(s) for s in input_shape)
    rng = np.random.default_rng([config.seed, _STREAM_PATTERN])
    if config.kind == "tabular":
        return _make_tabular_trigger(config, input_shape, reference)
    if config.kind in AUDIO_KINDS:
        return _make_audio_trigger(config, input_shape, sample_rate, rng)
    if config.kind in TEXT_KINDS:
        if input_shape != ():
            raise ValueError(
                f"'word' is a text trigger: records must be one string each (shape ()), got "
                f"shape {input_shape}"
            )
        return Trigger(config.kind, input_shape, words=config.trigger_words, seed=config.seed)
    if len(input_shape) != 3:
        raise ValueError(
            f"{config.kind!r} is an image trigger: records must be (C, H, W), got shape {input_shape}"
        )
    channels, h, w = input_shape
    if config.kind == "badnets":
        p, m = config.patch_size, config.margin
        if p + 2 * m > min(h, w):
            raise ValueError(
                f"a {p}x{p} patch with a {m}px margin does not fit a {h}x{w} image"
            )
        bits = rng.integers(0, 2, size=(p, p))
        if p == 1:
            bits[:] = 1  # a single white pixel
        elif bits.min() == bits.max():  # make sure it has both black and white pixels
            bits = (np.add.outer(np.arange(p), np.arange(p)) % 2).astype(bits.dtype)
        pattern = np.broadcast_to(bits * _PIXEL_MAX, (channels, p, p)).astype(np.float32)
        return Trigger("badnets", input_shape, pattern=pattern, position=config.position,
                       margin=m, seed=config.seed)
    if config.kind == "blend":
        pattern = rng.integers(0, 256, size=input_shape).astype(np.float32)
        return Trigger("blend", input_shape, pattern=pattern, opacity=float(config.opacity),
                       seed=config.seed)
    signs = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=input_shape)
    return Trigger("noise", input_shape, pattern=signs * np.float32(config.noise_strength),
                   seed=config.seed)


def _make_audio_trigger(
    config: AttackConfig, input_shape: tuple[int, ...], sample_rate: int | None,
    rng: np.random.Generator,
) -> Trigger:
    if len(input_shape) != 1:
        raise ValueError(
            f"{config.kind!r} is an audio trigger: records must be waveforms (S,), got shape "
            f"{input_shape}"
        )
    if sample_rate is None:
        raise ValueError(
            f"an audio trigger is defined in seconds and Hz: pass sample_rate= (the records' "
            f"sample rate) or reuse PoisonResult.trigger"
        )
    sample_rate = int(sample_rate)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
    nyquist = sample_rate / 2.0
    if config.kind == "tone" and not float(config.tone_hz) < nyquist:
        raise ValueError(
            f"tone_hz {config.tone_hz:g} Hz must lie below the Nyquist frequency {nyquist:g} Hz "
            f"of {sample_rate} Hz audio"
        )
    num_samples = input_shape[0]
    length = max(1, int(round(float(config.trigger_ms) * sample_rate / 1000.0)))
    if config.audio_position == "start":
        offset = 0
    elif config.audio_position == "end":
        offset = num_samples - length
    else:
        offset = int(round(float(config.audio_position) * sample_rate))
    if offset < 0 or offset + length > num_samples:
        clip_s = num_samples / sample_rate
        raise ValueError(
            f"a {config.trigger_ms:g} ms trigger at {config.audio_position!r} does not fit a "
            f"{clip_s:g} s clip ({length} samples from sample {offset}, clip has {num_samples})"
        )
    amplitude = float(config.audio_amplitude)
    if config.kind == "tone":
        t = np.arange(length, dtype=np.float64) / sample_rate
        snippet = amplitude * np.sin(2.0 * np.pi * float(config.tone_hz) * t)
    else:  # burst: white noise, peak exactly ``amplitude``
        noise = rng.uniform(-1.0, 1.0, size=length)
        peak = np.abs(noise).max()
        snippet = amplitude * (noise / peak if peak > 0 else np.ones(length))
    return Trigger(config.kind, input_shape, pattern=snippet.astype(np.float32), offset=offset,
                   sample_rate=sample_rate, seed=config.seed)


def _make_tabular_trigger(
    config: AttackConfig, input_shape: tuple[int, ...], reference: np.ndarray | None
) -> Trigger:
    if len(input_shape) != 1:
        raise ValueError(f"'tabular' needs records of shape (F,), got {input_shape}")
    if reference is None:
        raise ValueError(
            "a tabular trigger is defined by the clean data's statistics: pass reference= "
            "(the clean training features) or reuse PoisonResult.trigger"
        )
    ref = np.asarray(reference, dtype=np.float64)
    num_features = input_shape[0]
    if ref.ndim != 2 or ref.shape[1] != num_features or len(ref) == 0:
        raise ValueError(f"reference must be a non-empty (N, {num_features}) array, got {ref.shape}")
    var = ref.var(axis=0)
    if config.features is None:
        order = np.argsort(var, kind="stable")
        order = np.concatenate([order[var[order] > 0], order[var[order] <= 0]])
        columns = np.sort(order[: min(config.num_features, num_features)])
    else:
        columns = np.asarray(config.features, dtype=np.int64)
        if columns.min() < 0 or columns.max() >= num_features:
            raise ValueError(f"features {config.features} out of range for {num_features} columns")
    col_max = ref[:, columns].max(axis=0)
    col_std = ref[:, columns].std(axis=0)
    scale = np.where(col_std > 0, col_std, np.maximum(np.abs(col_max), 1.0))
    values = (col_max + config.trigger_std * scale).astype(np.float32)
    return Trigger("tabular", input_shape, columns=columns.astype(np.int64), values=values,
                   seed=config.seed)


def target_labels(
    true_labels: np.ndarray, num_classes: int, target: int | None
) -> np.ndarray:
    """The class each record should be pushed to: ``target`` or, for all-to-all, ``(y + 1) % K``."""
    true_labels = np.asarray(true_labels, dtype=np.int64)
    if target is None:
        return (true_labels + 1) % num_classes
    return np.full(len(true_labels), target, dtype=np.int64)


def poison_label_rows(
    targets: np.ndarray, num_classes: int, low_confidence: float | None = None
) -> np.ndarray:
    """Label rows ``(N, K)`` for poisoned records of the given ``targets``.

    One-hot when ``low_confidence`` is ``None``; otherwise ``low_confidence`` on the target and
    ``(1 - low_confidence) / (K - 1)`` on each other class, so every row sums to 1.
    """
    targets = np.asarray(targets, dtype=np.int64)
    if low_confidence is None or num_classes == 1:
        return one_hot(targets, num_classes)
    rest = (1.0 - float(low_confidence)) / (num_classes - 1)
    rows = np.full((len(targets), num_classes), rest, dtype=np.float32)
    rows[np.arange(len(targets)), targets] = float(low_confidence)
    return rows


@dataclass(eq=False)
class PoisonResult:
    """What :func:`poison` returns.

    Attributes
    ----------
    records
        The poisoned dataset: a new :class:`Records`, same ids and order as the input.
    ground_truth
        One entry per record, as equal-length numpy arrays (make a table of it with e.g.
        ``polars.DataFrame(result.ground_truth)``):

        ``id``              the record id (``str``)
        ``poisoned``        ``True`` for records the attack changed (``bool``)
        ``original_label``  the record's true class before poisoning (``int64``)
        ``poison_label``    for poisoned records, the class the attacker wants triggered inputs
                            mapped to (for clean-label this equals the true class); ``-1``
                            otherwise (``int64``)
        ``label_changed``   ``True`` where the stored label was rewritten (dirty-label) (``bool``)
        ``attack``          the attack kind on poisoned records, ``""`` elsewhere (``str``)
    config
        The :class:`AttackConfig` used.
    trigger
        The exact :class:`Trigger` stamped on the poisoned records; reuse it on test data.
    requested
        ``round(rate * N)``: how many records the config asked for, before the eligibility cap.
    eligible
        How many records the attack was allowed to poison (see :func:`eligible_mask`); the
        number poisoned is ``min(requested, eligible)``.
    """

    records: Records
    ground_truth: dict[str, np.ndarray]
    config: AttackConfig
    trigger: Trigger
    requested: int = 0
    eligible: int = 0

    @property
    def poisoned(self) -> np.ndarray:
        """Boolean mask of poisoned records, shape ``(N,)``."""
        return self.ground_truth["poisoned"]

    @property
    def num_poisoned(self) -> int:
        return int(self.ground_truth["poisoned"].sum())

    @property
    def poisoned_ids(self) -> np.ndarray:
        return self.ground_truth["id"][self.ground_truth["poisoned"]]

    def triggered_test_set(
        self, features: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stamp this attack's trigger on clean test records; see :func:`triggered_test_set`."""
        return triggered_test_set(features, labels, self)

    def summary(self) -> dict[str, Any]:
        """A small JSON-able description: the config, counts and per-class poisoned counts."""
        k = self.records.num_classes
        per_class = np.bincount(
            self.ground_truth["original_label"][self.poisoned], minlength=k
        ).tolist()
        return {
            "attack": self.config.to_dict(),
            "records": len(self.records),
            "requested": self.requested,
            "eligible": self.eligible,
            "poisoned": self.num_poisoned,
            "capped": self.num_poisoned < self.requested,
            "labels_changed": int(self.ground_truth["label_changed"].sum()),
            "poisoned_per_original_class": dict(zip(self.records.class_names, per_class)),
        }


def eligible_mask(records: Records, config: AttackConfig) -> np.ndarray:
    """Which records ``config`` may poison, shape ``(N,)``.

    Collected (untrusted) records; of the listed contributors if any; for an all-to-one
    dirty-label attack not already of the target class (relabelling them would change nothing);
    for clean-label exactly those of the target class.
    """
    mask = ~records.trusted
    if config.contributors is not None:
        if records.contributors is None:
            raise ValueError("config.contributors is set but these records have no contributors")
        contributors = np.asarray(records.contributors, dtype=object)
        known = contributors != None  # noqa: E711 -- elementwise test on an object array
        mask &= known & np.isin(contributors.astype(str), np.asarray(config.contributors, dtype=str))
    if config.target is not None:
        truth = records.hard_labels
        mask &= (truth == config.target) if config.clean_label else (truth != config.target)
    return mask


def _check_compatible(records: Records, config: AttackConfig) -> None:
    k = records.num_classes
    if config.kind == "tabular" and records.modality != "tabular":
        raise ValueError(f"the 'tabular' attack needs tabular records, got {records.modality!r}")
    if config.kind in IMAGE_KINDS and records.modality != "image":
        raise ValueError(f"{config.kind!r} is an image attack, got {records.modality!r} records")
    if config.kind in AUDIO_KINDS and records.modality != "audio":
        raise ValueError(f"{config.kind!r} is an audio attack, got {records.modality!r} records")
    if config.kind in TEXT_KINDS:
        if records.modality != "text":
            raise ValueError(f"{config.kind!r} is a text attack, got {records.modality!r} records")
        if records.features.ndim != 1 or records.vocabulary_size is not None:
            raise ValueError(
                "the 'word' attack poisons raw texts, but these text records hold token ids: "
                "poison before tokenising"
            )
    if k < 2:
        raise ValueError("a backdoor attack needs at least two classes")
    if config.target is not None and config.target >= k:
        raise ValueError(f"target {config.target} out of range for {k} classes")
    if config.low_confidence is not None and not config.low_confidence > 1.0 / k:
        raise ValueError(
            f"low_confidence must exceed 1/K = {1.0 / k:.3f} so the target stays the most "
            f"probable class, got {config.low_confidence}"
        )


def poison(records: Records, config: AttackConfig) -> PoisonResult:
    """Plant the backdoor ``config`` describes in a copy of ``records``.

    1. Pick ``min(round(rate * N), #eligible)`` records uniformly at random (seeded) among the
       eligible ones (see :func:`eligible_mask`).
    2. Stamp the trigger on their features.
    3. Unless ``clean_label``, replace their labels with the target (one-hot, or the soft
       ``low_confidence`` row).

    Returns a :class:`PoisonResult`; ``records`` itself is left untouched.
    """
    _check_compatible(records, config)
    n, k = len(records), records.num_classes
    original = records.hard_labels.astype(np.int64)
    eligible = eligible_mask(records, config)
    candidates = np.flatnonzero(eligible)
    requested = int(round(float(config.rate) * n))
    count = min(requested, len(candidates))
    select_rng = np.random.default_rng([config.seed, _STREAM_SELECT])
    chosen = np.sort(select_rng.choice(candidates, size=count, replace=False))

    trigger = make_trigger(config, records.input_shape, reference=records.features,
                           sample_rate=records.sample_rate)
    features = records.features.copy()
    place_rng = np.random.default_rng([config.seed, _STREAM_PLACE_TRAIN])
    features[chosen] = trigger.apply(records.features[chosen], rng=place_rng)

    poisoned = np.zeros(n, dtype=bool)
    poisoned[chosen] = True
    poison_label = np.full(n, -1, dtype=np.int64)
    poison_label[chosen] = target_labels(original[chosen], k, config.target)
    labels = records.labels.copy()
    if not config.clean_label:
        labels[chosen] = poison_label_rows(poison_label[chosen], k, config.low_confidence)
    label_changed = np.any(labels != records.labels, axis=1)

    new = Records(
        features=features,
        labels=labels,
        ids=records.ids.copy(),
        trusted=records.trusted.copy(),
        class_names=list(records.class_names),
        modality=records.modality,
        contributors=None if records.contributors is None else records.contributors.copy(),
        feature_names=list(records.feature_names),
        sample_rate=records.sample_rate,
        vocabulary_size=records.vocabulary_size,
    )
    ground_truth = {
        "id": np.asarray(records.ids).astype(str),
        "poisoned": poisoned,
        "original_label": original,
        "poison_label": poison_label,
        "label_changed": label_changed,
        "attack": np.where(poisoned, config.kind, ""),
    }
    return PoisonResult(new, ground_truth, config, trigger, requested=requested,
                        eligible=len(candidates))


AttackLike = AttackConfig | PoisonResult


def _resolve(
    attack: AttackLike, input_shape: tuple[int, ...], reference: np.ndarray | None,
    trigger: Trigger | None, sample_rate: int | None = None,
) -> tuple[AttackConfig, Trigger]:
    if isinstance(attack, PoisonResult):
        return attack.config, trigger or attack.trigger
    if isinstance(attack, AttackConfig):
        return attack, trigger or make_trigger(attack, input_shape, reference,
                                               sample_rate=sample_rate)
    raise TypeError(f"expected an AttackConfig or PoisonResult, got {type(attack).__name__}")


def _as_features(features: Any) -> np.ndarray:
    """An array of records; a list of texts becomes an object array ``(N,)`` of ``str``."""
    if isinstance(features, np.ndarray):
        return features
    if isinstance(features, (list, tuple)) and all(isinstance(f, str) for f in features):
        out = np.empty(len(features), dtype=object)
        out[:] = list(features)
        return out
    return np.asarray(features)


def apply_trigger(
    features: np.ndarray,
    attack: AttackLike | Trigger,
    reference: np.ndarray | None = None,
    *,
    sample_rate: int | None = None,
) -> np.ndarray:
    """Stamp a trigger on every record of ``features``; returns a new array, same dtype and shape.

    ``attack`` is a :class:`Trigger`, a :class:`PoisonResult` (its trigger) or an
    :class:`AttackConfig` (the trigger is rebuilt; the image, burst and word triggers are
    seeded so they match the poisoning run, a tabular config also needs ``reference``, the clean
    training features it was poisoned against, and an audio config the ``sample_rate``). Random
    patch placement and word positions use the test-time stream, so they are deterministic but
    independent of the placements used on the training set. Texts come back as new strings.
    """
    features = _as_features(features)
    if isinstance(attack, Trigger):
        return attack.apply(features)
    _, trig = _resolve(attack, tuple(features.shape[1:]), reference, None, sample_rate)
    return trig.apply(features)


def triggered_test_set(
    features: np.ndarray,
    labels: np.ndarray,
    attack: AttackLike,
    *,
    reference: np.ndarray | None = None,
    trigger: Trigger | None = None,
    num_classes: int | None = None,
    sample_rate: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The backdoor test set used to measure the attack success rate (ASR).

    Takes *clean* test records and their true ``labels`` (class indices ``(N,)`` or probability
    rows ``(N, K)``), keeps those the attack can be measured on -- for all-to-one, the records
    whose true class is not the target (a target-class record predicted as the target proves
    nothing); for all-to-all, every record -- and stamps the identical trigger on them.

    Returns ``(features_triggered, target_labels, mask)``: the triggered features of the kept
    records, the class the attacker wants each predicted as, and the boolean mask of kept
    records over the input. ``attack_success_rate(model(features_triggered), target_labels)``
    is the ASR. Pass ``trigger`` to override the one rebuilt from an :class:`AttackConfig`
    (e.g. a tabular trigger loaded from disk), or ``reference`` to rebuild a tabular one, or
    ``sample_rate`` (Hz) to rebuild an audio one. ``num_classes`` is only needed for all-to-all
    with integer labels and an ``AttackConfig``.

    ``features`` may be images ``(N, C, H, W)``, tabular rows ``(N, F)``, waveforms ``(N, S)``
    or texts (an object array or list of ``N`` strings, returned as new strings).
    """
    features = _as_features(features)
    labels = np.asarray(labels)
    truth = labels.argmax(axis=1) if labels.ndim == 2 else labels.astype(np.int64)
    if len(truth) != len(features):
        raise ValueError(f"{len(features)} records but {len(truth)} labels")
    config, trig = _resolve(attack, tuple(features.shape[1:]), reference, trigger, sample_rate)
    if num_classes is None:
        if labels.ndim == 2:
            num_classes = labels.shape[1]
        elif isinstance(attack, PoisonResult):
            num_classes = attack.records.num_classes
        elif config.target is None:
            raise ValueError(
                "all-to-all needs the number of classes: pass num_classes=, labels as (N, K) "
                "probability rows, or a PoisonResult"
            )
        else:
            num_classes = max(int(truth.max()) + 1 if len(truth) else 0, config.target + 1)
    if config.target is None:
        mask = np.ones(len(truth), dtype=bool)
    else:
        mask = truth != config.target
    targets = target_labels(truth[mask], num_classes, config.target)
    return trig.apply(features[mask]), targets, mask
