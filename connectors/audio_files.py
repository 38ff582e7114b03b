"""Audio folders and manifests into :class:`~sanitizer.records.Records`: :func:`read_audio_records`.

Audio data sets come in two common layouts, and both are read:

* **a folder with one sub-folder per class**::

      clips/
        yes/  a.wav  b.flac
        no/   c.ogg  README.txt     <- not audio: ignored

  The label is the sub-folder's name, the id is the path below the root with ``/`` separators
  (``yes/a.wav``). Only files with an audio suffix (``.wav``, ``.flac``, ``.ogg``, any case) in
  *immediate* sub-folders are records; other files, files directly in the root, deeper folders
  and hidden names (``.DS_Store``, macOS ``._a.wav`` shadows) are ignored. Classes are ordered
  naturally (``2`` before ``10``) unless ``class_names`` fixes the order; files are read in
  natural order of their path.

* **a manifest table** (CSV/TSV/Parquet, one row per clip) with a path column, a label column
  and optionally id, contributor and trusted columns::

      path,label,worker
      clips/a.wav,yes,w17
      clips/c.ogg,no,w03

  Relative paths start at the manifest's folder, which is also the *root*: a path that leaves it
  (an absolute path elsewhere, ``../x.wav``) is quarantined, so a manifest cannot make the tool
  read arbitrary files. The check is on the path as written, after ``..`` is resolved; symbolic
  links inside the root are followed (placing them needs write access to the root itself). The
  id is the id column's value, else the path as written. Labels are parsed by
  :func:`connectors.labels.parse_labels` over *all* rows (quarantined ones included, so the
  class list does not depend on which files decode).

Every clip becomes a mono ``float32`` waveform in [-1, 1] of exactly ``S`` samples at one sample
rate, by an :class:`AudioPolicy`:

1. decode with ``soundfile`` (``dtype="float32"``); several channels are mixed down to their mean;
2. the target rate is ``policy.sample_rate``, or the most common rate among the readable files
   (a tie goes to the higher rate); files at another rate are resampled with
   ``torchaudio.functional.resample`` (one call per source rate, in batches of similar length),
   or quarantined when ``resample=False``;
3. the duration is ``policy.duration`` seconds, or the 95th percentile of the readable clips'
   durations rounded up to 0.1 s; ``S = round(duration * sample_rate)``;
4. ``length_policy`` fixes a clip of another length: ``"pad-crop"`` zero-pads a short clip at the
   end and crops a long one at the end, ``"pad"`` pads and quarantines long clips, ``"crop"``
   crops and quarantines short ones, ``"exact"`` quarantines both;
5. samples are clipped to [-1, 1] (floating-point files may exceed it, and resampling can
   overshoot by a little).

:func:`read_audio_records` returns the resolved policy with the records: record it with the
dataset and pass it back to read the trusted set and new data (:func:`read_audio_features`) the
same way, to the sample.

**Quarantine, not crash.** A file that cannot be used is left out and listed in the quarantine
table (:data:`QUARANTINE_SCHEMA`: ``source``, ``row`` = manifest row or null, ``path`` as written,
``reason``): a path escaping the root, an unsupported suffix, a missing file, a file soundfile
cannot decode (truncated, garbage), empty audio, non-finite samples, another rate with
``resample=False``, or a length the policy rejects. Problems with the table itself are
:class:`~connectors.errors.InputError` naming file, row and column: an unreadable manifest, a
missing column, a null or empty path or label, a duplicate id, a label outside ``class_names``;
so are an empty folder and a source where no file at all is usable.

Input files are only read, never modified.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path, PurePosixPath

import numpy as np
import polars as pl
import soundfile

from connectors.errors import InputError
from connectors.labels import parse_labels
from connectors.table_records import (
    _arrow_schema,
    _check_columns,
    _located_errors,
    _reject_duplicate_ids,
    _trusted_flags,
)
from connectors.tables import _natural_key, scan_table
from sanitizer.records import Records

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
"""File suffixes read as audio (compared in lower case)."""

LENGTH_POLICIES = ("pad-crop", "pad", "crop", "exact")
"""How clips of another length than the policy's are fixed (see the module docstring)."""

