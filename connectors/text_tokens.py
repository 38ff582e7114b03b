"""Text records: :func:`normalize_text` and :class:`TextTokenizer`, which needs no download.

Text arrives as a column of free-form strings (SMS messages, complaint narratives, reviews).
Everything downstream -- the embedding + 1D CNN model, its ONNX export, ``sanitize predict`` --
sees **int64 token ids** of shape ``(N, L)`` instead, so this module turns one into the other,
the same way in every process and on every machine:

1. :func:`normalize_text` -- Unicode NFKC, case folding, control characters to spaces, invisible
   format characters removed, whitespace collapsed. Idempotent.
2. :meth:`TextTokenizer.tokens` -- the words of a text, in order (maximal runs of Unicode word
   characters and combining marks; punctuation, symbols and emoji separate words).
3. :meth:`TextTokenizer.encode` -- words to ids, truncated to ``max_tokens`` by a stated policy
   and right-padded with 0.

Token id layout (``vocabulary_size = 1 + oov_buckets + len(vocabulary)``)::

    0                                   padding (and nothing else)
    1 .. oov_buckets                    a word not in the vocabulary: 1 + crc32(utf-8) % oov_buckets
    1 + oov_buckets + i                 vocabulary[i]  (most frequent word first)

The vocabulary is built from the data itself (:meth:`TextTokenizer.fit`: the ``max_vocabulary``
most frequent words seen at least ``min_count`` times, ties broken by the word), and stored with
the run as a JSON-able dict (:meth:`TextTokenizer.to_dict` / :meth:`TextTokenizer.from_dict`,
an exact round trip). Unseen words are not dropped: they hash into ``oov_buckets`` shared ids
with ``zlib.crc32`` (Python's ``hash()`` is salted per process and would not be reproducible), so a
new spam phrase at prediction time still maps to a stable id.

Why words only, in order: the model is a 1D CNN over the id sequence, and its convolutions
already learn word n-grams (a kernel of width 3 sees trigrams), so feeding n-grams as extra
tokens mostly adds length. Backdoor triggers in text are typically rare words ("cf", "mn", "bb"),
phrases or sentences; at the poisoning rates that matter they occur often enough to earn their own
vocabulary id, and the CNN sees them in context. A quick check (embedding 64 + one width-3
convolution, 6 epochs, 80/20 split) gave words 0.980 vs bigrams 0.976 test accuracy on SMS spam
and 0.815 vs 0.803 on the 4 CFPB products, with 3x the vocabulary and 1.5-2.5x the training time
for bigrams. ``bigrams=True`` is still available for small or noisy corpora: each bigram
``"a b"`` is then interleaved right after its second word (``w1, w2, "w1 w2", w3, "w2 w3", ...``),
so the sequence stays in reading order; bigrams get vocabulary ids or OOV buckets like words,
and count towards ``max_tokens``.

Truncation (:data:`TRUNCATION_POLICIES`): ``"head"`` keeps the first ``max_tokens`` tokens;
``"head-tail"`` keeps the first ``max_tokens - max_tokens // 2`` and the last ``max_tokens // 2``
(long complaints often state the request at the end). Nothing is truncated before tokenizing:
:func:`normalize_text` keeps the whole text, and :meth:`TextTokenizer.fit` counts every word.

Determinism: ids depend only on the text, the stored dict and the Unicode tables of the Python
build (``unicodedata.unidata_version``, recorded in :meth:`TextTokenizer.to_dict`).
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np


def _padded(rows: list[list[int]], dtype) -> np.ndarray:
    """Id rows as one array, right-padded with 0 to the longest row (at least 1 wide)."""
    out = np.zeros((len(rows), max(1, max((len(r) for r in rows), default=0))), dtype=dtype)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


TRUNCATION_POLICIES = ("head", "head-tail")
"""How :meth:`TextTokenizer.encode` shortens a text over ``max_tokens`` (module docstring)."""

FORMAT = "sanitize-text-tokenizer/1"
"""The ``"format"`` key of :meth:`TextTokenizer.to_dict`; bumped when ids would change."""


def _ranges(codepoints: list[int]) -> str:
    """A regex character-class body for sorted code points, runs collapsed to ``a-b``."""
    parts, start = [], None
    for i, cp in enumerate(codepoints):
        if start is None:
            start = cp
        if i + 1 == len(codepoints) or codepoints[i + 1] != cp + 1:
            parts.append(re.escape(chr(start)) if start == cp
                         else f"{re.escape(chr(start))}-{re.escape(chr(cp))}")
            start = None
    return "".join(parts)


@functools.cache
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """(control characters, format characters, word) patterns, built once from ``unicodedata``."""
    by_category: dict[str, list[int]] = {"Cc": [], "Cf": [], "M": []}
    for cp in range(sys.maxunicode + 1):
        category = unicodedata.category(chr(cp))
        if category in ("Cc", "Cf"):
            by_category[category].append(cp)
        elif category[0] == "M":
            by_category["M"].append(cp)
    control = re.compile(f"[{_ranges(by_category['Cc'])}]")
    invisible = re.compile(f"[{_ranges(by_category['Cf'])}]")
    word = re.compile(rf"[\w{_ranges(by_category['M'])}]+")
    return control, invisible, word


def normalize_text(text: str) -> str:
    """``text`` in the one form every later step sees.

    Unicode NFKC (full-width and styled letters, ligatures, compatibility forms become plain
    ones), case folding (``"Straße"`` -> ``"strasse"``), control characters (``\\t``, ``\\r``,
    ``\\x00``...) to spaces, invisible format characters (zero-width spaces and joiners, soft
    hyphens, byte-order marks, bidi controls) removed -- so ``"fr\\u200bee"`` is the word
    ``"free"`` -- and whitespace runs collapsed to one space, stripped at both ends. Idempotent:
    ``normalize_text(normalize_text(t)) == normalize_text(t)``.

    >>> normalize_text("  ＦＲＥＥ\\u200b entry!\\r\\n\\tWin ")
    'free entry! win'
    """
    if not isinstance(text, str):
        raise TypeError(f"normalize_text takes a str, got {type(text).__name__}")
    control, invisible, _ = _patterns()
    if text.isascii():  # fast path, same result: ASCII is NFKC, has no format characters
        return " ".join(control.sub(" ", text).lower().split())
    text = invisible.sub("", control.sub(" ", text))
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    # NFKC/case folding can (rarely) produce format characters again; a second pass is a no-op
    # on almost every text and keeps the function idempotent.
    text = invisible.sub("", control.sub(" ", text))
    return " ".join(text.split())


_ASCII_WORD = re.compile(r"\w+")


def _crc_bucket(token: str, buckets: int) -> int:
    return 1 + zlib.crc32(token.encode("utf-8")) % buckets


@dataclass
class TextTokenizer:
    """Normalised text to int64 token ids; see the module docstring for the id layout.

    Build one from the training texts with :meth:`fit`, store :meth:`to_dict` with the run, and
    rebuild it with :meth:`from_dict` to encode texts at prediction time.
    """

    vocabulary: list[str]
    oov_buckets: int = 1024
    max_tokens: int = 256
    truncation: str = "head"
    bigrams: bool = False
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.vocabulary = [str(v) for v in self.vocabulary]
        if isinstance(self.oov_buckets, bool) or int(self.oov_buckets) < 1:
            raise ValueError(f"oov_buckets must be at least 1, got {self.oov_buckets!r}")
        if isinstance(self.max_tokens, bool) or int(self.max_tokens) < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens!r}")
        if self.truncation not in TRUNCATION_POLICIES:
            raise ValueError(f"truncation must be one of {TRUNCATION_POLICIES}, "
                             f"got {self.truncation!r}")
        self.oov_buckets, self.max_tokens = int(self.oov_buckets), int(self.max_tokens)
        self.bigrams = bool(self.bigrams)
        first = 1 + self.oov_buckets
        self._index = {token: first + i for i, token in enumerate(self.vocabulary)}
        if len(self._index) != len(self.vocabulary):
            repeated = next(t for t, n in Counter(self.vocabulary).items() if n > 1)
            raise ValueError(f"vocabulary lists {repeated!r} twice")

    # -- building -------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        texts: Iterable[str],
        *,
        max_vocabulary: int = 20000,
        min_count: int = 2,
        oov_buckets: int = 1024,
        max_tokens: int = 256,
        truncation: str = "head",
        bigrams: bool = False,
    ) -> TextTokenizer:
        """A tokenizer whose vocabulary is the ``max_vocabulary`` most frequent tokens of
        ``texts`` seen at least ``min_count`` times (whole texts are counted, not just the part
        that survives truncation), most frequent first, ties broken by the token string."""
        if max_vocabulary < 0 or min_count < 1:
            raise ValueError("max_vocabulary must be >= 0 and min_count >= 1")
        probe = cls([], oov_buckets=oov_buckets, max_tokens=max_tokens, truncation=truncation,
                    bigrams=bigrams)  # validates the settings before counting
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(probe._units(text))
        kept = sorted((item for item in counts.items() if item[1] >= min_count),
                      key=lambda item: (-item[1], item[0]))
        return cls([token for token, _ in kept[:max_vocabulary]], oov_buckets=oov_buckets,
                   max_tokens=max_tokens, truncation=truncation, bigrams=bigrams)

    # -- using ----------------------------------------------------------------------------

    @property
    def vocabulary_size(self) -> int:
        """Number of distinct ids, ``1 + oov_buckets + len(vocabulary)`` (id 0 is padding)."""
        return 1 + self.oov_buckets + len(self.vocabulary)

    def tokens(self, text: str) -> list[str]:
        """The words of ``text`` in order, after :func:`normalize_text` (a no-op on text that is
        already normalised, so raw and normalised text give the same words)."""
        text = normalize_text(text)
        # ASCII text has no combining marks: the plain pattern gives the same words, faster.
        return (_ASCII_WORD if text.isascii() else _patterns()[2]).findall(text)

    def _units(self, text: str) -> list[str]:
        """The token sequence ids are made from: the words, with bigrams interleaved if set."""
        words = self.tokens(text)
        if not self.bigrams or len(words) < 2:
            return words
        units = [words[0]]
        for previous, word in zip(words, words[1:]):
            units.append(word)
            units.append(f"{previous} {word}")
        return units

    def _truncate(self, units: list[str]) -> list[str]:
        limit = self.max_tokens
        if len(units) <= limit:
            return units
        if self.truncation == "head":
            return units[:limit]
        tail = limit // 2
        return units[:limit - tail] + units[len(units) - tail:]

    def token_id(self, token: str) -> int:
        """The id of one token: its vocabulary id, else its crc32 OOV bucket (never 0)."""
        found = self._index.get(token)
        return found if found is not None else _crc_bucket(token, self.oov_buckets)

    def describe(self, token_id: int) -> str:
        """What an id stands for, for people: its vocabulary word (or bigram), or, for an OOV
        bucket, ``<rare words, bucket N>``; ``<padding>`` for 0."""
        token_id = int(token_id)
        if token_id == 0:
            return "<padding>"
        if token_id <= self.oov_buckets:
            return f"<rare words, bucket {token_id}>"
        if token_id >= self.vocabulary_size:
            raise ValueError(f"token id {token_id} is outside the vocabulary (size {self.vocabulary_size})")
        return self.vocabulary[token_id - 1 - self.oov_buckets]

    def encode(self, texts: Iterable[str]) -> np.ndarray:
        """``int64`` ids ``(N, L)``, ``L = min(max_tokens, longest text in tokens)`` but at least
        1; rows right-padded with 0, so a text without words is an all-zero row."""
        return _padded([self._ids(self._truncate(self._units(text))) for text in texts], np.int64)

    def _ids(self, units: Iterable[str]) -> list[int]:
        index, buckets = self._index, self.oov_buckets
        return [index[u] if u in index else _crc_bucket(u, buckets) for u in units]

    def distinct_ids(self, texts: Iterable[str]) -> np.ndarray:
        """Each *whole* text's distinct token ids, ``int32`` ``(N, U)``, ascending, right-padded
        with 0 (``U`` = the most any text has, at least 1). Nothing is truncated: this is what
        a word count reads (the engine's planted-word test, ``Records.token_sets``), so that a
        trigger word past ``max_tokens`` is counted too, though the network never reads it."""
        return _padded([sorted(set(self._ids(self._units(text)))) for text in texts], np.int32)

    # -- storing --------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Everything needed to rebuild this tokenizer, as plain JSON types."""
        return {
            "format": FORMAT,
            "normalization": "nfkc-casefold-controls",
            "hash": "crc32-utf8",
            "unicode_version": unicodedata.unidata_version,
            "vocabulary": list(self.vocabulary),
            "oov_buckets": self.oov_buckets,
            "max_tokens": self.max_tokens,
            "truncation": self.truncation,
            "bigrams": self.bigrams,
        }

    @classmethod
    def from_dict(cls, d: dict) -> TextTokenizer:
        """The tokenizer :meth:`to_dict` described (``ValueError`` for another format)."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            found = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"not a stored text tokenizer of format {FORMAT!r} (found {found!r})")
        missing = [k for k in ("vocabulary", "oov_buckets", "max_tokens", "truncation")
                   if k not in d]
        if missing:
            raise ValueError(f"stored text tokenizer lacks {', '.join(missing)}")
        return cls(list(d["vocabulary"]), oov_buckets=d["oov_buckets"],
                   max_tokens=d["max_tokens"], truncation=d["truncation"],
                   bigrams=d.get("bigrams", False))
