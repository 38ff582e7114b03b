"""read_audio_records, read_audio_features: real FSDD clips in both layouts, odd files made here."""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import soundfile as sf
import torch
from torchaudio.functional import resample

import connectors.audio_files as audio_files
from connectors.audio_files import (
    AUDIO_SUFFIXES,
    LENGTH_POLICIES,
    QUARANTINE_SCHEMA,
    AudioPolicy,
    is_audio_source,
    read_audio_features,
    read_audio_records,
)
from connectors.errors import InputError

FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"
needs_fsdd = pytest.mark.skipif(
    not (FSDD / "wav").is_dir(),
    reason=f"real data set {FSDD} (Free Spoken Digit Dataset) is absent; it lives beside the "
           "repository, not in it")

DIGITS = ("3", "7")
SPEAKERS = ("george", "jackson", "theo")
INDICES = (0, 1)


def _fsdd_subset() -> list[tuple[str, str, Path]]:
    """``(digit, speaker, file)`` of 12 real clips: 2 digits x 3 speakers x 2 takes."""
    files = [(d, s, FSDD / "wav" / d / f"{d}_{s}_{i}.wav")
             for d in DIGITS for s in SPEAKERS for i in INDICES]
    missing = [f for _, _, f in files if not f.is_file()]
    if missing:
        pytest.skip(f"FSDD clip {missing[0]} is absent")
    return files