QUARANTINE_SCHEMA = {"source": pl.String, "row": pl.Int64, "path": pl.String, "reason": pl.String}
"""Columns of the quarantine table: the folder or manifest, the manifest row (null in the folder
layout), the path as written (relative to the folder) and why the file was left out."""

DEFAULT_PERCENTILE = 95
"""A policy without a duration takes this percentile of the clips' durations (rounded up)."""

RESAMPLE_BATCH_SAMPLES = 1 << 22
"""At most this many samples (clips times the longest one) go into one torchaudio call."""


@dataclass
class AudioPolicy:
    """How clips are made uniform; ``None`` fields are resolved from the files (:meth:`resolved`).

    >>> AudioPolicy(sample_rate=16000, duration=1.0).num_samples
    16000
    """

    sample_rate: int | None = None  # None: the most common rate among the readable files
    duration: float | None = None  # seconds; None: 95th percentile of durations, rounded up
    length_policy: str = "pad-crop"
    resample: bool = True  # False: files at another rate are quarantined

    def __post_init__(self) -> None:
        if self.sample_rate is not None:
            rate = self.sample_rate
            if isinstance(rate, bool) or not float(rate).is_integer() or rate <= 0:
                raise ValueError(f"sample_rate must be a positive whole number of Hz, got {rate!r}")
            self.sample_rate = int(rate)
        if self.duration is not None:
            if isinstance(self.duration, bool) or not math.isfinite(self.duration) \
                    or self.duration <= 0:
                raise ValueError(f"duration must be a positive number of seconds, "
                                 f"got {self.duration!r}")
            self.duration = float(self.duration)
        if self.length_policy not in LENGTH_POLICIES:
            raise ValueError(f"length_policy must be one of {LENGTH_POLICIES}, "
                             f"got {self.length_policy!r}")
        if not isinstance(self.resample, (bool, np.bool_)):
            raise ValueError(f"resample must be true or false, got {self.resample!r}")
        self.resample = bool(self.resample)
        if self.is_complete and self.num_samples < 1:
            raise ValueError(f"duration {self.duration} s at {self.sample_rate} Hz is less than "
                             "one sample")

    @property
    def is_complete(self) -> bool:
        """``True`` when nothing is left to resolve (sample rate and duration are set)."""
        return self.sample_rate is not None and self.duration is not None

    @property
    def num_samples(self) -> int:
        """``S``, the length of every waveform: ``round(duration * sample_rate)``."""
        if not self.is_complete:
            raise ValueError("the policy has no sample_rate or duration yet; resolve it first")
        return int(round(self.duration * self.sample_rate))

    def to_dict(self) -> dict:
        """The policy as a JSON-ready dict (for a dataset manifest or model metadata)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> AudioPolicy:
        """The policy :meth:`to_dict` wrote; missing keys take their defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown audio policy key(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def resolved(self, sample_rates: Sequence[int], durations: Sequence[float]) -> AudioPolicy:
        """A complete copy, ``None`` fields filled from the readable clips' rates and durations.

        ``sample_rates[i]`` and ``durations[i]`` (seconds) describe clip ``i``. With
        ``resample=False`` only clips at the chosen rate count towards the duration, since the
        others will be quarantined.

        >>> AudioPolicy().resolved([8000, 8000, 16000], [0.31, 0.62, 0.5])
        AudioPolicy(sample_rate=8000, duration=0.7, length_policy='pad-crop', resample=True)
        """
        rates = [int(r) for r in sample_rates]
        if len(rates) != len(durations):
            raise ValueError(f"{len(rates)} sample rates for {len(durations)} durations")
        rate = self.sample_rate
        if rate is None:
            if not rates:
                raise ValueError("no clips to take the sample rate from")
            rate = max(Counter(rates).items(), key=lambda item: (item[1], item[0]))[0]
        duration = self.duration
        if duration is None:
            usable = [d for d, r in zip(durations, rates, strict=True)
                      if self.resample or r == rate]
            if not usable:
                raise ValueError("no clips to take the duration from")
            seconds = float(np.percentile(np.asarray(usable, np.float64), DEFAULT_PERCENTILE))
            duration = max(math.ceil(round(seconds * 10, 6)) / 10, 0.1)
        return replace(self, sample_rate=rate, duration=duration)


@dataclass
class _Entry:
    """One file to read: where it was named (manifest row) and where it is, or why it is not."""

    path: str  # as written in the manifest, or relative to the folder with '/' separators
    file: Path | None
    row: int | None = None
    reason: str | None = None  # set when the file is quarantined before reading


def _is_audio_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in AUDIO_SUFFIXES


def _audio_files_below(root: Path) -> Iterator[Path]:
    """Audio files at any depth under ``root``, hidden names skipped (walk order, not sorted)."""
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [s for s in subfolders if not s.startswith(".")]
        for name in names:
            if _is_audio_name(name):
                yield Path(folder) / name


def is_audio_source(source) -> bool:
    """``True`` when ``source`` is a folder holding audio files (at any depth, hidden skipped).

    Anything else (a table file, a glob, a list of sources, a folder of Parquet shards) is not.
    """
    if not isinstance(source, (str, os.PathLike)):
        return False
    root = Path(source)
    return root.is_dir() and next(_audio_files_below(root), None) is not None


def _sorted_entries(root: Path, files: list[Path]) -> list[_Entry]:
    relative = sorted((PurePosixPath(*f.relative_to(root).parts) for f in files), key=_natural_key)
    return [_Entry(path=str(r), file=root / r) for r in relative]


def _class_folder_entries(root: Path) -> list[_Entry]:
    """The audio files in the immediate sub-folders of ``root`` (see the module docstring)."""
    files = [
        sub / name
        for sub in root.iterdir() if sub.is_dir() and not sub.name.startswith(".")
        for name in os.listdir(sub) if _is_audio_name(name) and not (sub / name).is_dir()
    ]
    if not files:
        loose = sum(1 for f in root.iterdir() if _is_audio_name(f.name) and not f.is_dir())
        hint = (f"; the {loose} audio file(s) directly in it need a sub-folder per class, or a "
                "manifest" if loose else "")
        raise InputError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in class sub-folders"
                         + hint, path=root)
    return _sorted_entries(root, files)


