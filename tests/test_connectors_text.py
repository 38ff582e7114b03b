"""Text records: normalisation, the download-free tokenizer, and ``read_records(text=...)``.

Real data: the SMS Spam Collection (one short message per row) and a CFPB complaint sample
(long narratives, multi-line quoted CSV fields), both under ``../shared/data``; tests that need
them skip, saying which file is absent. Bad inputs are made from them in ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from connectors.errors import InputError
from connectors.table_records import read_features, read_records
from connectors.text_tokens import TRUNCATION_POLICIES, TextTokenizer, normalize_text

REPO = Path(__file__).resolve().parents[1]


def _shared_file(shared_data: Path, relative: str) -> Path:
    path = shared_data / relative
    if not path.is_file():
        pytest.skip(f"real data set {path} is absent")
    return path


@pytest.fixture(scope="module")
def sms_path(shared_data) -> Path:
    return _shared_file(shared_data, "sms_spam/sms_spam.csv")


@pytest.fixture(scope="module")
def cfpb_path(shared_data) -> Path:
    return _shared_file(shared_data, "cfpb_complaints/cfpb_sample_b.csv")


@pytest.fixture(scope="module")
def sms(sms_path) -> pl.DataFrame:
    return pl.read_csv(sms_path)


@pytest.fixture(scope="module")
def sms_tokenizer(sms) -> TextTokenizer:
    return TextTokenizer.fit(sms["text"].to_list(), max_vocabulary=3000, oov_buckets=257,
                             max_tokens=32)


# -- normalize_text ---------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("Hello World", "hello world"),
    ("  FREE\tentry\r\n\nnow  ", "free entry now"),
    ("ＦＲＥＥ ｗｉｎ １０００", "free win 1000"),         # full-width forms (NFKC)
    ("ﬁnal oﬀer", "final offer"),                        # ligatures (NFKC)
    ("Straße İstanbul", "strasse i̇stanbul"),             # case folding, not just lower()
    ("fr\u200bee\u00adcall\ufeff", "freecall"),          # zero-width / soft hyphen / BOM removed
    ("a\x00b\x07c\x1fd\x7fe\x85f", "a b c d e f"),       # control characters become spaces
    ("caf\u0065\u0301 déjà", "café déjà"),               # combining accent composed (NFKC)
    ("line\u2028one\u00a0two\u3000three", "line one two three"),  # Unicode whitespace
    ("\t \u200b\r\n", ""),
])
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected
    assert normalize_text(expected) == expected


def test_normalize_text_is_idempotent_on_real_messages(sms):
    texts = sms["text"].to_list()
    once = [normalize_text(t) for t in texts]
    assert [normalize_text(t) for t in once] == once
    assert all(t == t.strip() and "  " not in t and "\n" not in t for t in once)
    with pytest.raises(TypeError, match="takes a str"):
        normalize_text(42)


# -- TextTokenizer ----------------------------------------------------------------------------

def test_fit_vocabulary_and_id_layout(sms, sms_tokenizer):
    tok = sms_tokenizer
    texts = sms["text"].to_list()
    assert len(tok.vocabulary) == 3000
    assert tok.vocabulary_size == 1 + 257 + 3000
    assert tok.token_id(tok.vocabulary[0]) == 1 + 257
    assert tok.token_id(tok.vocabulary[-1]) == tok.vocabulary_size - 1
    # most frequent first, ties broken by the word; words are normalised
    counts = {}
    for text in texts:
        for word in tok.tokens(text):
            counts[word] = counts.get(word, 0) + 1
    keys = [(-counts[w], w) for w in tok.vocabulary]
    assert keys == sorted(keys)
    assert all(w == normalize_text(w) and " " not in w for w in tok.vocabulary)
    assert tok.vocabulary[:3] == ["i", "to", "you"]
    # deterministic, and independent of the order of the texts
    shuffled = [texts[i] for i in np.random.default_rng(0).permutation(len(texts))]
    assert TextTokenizer.fit(shuffled, max_vocabulary=3000, oov_buckets=257,
                             max_tokens=32) == tok
    # min_count: a word seen once never gets a vocabulary id
    full = TextTokenizer.fit(texts, max_vocabulary=10**6, min_count=2)
    assert min(counts[w] for w in full.vocabulary) == 2
    assert len(full.vocabulary) == sum(c >= 2 for c in counts.values())
    assert TextTokenizer.fit(texts, max_vocabulary=0).vocabulary == []


def test_encode_real_messages(sms, sms_tokenizer):
    tok = sms_tokenizer
    texts = [normalize_text(t) for t in sms["text"].to_list()]
    ids = tok.encode(texts)
    assert ids.dtype == np.int64 and ids.shape == (len(texts), 32)
    assert ids.min() >= 0 and ids.max() < tok.vocabulary_size
    lengths = [len(tok.tokens(t)) for t in texts]
    for row, n in zip(ids, lengths, strict=True):
        kept = min(n, 32)
        assert (row[:kept] > 0).all() and (row[kept:] == 0).all()
    first = tok.tokens(texts[0])
    assert ids[0, :len(first)].tolist() == [tok.token_id(w) for w in first]
    # raw and normalised text encode alike; L is the longest text when shorter than max_tokens
    assert np.array_equal(tok.encode(sms["text"].to_list()[:50]), ids[:50, :ids[:50].astype(bool)
                                                                      .sum(1).max()])
    short = tok.encode(["ok lar", "u dun say so early hor"])
    assert short.shape == (2, 6) and short[0, 2:].tolist() == [0] * 4
    # no words: an all-zero row; no texts: shape (0, 1)
    assert tok.encode(["...", "!!! :-)"]).tolist() == [[0], [0]]
    assert tok.encode([]).shape == (0, 1)
    # out-of-vocabulary words land in 1..oov_buckets and never collide with padding
    oov = tok.encode(["zxqvword", "another_unseen_token"])[:, 0]
    assert ((oov >= 1) & (oov <= 257)).all()


def test_truncation_policies(cfpb_path):
    texts = pl.read_csv(cfpb_path)["narrative"].to_list()
    long_text = max(texts, key=len)
    for policy in TRUNCATION_POLICIES:
        tok = TextTokenizer.fit(texts, max_tokens=9, truncation=policy)
        words = tok.tokens(long_text)
        assert len(words) > 100
        row = tok.encode([long_text])[0].tolist()
        kept = words[:9] if policy == "head" else words[:5] + words[-4:]
        assert row == [tok.token_id(w) for w in kept]
    tok = TextTokenizer([], max_tokens=1, truncation="head-tail")
    assert tok.encode(["alpha beta gamma"]).tolist() == [[tok.token_id("alpha")]]
    with pytest.raises(ValueError, match="truncation must be one of"):
        TextTokenizer([], truncation="tail")


def test_distinct_ids_read_the_whole_text(cfpb_path):
    texts = pl.read_csv(cfpb_path)["narrative"].to_list()
    long_text = max(texts, key=len)
    tok = TextTokenizer.fit(texts, max_tokens=9)
    sets = tok.distinct_ids([long_text, "Beta alpha beta", "..."])
    words = tok.tokens(long_text)
    assert sets.dtype == np.int32 and len(set(words)) > 9  # far more than the 9 encode keeps
    distinct = sorted({tok.token_id(w) for w in words})  # rare words may share an OOV bucket
    assert sets[0].tolist() == distinct and sets.shape[1] == len(distinct)
    assert sets[1].tolist()[:3] == sorted([tok.token_id("alpha"), tok.token_id("beta"), 0])[1:] + [0]
    assert not sets[1, 2:].any() and not sets[2].any()  # padded; a text without words: all 0
    assert tok.distinct_ids([]).shape == (0, 1)


def test_round_trip_and_stable_hashing_across_processes(tmp_path, sms, sms_tokenizer):
    tok = sms_tokenizer
    stored = json.loads(json.dumps(tok.to_dict()))
    assert stored["format"] == "sanitize-text-tokenizer/1"
    again = TextTokenizer.from_dict(stored)
    assert again == tok and again.to_dict() == tok.to_dict()
    texts = sms["text"].to_list()[:400] + ["zxqv unseen wordsmithery qwfp", "日本語 のテキスト"]
    expected = tok.encode(texts)
    assert np.array_equal(again.encode(texts), expected)
    # another interpreter, with another hash seed, rebuilds the same ids from the JSON
    (tmp_path / "tok.json").write_text(json.dumps(stored))
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    script = (
        "import json, sys, numpy as np\n"
        "from connectors.text_tokens import TextTokenizer\n"
        "tok = TextTokenizer.from_dict(json.load(open(sys.argv[1])))\n"
        "np.save(sys.argv[3], tok.encode(json.load(open(sys.argv[2]))))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "tok.json"),
                    str(tmp_path / "texts.json"), str(tmp_path / "ids.npy")],
                   check=True, env=env, cwd=REPO, timeout=120)
    assert np.array_equal(np.load(tmp_path / "ids.npy"), expected)
    with pytest.raises(ValueError, match="not a stored text tokenizer"):
        TextTokenizer.from_dict({**stored, "format": "something-else/9"})
    with pytest.raises(ValueError, match="twice"):
        TextTokenizer(["a", "b", "a"])


def test_describe_names_what_an_id_stands_for():
    tok = TextTokenizer(["the", "cf"], oov_buckets=4)
    assert [tok.describe(i) for i in range(7)] == ["<padding>", "<rare words, bucket 1>",
                                                   "<rare words, bucket 2>", "<rare words, bucket 3>",
                                                   "<rare words, bucket 4>", "the", "cf"]
    assert tok.describe(tok.token_id("cf")) == "cf"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.describe(7)


def test_bigrams_are_interleaved_in_reading_order(sms):
    texts = sms["text"].to_list()
    tok = TextTokenizer.fit(texts, bigrams=True)
    assert "call now" in tok.vocabulary and "i" in tok.vocabulary
    row = tok.encode(["Call now free"])[0].tolist()
    units = ["call", "now", "call now", "free", "now free"]
    assert row == [tok.token_id(u) for u in units]
    assert TextTokenizer.from_dict(tok.to_dict()) == tok


def test_words_of_other_scripts():
    tok = TextTokenizer([])
    assert tok.tokens("नमस्ते दुनिया") == ["नमस्ते", "दुनिया"]  # combining vowel signs
    assert tok.tokens("Привет, МИР!") == ["привет", "мир"]
    assert tok.tokens("don't e-mail me_now") == ["don", "t", "e", "mail", "me_now"]


def test_fit_is_fast_on_long_narratives(cfpb_path):
    texts = pl.read_csv(cfpb_path)["narrative"].to_list()
    start = time.perf_counter()
    tok = TextTokenizer.fit(texts)
    ids = tok.encode(texts)
    assert time.perf_counter() - start < 2.0
    assert ids.shape == (len(texts), 256) and len(tok.vocabulary) > 1000


# -- read_records / read_features with text= --------------------------------------------------

def test_read_sms_csv(sms_path, sms):
    records = read_records(sms_path, label="label", text="text")
    assert records.modality == "text" and records.feature_names == ["text"]
    assert records.features.dtype == object and records.features.shape == (5574,)
    assert records.features.tolist() == [normalize_text(t) for t in sms["text"].to_list()]
    assert records.class_names == ["ham", "spam"]
    assert records.hard_labels.sum() == 747 and records.contributors is None
    tok = TextTokenizer.fit(records.features)
    encoded = records.with_features(tok.encode(records.features), tok.vocabulary_size)
    assert encoded.features.shape == (5574, tok.encode(records.features).shape[1])
    assert encoded.vocabulary_size == tok.vocabulary_size and encoded.modality == "text"


def test_content_ids_for_text(tmp_path, sms_path, sms):
    first = read_records(sms_path, label="label", text="text")
    again = read_records(sms_path, label="label", text="text")
    assert first.ids.tolist() == again.ids.tolist()
    assert len(set(first.ids.tolist())) == 5574
    assert all(len(i.split("-")[0]) == 16 for i in first.ids)
    # the collection repeats some messages verbatim: those copies get -2, -3... suffixes
    texts = first.features.tolist()
    repeated = [i for i, t in enumerate(texts) if texts.index(t) != i]
    assert repeated and all("-" in first.ids[i] for i in repeated)
    # order-free: a shuffled file gives each unique message the same id
    order = np.random.default_rng(3).permutation(len(sms))
    sms[order].write_csv(tmp_path / "shuffled.csv")
    shuffled = read_records(tmp_path / "shuffled.csv", label="label", text="text")
    unique = {t for t in texts if texts.count(t) == 1}
    by_text = {t: i for t, i in zip(texts, first.ids, strict=True) if t in unique}
    assert {t: i for t, i in zip(shuffled.features, shuffled.ids, strict=True)
            if t in unique} == by_text
    # ids follow content: one changed character, or another label, is another id
    small = pl.DataFrame({"label": ["ham", "spam", "ham"], "text": ["Call me", "Call me",
                                                                     "Call me!"]})
    small.write_csv(tmp_path / "small.csv")
    ids = read_records(tmp_path / "small.csv", label="label", text="text").ids
    assert len(set(ids.tolist())) == 3 and not any("-" in i for i in ids)
    # same ids for texts that normalise alike, and from read_features (no labels) stable too
    small.with_columns(pl.col("text").str.to_uppercase()).write_csv(tmp_path / "upper.csv")
    assert read_records(tmp_path / "upper.csv", label="label", text="text").ids.tolist() == \
        ids.tolist()
    values, fids = read_features(tmp_path / "small.csv", text="text")
    assert values.tolist() == ["call me", "call me", "call me!"]
    assert fids.tolist() == read_features(tmp_path / "small.csv", text="text")[1].tolist()
    assert fids[0] != fids[1] and fids[1] == f"{fids[0]}" + "-2"


def test_read_cfpb_multiline_csv_and_parquet(tmp_path, cfpb_path):
    raw = pl.read_csv(cfpb_path)
    assert raw["narrative"].str.contains("\n").sum() > 100  # multi-line quoted fields
    records = read_records(cfpb_path, label="product", text="narrative")
    assert len(records) == 2085 and records.modality == "text"
    assert records.feature_names == ["narrative"] and len(records.class_names) == 4
    assert not any("\n" in t for t in records.features)
    assert records.features.tolist() == [normalize_text(t) for t in raw["narrative"].to_list()]
    raw.with_columns(pl.col("product").cast(pl.Categorical),
                     pl.col("narrative").cast(pl.Categorical)).write_parquet(tmp_path / "c.parquet")
    from_parquet = read_records(tmp_path / "c.parquet", label="product", text="narrative")
    assert from_parquet.features.tolist() == records.features.tolist()
    assert from_parquet.ids.tolist() == records.ids.tolist()
    values, ids = read_features(cfpb_path, modality="text", text="narrative")
    assert values.tolist() == records.features.tolist() and len(set(ids.tolist())) == 2085
    with pytest.raises(InputError, match=r"found text columns, the model takes image records"):
        read_features(cfpb_path, modality="image", text="narrative")


def test_text_errors_are_located(tmp_path, sms):
    table = sms[:40]
    table.write_csv(tmp_path / "a.csv")
    with pytest.raises(InputError, match=r"a.csv: missing column\(s\) 'body'; available: "
                                         r"label, text"):
        read_records(tmp_path / "a.csv", label="label", text="body")
    # a null (an empty CSV field) in the third of three shards
    shards = tmp_path / "shards"
    shards.mkdir()
    nulled = table.with_columns(pl.when(pl.int_range(40) == 33).then(None)
                                .otherwise(pl.col("text")).alias("text"))
    for k in range(3):
        nulled[15 * k:15 * (k + 1)].write_csv(shards / f"part-{k}.csv")
    with pytest.raises(InputError, match=r"part-2.csv, row 3, column 'text': missing text "
                                         r"\(null\)"):
        read_records(shards, label="label", text="text")
    nulled.write_parquet(tmp_path / "null.parquet")
    with pytest.raises(InputError, match=r"null.parquet, row 33, column 'text': missing text"):
        read_features(tmp_path / "null.parquet", text="text")
    table.with_columns(pl.lit(None).alias("text")).write_parquet(tmp_path / "allnull.parquet")
    with pytest.raises(InputError, match=r"allnull.parquet, row 0, column 'text': missing text"):
        read_records(tmp_path / "allnull.parquet", label="label", text="text")
    # not a string column
    table.with_columns(pl.int_range(40).alias("text")).write_csv(tmp_path / "ints.csv")
    with pytest.raises(InputError, match=r"ints.csv, column 'text': text column is not text "
                                         r"\(Int64\)"):
        read_records(tmp_path / "ints.csv", label="label", text="text")
    # empty once normalised (whitespace, control and zero-width characters only)
    for k, blank in enumerate([" \t ", "\u200b\u200b", "\r\n"]):
        table.with_columns(pl.when(pl.int_range(40) == 7 + k).then(pl.lit(blank))
                           .otherwise(pl.col("text")).alias("text")).write_csv(
            tmp_path / f"blank{k}.csv")
        with pytest.raises(InputError, match=rf"blank{k}.csv, row {7 + k}, column 'text': "
                                             r"empty text"):
            read_records(tmp_path / f"blank{k}.csv", label="label", text="text")
    # a text of punctuation only is not empty: it is kept (the tokenizer gives it no words)
    table.with_columns(pl.when(pl.int_range(40) == 0).then(pl.lit(":-)"))
                       .otherwise(pl.col("text")).alias("text")).write_csv(tmp_path / "smile.csv")
    assert read_records(tmp_path / "smile.csv", label="label", text="text").features[0] == ":-)"


def test_text_usage_errors(tmp_path, sms):
    sms[:10].write_csv(tmp_path / "a.csv")
    with pytest.raises(ValueError, match="only one of image, features or text"):
        read_records(tmp_path / "a.csv", label="label", text="text", image="text")
    with pytest.raises(ValueError, match="only one of image, features or text"):
        read_features(tmp_path / "a.csv", text="text", features=["label"])
    with pytest.raises(ValueError, match="need text= naming the text column"):
        read_features(tmp_path / "a.csv", modality="text")