def _fixed(wave: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros(size, np.float32)
    out[:min(len(wave), size)] = wave[:size]
    return out


def _tone(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[spectrum.argmax()])


def _write(path: Path, data: np.ndarray, rate: int, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, rate, **kw)
    return path


def _hashes(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def fsdd_folder(tmp_path: Path) -> Path:
    """The FSDD subset copied into ``clips/<digit>/``, plus files the reader must ignore."""
    root = tmp_path / "clips"
    for digit, _, file in _fsdd_subset():
        (root / digit).mkdir(parents=True, exist_ok=True)
        shutil.copy(file, root / digit / file.name)
    (root / "3" / "README.txt").write_text("not audio")
    (root / "3" / "._3_george_0.wav").write_bytes(b"macOS resource fork")  # hidden
    (root / ".cache").mkdir()
    shutil.copy(root / "3" / "3_george_0.wav", root / ".cache" / "x.wav")  # hidden folder
    shutil.copy(root / "3" / "3_george_0.wav", root / "loose.wav")  # not in a class folder
    (root / "7" / "deeper").mkdir()
    shutil.copy(root / "3" / "3_george_0.wav", root / "7" / "deeper" / "x.wav")  # too deep
    return root


def _fsdd_manifest(tmp_path: Path, suffix: str) -> tuple[Path, pl.DataFrame]:
    """The FSDD subset copied into ``data/audio/`` with a manifest ``data/manifest<suffix>``."""
    rows = []
    for digit, speaker, file in _fsdd_subset():
        (tmp_path / "data" / "audio").mkdir(parents=True, exist_ok=True)
        shutil.copy(file, tmp_path / "data" / "audio" / file.name)
        rows.append({"path": f"audio/{file.name}", "label": int(digit), "speaker": speaker,
                     "vetted": file.stem.endswith("_0")})
    table = pl.DataFrame(rows).reverse()  # manifest order is kept, whatever it is
    manifest = tmp_path / "data" / f"manifest{suffix}"
    if suffix == ".csv":
        table.write_csv(manifest)
    else:
        table.write_parquet(manifest)
    return manifest, table


# --- real data, both layouts ----------------------------------------------------------------


@needs_fsdd
def test_class_folders_read_real_fsdd_clips(fsdd_folder: Path) -> None:
    records, quarantine, policy = read_audio_records(fsdd_folder)
    files = [f for d in DIGITS for f in (fsdd_folder / d).glob("[0-9]*.wav")]
    durations = [sf.info(f).frames / 8000 for f in files]
    expected_duration = math.ceil(np.percentile(durations, 95) * 10) / 10
    assert policy == AudioPolicy(sample_rate=8000, duration=expected_duration)
    assert quarantine.height == 0 and quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)
    assert records.modality == "audio" and records.sample_rate == 8000
    assert records.features.dtype == np.float32
    assert records.features.shape == (12, round(expected_duration * 8000))
    assert records.class_names == ["3", "7"]
    assert records.ids.tolist() == [f"{d}/{d}_{s}_{i}.wav" for d in DIGITS
                                    for s in SPEAKERS for i in INDICES]
    assert records.hard_labels.tolist() == [0] * 6 + [1] * 6
    assert records.contributors is None and not records.trusted.any()
    for row, record_id in enumerate(records.ids):
        wave, rate = sf.read(fsdd_folder / record_id, dtype="float32")
        assert rate == 8000
        np.testing.assert_array_equal(records.features[row], _fixed(wave, policy.num_samples))
    trusted, _, _ = read_audio_records(fsdd_folder, trusted=True, policy=policy)
    assert trusted.trusted.all()


@needs_fsdd
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_manifest_reads_real_fsdd_clips(tmp_path: Path, suffix: str) -> None:
    manifest, table = _fsdd_manifest(tmp_path, suffix)
    policy = AudioPolicy(sample_rate=8000, duration=0.5)
    records, quarantine, resolved = read_audio_records(
        manifest, label="label", contributor="speaker", trusted_column="vetted", policy=policy)
    assert resolved == policy and quarantine.height == 0
    assert records.features.shape == (12, 4000) and records.sample_rate == 8000
    assert records.ids.tolist() == table["path"].to_list()  # the path as written, manifest order
    assert records.contributors.tolist() == table["speaker"].to_list()
    assert records.trusted.tolist() == table["vetted"].to_list()
    assert records.class_names == ["3", "7"]
    assert [records.class_names[k] for k in records.hard_labels] == \
        [str(v) for v in table["label"]]
    for row, path in enumerate(table["path"]):
        wave, _ = sf.read(manifest.parent / path, dtype="float32")
        np.testing.assert_array_equal(records.features[row], _fixed(wave, 4000))


@needs_fsdd
def test_manifest_id_column_and_class_names(tmp_path: Path) -> None:
    manifest, table = _fsdd_manifest(tmp_path, ".parquet")
    table.with_columns(pl.format("clip-{}", pl.int_range(pl.len())).alias("clip")) \
        .write_parquet(manifest)
    records, _, _ = read_audio_records(manifest, id="clip", class_names=["7", "5", "3"],
                                       policy=AudioPolicy(duration=0.5))
    assert records.ids.tolist() == [f"clip-{i}" for i in range(12)]
    assert records.class_names == ["7", "5", "3"] and records.labels.shape == (12, 3)
    assert records.contributors is None and not records.trusted.any()


@needs_fsdd
def test_whole_fsdd_in_both_layouts_agrees() -> None:
    by_folder, q1, policy = read_audio_records(FSDD / "wav")
    by_manifest, q2, same = read_audio_records(FSDD / "metadata.csv", path="file", policy=policy)
    assert q1.height == q2.height == 0 and same == policy
    assert policy == AudioPolicy(sample_rate=8000, duration=0.7)  # 95th percentile 0.66 s
    assert by_folder.features.shape == by_manifest.features.shape == (3000, 5600)
    assert by_folder.class_names == by_manifest.class_names == [str(d) for d in range(10)]
    position = {f"wav/{i}": k for k, i in enumerate(by_folder.ids)}
    order = np.array([position[i] for i in by_manifest.ids])
    np.testing.assert_array_equal(by_folder.features[order], by_manifest.features)
    np.testing.assert_array_equal(by_folder.labels[order], by_manifest.labels)
    assert np.abs(by_folder.features).max() <= 1.0


# --- decoding, mix-down, resampling ---------------------------------------------------------


def test_stereo_16k_resampled_to_8k_keeps_its_frequency(tmp_path: Path) -> None:
    left, right = _tone(440, 1.0, 16000, 0.5), _tone(440, 1.0, 16000, 0.3)
    _write(tmp_path / "tones" / "a" / "stereo.wav", np.stack([left, right], 1), 16000,
           subtype="FLOAT")
    _write(tmp_path / "tones" / "a" / "high.wav", _tone(3000, 1.0, 16000), 16000, subtype="FLOAT")
    _write(tmp_path / "tones" / "b" / "alias.wav", _tone(6000, 1.0, 16000), 16000,
           subtype="FLOAT")
    records, quarantine, policy = read_audio_records(
        tmp_path / "tones", policy=AudioPolicy(sample_rate=8000, duration=1.0))
    assert quarantine.height == 0 and records.features.shape == (3, 8000)
    assert records.ids.tolist() == ["a/high.wav", "a/stereo.wav", "b/alias.wav"]
    high, stereo, alias = records.features
    assert _peak_hz(stereo, 8000) == pytest.approx(440, abs=1)
    assert _peak_hz(high, 8000) == pytest.approx(3000, abs=1)
    middle = slice(500, 7500)  # away from the filter's edge effects
    assert np.abs(stereo[middle]).max() == pytest.approx(0.4, abs=0.01)  # mean of 0.5 and 0.3
    assert np.abs(alias[middle]).max() < 0.01  # above 4 kHz: filtered out, not folded to 2 kHz


def test_rates_are_resolved_and_resampled_per_source_rate(tmp_path: Path) -> None:
    for name, rate in [("a.wav", 8000), ("b.wav", 8000), ("c.wav", 16000), ("d.wav", 22050)]:
        _write(tmp_path / "x" / "k" / name, _tone(440, 0.5, rate), rate)
    records, quarantine, policy = read_audio_records(tmp_path / "x")
    assert policy.sample_rate == 8000 and policy.duration == 0.5 and quarantine.height == 0
    for wave in records.features:
        assert _peak_hz(wave, 8000) == pytest.approx(440, abs=2)


def test_batched_resampling_equals_one_call_per_clip(monkeypatch) -> None:
    rng = np.random.default_rng(0)
    waves = [rng.uniform(-1, 1, n).astype(np.float32) for n in (16001, 333, 12000, 1, 9999)]
    monkeypatch.setattr(audio_files, "RESAMPLE_BATCH_SAMPLES", 30_000)  # several batches
    batched = audio_files._resample(waves, 16000, 8000)
    for wave, got in zip(waves, batched, strict=True):
        want = resample(torch.from_numpy(wave)[None], 16000, 8000)[0].numpy()
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_mixdown_is_the_channel_mean(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    data = rng.uniform(-0.9, 0.9, (8000, 3)).astype(np.float32)
    _write(tmp_path / "m" / "c" / "three.wav", data, 8000, subtype="FLOAT")
    records, _, _ = read_audio_records(tmp_path / "m", policy=AudioPolicy(duration=1.0))
    np.testing.assert_allclose(records.features[0], data.mean(axis=1), atol=1e-7)


def test_flac_and_ogg_decode(tmp_path: Path) -> None:
    tone = _tone(500, 1.0, 8000)
    _write(tmp_path / "f" / "k" / "a.FLAC", tone, 8000)
    _write(tmp_path / "f" / "k" / "b.ogg", tone, 8000)
    records, quarantine, _ = read_audio_records(tmp_path / "f", policy=AudioPolicy(duration=1.0))
    assert quarantine.height == 0 and records.ids.tolist() == ["k/a.FLAC", "k/b.ogg"]
    np.testing.assert_allclose(records.features[0], tone, atol=1e-4)  # lossless, 16-bit
    assert _peak_hz(records.features[1], 8000) == pytest.approx(500, abs=1)  # lossy


def test_samples_beyond_one_are_clipped(tmp_path: Path) -> None:
    _write(tmp_path / "c" / "k" / "loud.wav", np.array([0.5, 1.5, -2.0, 0.1], np.float32), 8000,
           subtype="FLOAT")
    records, _, _ = read_audio_records(tmp_path / "c", policy=AudioPolicy(duration=0.0005))
    np.testing.assert_array_equal(records.features[0], np.float32([0.5, 1.0, -1.0, 0.1]))


# --- length policies and the default policy -------------------------------------------------


@pytest.mark.parametrize("length_policy", LENGTH_POLICIES)
def test_length_policies(tmp_path: Path, length_policy: str) -> None:
    clips = {"short.wav": _tone(440, 0.5, 8000), "exact.wav": _tone(440, 1.0, 8000),
             "long.wav": _tone(440, 1.5, 8000)}
    for name, wave in clips.items():
        _write(tmp_path / "l" / "k" / name, wave, 8000, subtype="FLOAT")
    records, quarantine, _ = read_audio_records(
        tmp_path / "l", policy=AudioPolicy(duration=1.0, length_policy=length_policy))
    kept = {
        "pad-crop": ["exact", "long", "short"], "pad": ["exact", "short"],
        "crop": ["exact", "long"], "exact": ["exact"],
    }[length_policy]
    assert records.ids.tolist() == [f"k/{name}.wav" for name in kept]
    for row, name in enumerate(kept):
        np.testing.assert_array_equal(records.features[row], _fixed(clips[f"{name}.wav"], 8000))
    reasons = dict(zip(quarantine["path"], quarantine["reason"], strict=True))
    expected = {}
    if length_policy in ("pad", "exact"):
        expected["k/long.wav"] = "longer than 1.0 s (1.50 s)"
    if length_policy in ("crop", "exact"):
        expected["k/short.wav"] = "shorter than 1.0 s (0.50 s)"
    assert reasons == expected


def test_default_policy_resolution() -> None:
    policy = AudioPolicy().resolved([8000, 8000, 16000], [0.42, 0.55, 2.0])
    assert policy == AudioPolicy(sample_rate=8000, duration=1.9)  # 95th pct 1.855 -> 1.9
    assert policy.num_samples == 15200 and policy.is_complete
    assert AudioPolicy(resample=False).resolved([8000, 8000, 16000], [0.42, 0.55, 2.0]) == \
        AudioPolicy(sample_rate=8000, duration=0.6, resample=False)  # only the 8 kHz clips count
    assert AudioPolicy().resolved([8000, 16000], [0.3, 0.3]).sample_rate == 16000  # tie: higher
    assert AudioPolicy().resolved([8000], [0.7]).duration == 0.7  # already a whole 0.1 s
    assert AudioPolicy().resolved([8000], [0.001]).duration == 0.1
    fixed = AudioPolicy(sample_rate=22050, duration=2.5, length_policy="exact")
    assert fixed.resolved([8000], [0.1]) == fixed


def test_default_policy_resolution_from_files(tmp_path: Path) -> None:
    for name, rate, seconds in [("a.wav", 8000, 0.42), ("b.wav", 8000, 0.55),
                                ("c.wav", 16000, 2.0)]:
        _write(tmp_path / "d" / "k" / name, _tone(440, seconds, rate), rate)
    records, quarantine, policy = read_audio_records(tmp_path / "d")
    assert policy == AudioPolicy(sample_rate=8000, duration=1.9)
    assert records.features.shape == (3, 15200) and quarantine.height == 0
    records, quarantine, policy = read_audio_records(tmp_path / "d",
                                                     policy=AudioPolicy(resample=False))
    assert policy == AudioPolicy(sample_rate=8000, duration=0.6, resample=False)
    assert records.ids.tolist() == ["k/a.wav", "k/b.wav"]
    assert quarantine["reason"].to_list() == ["sample rate 16000 Hz, expected 8000 Hz"]


def test_policy_round_trip_and_validation() -> None:
    policy = AudioPolicy(sample_rate=16000, duration=1.0, length_policy="crop", resample=False)
    assert policy.to_dict() == {"sample_rate": 16000, "duration": 1.0, "length_policy": "crop",
                                "resample": False}
    assert AudioPolicy.from_dict(policy.to_dict()) == policy
    assert AudioPolicy.from_dict({}) == AudioPolicy()
    for bad in [{"sample_rate": 0}, {"sample_rate": 8000.5}, {"duration": -1.0},
                {"duration": float("nan")}, {"length_policy": "stretch"}, {"resample": "no"},
                {"sample_rate": 8000, "duration": 1e-5}, {"colour": "blue"}]:
        with pytest.raises(ValueError):
            AudioPolicy.from_dict(bad)
    with pytest.raises(ValueError, match="resolve it first"):
        AudioPolicy(sample_rate=8000).num_samples  # noqa: B018


# --- quarantine -----------------------------------------------------------------------------


def test_every_quarantine_reason_in_a_manifest(tmp_path: Path) -> None:
    data = tmp_path / "data"
    one_second = _tone(440, 1.0, 8000)
    _write(data / "good.wav", one_second, 8000)
    _write(tmp_path / "outside.wav", one_second, 8000)
    (data / "garbage.wav").write_bytes(b"RIFF? no, just text " * 20)
    _write(data / "whole.flac", one_second, 8000)
    blob = (data / "whole.flac").read_bytes()
    (data / "truncated.flac").write_bytes(blob[:len(blob) // 2])
    (data / "zero-bytes.wav").write_bytes(b"")
    _write(data / "no-frames.wav", np.zeros((0, 1), np.float32), 8000)
    nan = one_second.copy()
    nan[100] = np.nan
    _write(data / "nan.wav", nan, 8000, subtype="FLOAT")
    _write(data / "rate.wav", _tone(440, 1.0, 16000), 16000)
    _write(data / "long.wav", _tone(440, 1.52, 8000), 8000)
    _write(data / "short.wav", _tone(440, 0.31, 8000), 8000)
    (data / "speech.mp3").write_bytes(b"ID3")
    (data / "folder.wav").mkdir()
    rows = [
        ("good.wav", None),
        ("../outside.wav", "path escapes the root folder"),
        (str(tmp_path / "outside.wav"), "path escapes the root folder"),
        ("sub/../../outside.wav", "path escapes the root folder"),
        ("missing.wav", "file not found"),
        ("garbage.wav", "cannot decode (Format not recognised)"),
        ("truncated.flac", "cannot decode ("),
        ("zero-bytes.wav", "empty audio"),
        ("no-frames.wav", "empty audio"),
        ("nan.wav", "not finite samples"),
        ("rate.wav", "sample rate 16000 Hz, expected 8000 Hz"),
        ("long.wav", "longer than 1.0 s (1.52 s)"),
        ("short.wav", "shorter than 1.0 s (0.31 s)"),
        ("speech.mp3", "unsupported file type '.mp3'"),
        ("folder.wav", "not a file"),
        (str(data / "sub" / ".." / "good.wav"), None),  # absolute but inside the root
    ]
    manifest = data / "manifest.csv"
    pl.DataFrame({"path": [p for p, _ in rows], "label": ["k"] * len(rows),
                  "id": [f"r{i}" for i in range(len(rows))]}).write_csv(manifest)
    before = _hashes(tmp_path)
    records, quarantine, _ = read_audio_records(
        manifest, id="id",
        policy=AudioPolicy(sample_rate=8000, duration=1.0, length_policy="exact", resample=False))
    assert records.ids.tolist() == ["r0", f"r{len(rows) - 1}"]
    expected = [(i, p, r) for i, (p, r) in enumerate(rows) if r is not None]
    assert quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)
    assert quarantine["source"].to_list() == [str(manifest)] * len(expected)
    assert quarantine["row"].to_list() == [i for i, _, _ in expected]
    assert quarantine["path"].to_list() == [p for _, p, _ in expected]
    for (_, path, reason), got in zip(expected, quarantine["reason"], strict=True):
        assert got.startswith(reason), (path, got)
        assert "\n" not in got
    assert _hashes(tmp_path) == before  # nothing read was changed


def test_folder_quarantine_has_relative_paths_and_no_rows(tmp_path: Path) -> None:
    root = tmp_path / "f"
    _write(root / "a" / "ok.wav", _tone(440, 1.0, 8000), 8000)
    (root / "b").mkdir()
    (root / "b" / "bad.ogg").write_bytes(b"OggS not really")
    _write(root / "b" / "full.wav", _tone(440, 1.0, 8000), 8000)
    blob = (root / "b" / "full.wav").read_bytes()
    (root / "b" / "truncated.WAV").write_bytes(blob[:len(blob) // 2])  # decodes, shorter
    records, quarantine, _ = read_audio_records(root, policy=AudioPolicy(duration=1.0))
    assert records.ids.tolist() == ["a/ok.wav", "b/full.wav", "b/truncated.WAV"]
    assert records.class_names == ["a", "b"]
    assert np.all(records.features[2, 4000:] == 0)  # the lost half is padding
    assert quarantine.to_dicts() == [{"source": str(root), "row": None, "path": "b/bad.ogg",
                                      "reason": quarantine["reason"][0]}]
    assert quarantine["reason"][0].startswith("cannot decode (")


# --- hard errors ----------------------------------------------------------------------------


def _manifest(tmp_path: Path, table: pl.DataFrame, suffix: str = ".parquet") -> Path:
    _write(tmp_path / "a.wav", _tone(440, 0.5, 8000), 8000)
    _write(tmp_path / "b.wav", _tone(440, 0.5, 8000), 8000)
    path = tmp_path / f"manifest{suffix}"
    table.write_csv(path) if suffix == ".csv" else table.write_parquet(path)
    return path


TABLE_ERRORS = {
    "missing column": (
        pl.DataFrame({"path": ["a.wav"], "class": ["x"]}), {},
        [None, None, "missing column(s) 'label'; available: path, class"]),
    "null label": (
        pl.DataFrame({"path": ["a.wav", "b.wav"], "label": ["x", None]}), {},
        ["row 1", "column 'label'", "missing label (null)"]),
    "empty label": (
        pl.DataFrame({"path": ["a.wav", "b.wav"], "label": ["x", "  "]}), {},
        ["row 1", "column 'label'", "empty label"]),
    "null path": (
        pl.DataFrame({"path": [None, "b.wav"], "label": ["x", "y"]}), {},
        ["row 0", "column 'path'", "missing path (null)"]),
    "empty path": (
        pl.DataFrame({"path": ["a.wav", ""], "label": ["x", "y"]}), {},
        ["row 1", "column 'path'", "empty path"]),
    "duplicate path as id": (
        pl.DataFrame({"path": ["a.wav", "b.wav", "a.wav"], "label": ["x", "y", "x"]}), {},
        ["row 2", "column 'path'", "duplicate id 'a.wav', also in"]),
    "duplicate id": (
        pl.DataFrame({"path": ["a.wav", "b.wav"], "label": ["x", "y"], "k": ["1", "1"]}),
        {"id": "k"}, ["row 1", "column 'k'", "duplicate id '1'"]),
    "label outside class_names": (
        pl.DataFrame({"path": ["a.wav", "b.wav"], "label": ["x", "z"]}),
        {"class_names": ["x", "y"]}, ["row 1", "column 'label'", "unknown label 'z'"]),
    "missing contributor column": (
        pl.DataFrame({"path": ["a.wav"], "label": ["x"]}), {"contributor": "worker"},
        [None, None, "missing column(s) 'worker'"]),
    "trusted flag not boolean": (
        pl.DataFrame({"path": ["a.wav", "b.wav"], "label": ["x", "y"], "t": [0, 2]}),
        {"trusted_column": "t"}, ["row 1", "column 't'", "trusted flag must be"]),
}


@pytest.mark.parametrize(("case", "suffix"), [
    (case, suffix) for case in sorted(TABLE_ERRORS) for suffix in (".parquet", ".csv")
    if (case, suffix) != ("empty label", ".csv")  # CSV reads a blank field as null
])
def test_table_problems_are_one_line_errors_naming_file_row_column(
        tmp_path: Path, case: str, suffix: str) -> None:
    table, options, (row, column, message) = TABLE_ERRORS[case]
    manifest = _manifest(tmp_path, table, suffix)
    with pytest.raises(InputError) as caught:
        read_audio_records(manifest, **options)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(f"{manifest}, " if row or column else f"{manifest}:")
    assert message in text
    for part in (row, column):
        if part is not None:
            assert part in text


def test_unreadable_or_missing_manifest(tmp_path: Path) -> None:
    (tmp_path / "manifest.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match=r"manifest\.parquet: cannot read table"):
        read_audio_records(tmp_path / "manifest.parquet")
    with pytest.raises(InputError, match=r"nothing\.csv: not found"):
        read_audio_records(tmp_path / "nothing.csv")
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(InputError, match="unknown table suffix"):
        read_audio_records(tmp_path / "manifest.json")
    pl.DataFrame({"path": [], "label": []}, schema={"path": pl.String, "label": pl.String}) \
        .write_parquet(tmp_path / "empty.parquet")
    with pytest.raises(InputError, match="empty.parquet: the manifest has no rows"):
        read_audio_records(tmp_path / "empty.parquet")


def test_folder_problems(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "k").mkdir(parents=True)
    (empty / "k" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"empty: no audio files \(.wav, .flac, .ogg\) in class"):
        read_audio_records(empty)
    _write(empty / "loose.wav", _tone(440, 0.1, 8000), 8000)
    with pytest.raises(InputError, match="the 1 audio file.* directly in it need a sub-folder"):
        read_audio_records(empty)
    broken = tmp_path / "broken"
    (broken / "k").mkdir(parents=True)
    (broken / "k" / "a.wav").write_bytes(b"junk")
    (broken / "k" / "b.flac").write_bytes(b"")
    with pytest.raises(InputError) as caught:
        read_audio_records(broken)
    assert str(caught.value) == (f"{broken}: no readable audio files: 2 quarantined, first: "
                                 "k/a.wav: cannot decode (Format not recognised)")
    ok = tmp_path / "ok"
    _write(ok / "cat" / "a.wav", _tone(440, 0.1, 8000), 8000)
    _write(ok / "dog" / "a.wav", _tone(440, 0.1, 8000), 8000)
    with pytest.raises(InputError, match=r"ok/dog: class folder unknown label 'dog'"):
        read_audio_records(ok, class_names=["cat", "bird"])
    with pytest.raises(InputError, match=r"ok: contributor='worker' names a manifest column"):
        read_audio_records(ok, contributor="worker")
    with pytest.raises(InputError, match="no readable audio files: 2 quarantined, first: "
                                         r"cat/a.wav: longer than 0.05 s \(0.10 s\)"):
        read_audio_records(ok, policy=AudioPolicy(duration=0.05, length_policy="exact"))


# --- unlabelled audio for prediction, and the source check ---------------------------------


def test_read_audio_features_from_a_tree_and_a_manifest(tmp_path: Path) -> None:
    root = tmp_path / "new"
    _write(root / "flat.wav", _tone(440, 0.5, 16000), 16000)
    _write(root / "deep" / "er" / "x.flac", _tone(880, 0.3, 8000), 8000)
    (root / "deep" / "bad.ogg").write_bytes(b"junk")
    (root / "notes.txt").write_text("ignored")
    policy = AudioPolicy(sample_rate=8000, duration=0.5)
    waves, ids, quarantine = read_audio_features(root, policy=policy)
    assert waves.shape == (2, 4000) and waves.dtype == np.float32
    assert ids.tolist() == ["deep/er/x.flac", "flat.wav"]
    assert quarantine["path"].to_list() == ["deep/bad.ogg"]
    assert _peak_hz(waves[1], 8000) == pytest.approx(440, abs=2)
    assert np.all(waves[0, 2400:] == 0)

    pl.DataFrame({"path": ["flat.wav", "deep/er/x.flac"], "name": ["one", "two"]}) \
        .write_csv(root / "predict.csv")
    by_manifest, ids, _ = read_audio_features(root / "predict.csv", id="name", policy=policy)
    assert ids.tolist() == ["one", "two"]
    np.testing.assert_array_equal(by_manifest, waves[[1, 0]])
    _, ids, _ = read_audio_features(root / "predict.csv", policy=policy)
    assert ids.tolist() == ["flat.wav", "deep/er/x.flac"]
    with pytest.raises(ValueError, match="complete policy"):
        read_audio_features(root, policy=AudioPolicy(sample_rate=8000))
    with pytest.raises(InputError, match="missing column"):
        read_audio_features(root / "predict.csv", path="file", policy=policy)


@needs_fsdd
def test_trusted_set_reuses_the_resolved_policy(tmp_path: Path, fsdd_folder: Path) -> None:
    collected, _, policy = read_audio_records(fsdd_folder)
    _write(tmp_path / "vetted" / "7" / "v.wav", _tone(440, 2.0, 16000), 16000)
    trusted, _, again = read_audio_records(tmp_path / "vetted", trusted=True, policy=policy,
                                           class_names=collected.class_names)
    assert again == policy and trusted.input_shape == collected.input_shape
    assert trusted.class_names == ["3", "7"] and trusted.hard_labels.tolist() == [1]


def test_is_audio_source(tmp_path: Path) -> None:
    _write(tmp_path / "a" / "k" / "x.Wav", _tone(440, 0.1, 8000), 8000)
    (tmp_path / "tables").mkdir()
    pl.DataFrame({"x": [1]}).write_parquet(tmp_path / "tables" / "part-0.parquet")
    (tmp_path / "hidden" / ".k").mkdir(parents=True)
    _write(tmp_path / "hidden" / ".k" / "x.wav", _tone(440, 0.1, 8000), 8000)
    assert is_audio_source(tmp_path / "a") and is_audio_source(str(tmp_path / "a"))
    assert not is_audio_source(tmp_path / "tables")
    assert not is_audio_source(tmp_path / "hidden")
    assert not is_audio_source(tmp_path / "a" / "k" / "x.Wav")  # a file, not a folder
    assert not is_audio_source(tmp_path / "missing")
    assert not is_audio_source([tmp_path / "a"])
    assert AUDIO_SUFFIXES == (".wav", ".flac", ".ogg")