def _tree_entries(root: Path) -> list[_Entry]:
    files = [f for f in _audio_files_below(root) if not f.is_dir()]
    if not files:
        raise InputError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in this folder or below",
                         path=root)
    return _sorted_entries(root, files)


def _manifest_entry(root: str, value: str, row: int) -> _Entry:
    """Where the manifest path ``value`` points, or why it is quarantined before reading."""
    target = os.path.normpath(os.path.join(root, value))
    if os.path.commonpath([root, target]) != root or target == root:
        return _Entry(path=value, file=None, row=row, reason="path escapes the root folder")
    suffix = os.path.splitext(target)[1].lower()
    if suffix not in AUDIO_SUFFIXES:
        return _Entry(path=value, file=None, row=row,
                      reason=f"unsupported file type {suffix or '(no suffix)'!r} "
                             f"(expected {', '.join(AUDIO_SUFFIXES)})")
    return _Entry(path=value, file=Path(target), row=row)


def _nonempty_strings(meta: pl.DataFrame, column: str, what: str) -> pl.Series:
    """``column`` as strings, with no null or blank value (else an ``InputError`` on the row)."""
    series = meta.get_column(column)
    if series.null_count():
        raise InputError(f"missing {what} (null)", row=int(series.is_null().arg_true()[0]),
                         column=column)
    if series.dtype == pl.String:
        blank = (series.str.strip_chars() == "").arg_true()
        if len(blank):
            raise InputError(f"empty {what}", row=int(blank[0]), column=column)
    return series.cast(pl.String)


def _read_manifest(manifest: Path, columns: list[str]) -> pl.DataFrame:
    if not manifest.is_file():
        raise InputError("not found" if not manifest.exists() else "not a file or folder",
                         path=manifest)
    with _located_errors(manifest):
        frame = scan_table(manifest)
        _check_columns(_arrow_schema(frame), columns)
        meta = frame.select(columns).collect()
    if meta.height == 0:
        raise InputError("the manifest has no rows", path=manifest)
    return meta


def _manifest_entries(manifest: Path, meta: pl.DataFrame, path_column: str) -> list[_Entry]:
    with _located_errors(manifest):
        values = _nonempty_strings(meta, path_column, "path").to_list()
    root = os.path.normpath(os.path.abspath(manifest.parent))
    return [_manifest_entry(root, value, row) for row, value in enumerate(values)]


def _manifest_ids(manifest: Path, meta: pl.DataFrame, id_column: str | None,
                  path_column: str) -> np.ndarray:
    column = id_column or path_column
    with _located_errors(manifest):
        ids = _nonempty_strings(meta, column, "id").to_numpy().astype(object)
    _reject_duplicate_ids(ids, column, manifest)
    return ids


def _reject_manifest_columns(root: Path, **columns: str | None) -> None:
    for option, column in columns.items():
        if column is not None:
            raise InputError(f"{option}={column!r} names a manifest column, but this is a folder "
                             "of audio files (no columns); list the files in a manifest table "
                             "instead", path=root)


# --- decoding, resampling, fixing the length ------------------------------------------------


def _decode(file: Path) -> tuple[np.ndarray, int] | str:
    """A file's mono ``float32`` waveform and sample rate, or the reason it cannot be used."""
    try:
        if not file.exists():
            return "file not found"
        if not file.is_file():
            return "not a file"
        if file.stat().st_size == 0:
            return "empty audio (0-byte file)"
        if not os.access(file, os.R_OK):
            return "cannot read (permission denied)"
        data, rate = soundfile.read(file, dtype="float32", always_2d=True)
    except soundfile.LibsndfileError as error:
        message = (getattr(error, "error_string", "") or str(error)).strip().rstrip(".")
        return f"cannot decode ({message})"
    except (soundfile.SoundFileError, RuntimeError, ValueError, OSError, MemoryError) as error:
        return f"cannot decode ({type(error).__name__}: {' '.join(str(error).split())})"
    if data.shape[0] == 0:
        return "empty audio (0 samples)"
    wave = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    if not np.isfinite(wave).all():
        return "not finite samples (NaN or infinity)"
    return np.ascontiguousarray(wave, dtype=np.float32), int(rate)


def resampled_length(length: int, orig_rate: int, new_rate: int) -> int:
    """Samples ``torchaudio.functional.resample`` returns for ``length`` input samples."""
    return -(-length * new_rate // orig_rate)


def _resample(waves: list[np.ndarray], orig_rate: int, new_rate: int) -> list[np.ndarray]:
    """Each waveform at ``new_rate``, exactly as one torchaudio call per clip would give it.

    Clips are batched by length: zero-padding a clip at its end does not change its resampled
    samples (torchaudio pads with zeros itself), so a batch is cropped back clip by clip.
    """
    import torch
    from torchaudio.functional import resample

    order = np.argsort([len(w) for w in waves], kind="stable")
    out: list[np.ndarray] = [np.empty(0, np.float32)] * len(waves)
    start = 0
    while start < len(order):
        stop = start + 1
        while stop < len(order) and \
                (stop + 1 - start) * len(waves[order[stop]]) <= RESAMPLE_BATCH_SAMPLES:
            stop += 1
        chosen = order[start:stop]
        batch = torch.zeros(len(chosen), len(waves[chosen[-1]]))
        for row, i in enumerate(chosen):
            batch[row, :len(waves[i])] = torch.from_numpy(waves[i])
        with torch.inference_mode():
            result = resample(batch, orig_rate, new_rate).numpy()
        for row, i in enumerate(chosen):
            out[i] = result[row, :resampled_length(len(waves[i]), orig_rate, new_rate)].copy()
        start = stop
    return out


def _seconds(value: float) -> str:
    text = f"{value:g}"
    return text if any(c in text for c in ".e") else text + ".0"


def _length_problem(length: int, rate: int, policy: AudioPolicy) -> str | None:
    """Why a clip of ``length`` samples at the target rate is rejected, or ``None``."""
    wanted = policy.num_samples
    if length == wanted:
        return None
    longer = length > wanted
    if (longer and policy.length_policy in ("pad-crop", "crop")) or \
            (not longer and policy.length_policy in ("pad-crop", "pad")):
        return None
    actual = f"{length / rate:.2f}"
    if actual == f"{policy.duration:.2f}":
        actual += f" s: {length} samples, expected {wanted}"
    else:
        actual += " s"
    return f"{'longer' if longer else 'shorter'} than {_seconds(policy.duration)} s ({actual})"


def _quarantine_table(source: Path, entries: list[_Entry], reasons: dict[int, str]) -> pl.DataFrame:
    order = sorted(reasons)
    return pl.DataFrame({
        "source": [str(source)] * len(order),
        "row": [entries[i].row for i in order],
        "path": [entries[i].path for i in order],
        "reason": [reasons[i] for i in order],
    }, schema=QUARANTINE_SCHEMA)


def _no_readable(source: Path, entries: list[_Entry], reasons: dict[int, str]) -> InputError:
    first = min(reasons)
    return InputError(f"no readable audio files: {len(reasons)} quarantined, first: "
                      f"{entries[first].path}: {reasons[first]}", path=source)


def _load(source: Path, entries: list[_Entry], policy: AudioPolicy
          ) -> tuple[np.ndarray, np.ndarray, pl.DataFrame, AudioPolicy]:
    """Decode, resample and fix the length of every entry, by the module docstring's steps.

    Returns ``(waveforms (G, S), positions of the G good entries, quarantine, resolved policy)``.
    """
    reasons: dict[int, str] = {i: e.reason for i, e in enumerate(entries) if e.reason}
    clips: dict[int, tuple[np.ndarray, int]] = {}
    for i, entry in enumerate(entries):
        if i in reasons:
            continue
        decoded = _decode(entry.file)
        if isinstance(decoded, str):
            reasons[i] = decoded
        else:
            clips[i] = decoded
    if not clips:
        raise _no_readable(source, entries, reasons)
    rates = [rate for _, rate in clips.values()]
    durations = [len(wave) / rate for wave, rate in clips.values()]
    policy = policy.resolved(rates, durations)
    target = policy.sample_rate
    if not policy.resample:
        for i, (_, rate) in list(clips.items()):
            if rate != target:
                reasons[i] = f"sample rate {rate} Hz, expected {target} Hz"
                del clips[i]
    for rate in sorted({rate for _, rate in clips.values()} - {target}):
        group = [i for i, (_, r) in clips.items() if r == rate]
        for i, wave in zip(group, _resample([clips[i][0] for i in group], rate, target),
                           strict=True):
            clips[i] = (wave, target)
    good = []
    for i, (wave, _) in clips.items():
        problem = _length_problem(len(wave), target, policy)
        if problem is None:
            good.append(i)
        else:
            reasons[i] = problem
    if not good:
        raise _no_readable(source, entries, reasons)
    good.sort()
    size = policy.num_samples
    waves = np.zeros((len(good), size), dtype=np.float32)
    for k, i in enumerate(good):
        wave = clips.pop(i)[0][:size]
        waves[k, :len(wave)] = wave
    np.clip(waves, -1.0, 1.0, out=waves)
    quarantine = _quarantine_table(source, entries, reasons)
    return waves, np.asarray(good, dtype=np.int64), quarantine, policy


def _existing(source) -> Path:
    path = Path(source)
    if not path.exists():
        raise InputError("not found", path=path)
    return path


# --- public readers -------------------------------------------------------------------------


def read_audio_records(
    source: str | Path,
    *,
    label: str | None = "label",
    path: str = "path",
    id: str | None = None,
    contributor: str | None = None,
    trusted_column: str | None = None,
    trusted: bool = False,
    class_names: list[str] | None = None,
    policy: AudioPolicy | None = None,
) -> tuple[Records, pl.DataFrame, AudioPolicy]:
    """Read an audio folder or manifest: ``(records, quarantine, resolved policy)``.

    ``source`` is a folder with one sub-folder per class (``label``, ``path``, ``id``,
    ``contributor`` and ``trusted_column`` are then unused; naming a column is an error) or a
    CSV/TSV/Parquet manifest whose columns ``path``, ``label`` and the optional ``id``,
    ``contributor`` and ``trusted_column`` name. Without ``trusted_column`` every record gets
    ``trusted``. ``class_names`` fixes the class order (a label outside it is an error).
    ``policy`` (default :class:`AudioPolicy()`) may leave fields to resolve from the files; the
    returned policy is complete. The records hold only the good files (``modality="audio"``,
    ``features`` ``float32`` ``(N, S)``, ``sample_rate`` set); the quarantine table
    (:data:`QUARANTINE_SCHEMA`) lists the others with the reason.

    >>> records, quarantine, policy = read_audio_records("clips/")         # doctest: +SKIP
    >>> trusted, _, _ = read_audio_records("vetted.csv", trusted=True, policy=policy,
    ...                                    class_names=records.class_names)  # doctest: +SKIP
    """
    policy = policy or AudioPolicy()
    source = _existing(source)
    if source.is_dir():
        _reject_manifest_columns(source, id=id, contributor=contributor,
                                 trusted_column=trusted_column)
        entries = _class_folder_entries(source)
        folders = [PurePosixPath(e.path).parts[0] for e in entries]
        names = class_names if class_names is not None else sorted(set(folders), key=_natural_key)
        try:
            labels, names = parse_labels(pl.Series("label", folders, pl.String),
                                         class_names=names)
        except InputError as error:
            raise InputError(f"class folder {error.message}", path=source / folders[error.row]
                             if error.row is not None else source) from None
        ids = np.asarray([e.path for e in entries], dtype=object)
        who = None
        flags = np.full(len(entries), bool(trusted))
    else:
        if label is None:
            raise InputError("a manifest needs label= naming its label column", path=source)
        columns = list(dict.fromkeys(
            c for c in (path, label, id, contributor, trusted_column) if c is not None))
        meta = _read_manifest(source, columns)
        entries = _manifest_entries(source, meta, path)
        with _located_errors(source):
            labels, names = parse_labels(_nonempty_strings(meta, label, "label")
                                         if meta.get_column(label).dtype == pl.String
                                         else meta.get_column(label),
                                         column_name=label, class_names=class_names)
            flags = (_trusted_flags(meta.get_column(trusted_column))
                     if trusted_column is not None else np.full(meta.height, bool(trusted)))
            who = (meta.get_column(contributor).cast(pl.String).to_numpy().astype(object)
                   if contributor is not None else None)
        ids = _manifest_ids(source, meta, id, path)
    waves, good, quarantine, policy = _load(source, entries, policy)
    records = Records(features=waves, labels=labels[good], ids=ids[good], trusted=flags[good],
                      class_names=names, modality="audio",
                      contributors=None if who is None else who[good],
                      sample_rate=policy.sample_rate)
    return records, quarantine, policy


def read_audio_features(
    source: str | Path,
    *,
    path: str = "path",
    id: str | None = None,
    policy: AudioPolicy,
) -> tuple[np.ndarray, np.ndarray, pl.DataFrame]:
    """Read unlabelled audio to predict on: ``(waveforms (N, S), ids, quarantine)``.

    ``source`` is a folder of audio files at any depth (class folders optional; ids are the paths
    below it) or a manifest with a ``path`` column (and optionally ``id``; ids default to the
    path as written). ``policy`` must be complete: the model's, so the clips match what it was
    trained on.
    """
    if not policy.is_complete:
        raise ValueError("read_audio_features needs a complete policy (sample_rate and duration "
                         f"set), got {policy}")
    source = _existing(source)
    if source.is_dir():
        _reject_manifest_columns(source, id=id)
        entries = _tree_entries(source)
        ids = np.asarray([e.path for e in entries], dtype=object)
    else:
        meta = _read_manifest(source, list(dict.fromkeys(c for c in (path, id) if c is not None)))
        entries = _manifest_entries(source, meta, path)
        ids = _manifest_ids(source, meta, id, path)
    waves, good, quarantine, _ = _load(source, entries, policy)
    return waves, ids[good], quarantine
