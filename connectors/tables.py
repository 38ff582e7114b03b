"""Find and lazily open table files: :func:`scan_table`, :func:`source_files`, :func:`file_sha256`.

A *source* names one or more Parquet or CSV/TSV files in any of the ways data tends to be stored:

========================== =================================================================
``"collected.parquet"``     one file (``.parquet``/``.pq``, ``.csv``, ``.tsv``)
``"shards/*.parquet"``      a glob (``**`` recurses)
``"shards/"``               a folder: every table file below it, hive folders such as
                            ``split=train/part-0.parquet`` included (``split`` becomes a column)
``["a.csv", "b.csv"]``      a list of any of the above, read one after the other
========================== =================================================================

:func:`scan_table` returns a :class:`polars.LazyFrame`, so nothing is read until the caller
collects it, and only the columns the caller selects are read at all (Parquet is columnar, so
an unused image column costs nothing).

Order is deterministic: the entries of a list keep their order, and the files of one glob or
folder are sorted in *natural* order (``part-2`` before ``part-10``). Rows appear in that file
order, which is what lets :func:`locate_row` turn a row of the combined frame back into
``(file, row within file)`` for error messages.

Within a folder, hidden files and files starting with ``_`` (``_SUCCESS``, ``.crc``) and files with
other suffixes (a ``README.md``, a ``manifest.json``) are ignored. All table files of one source
must share one format: a folder with both Parquet and CSV files is an :class:`InputError`, since
it usually means stale leftovers. Files of different entries are combined by column name
(``diagonal_relaxed``): a column missing from one file is null there, and numeric types are
widened to a common type.

CSV files are read with a 10,000-row schema inference window. Hive partition values in CSV
folders become integer columns when every value is an integer, else string columns.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from connectors.errors import InputError

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv"}
"""Known table suffixes (lower case) and the format each one means."""

Source = str | Path | Sequence[str | Path]
"""A file, glob or folder, or a list of them (see the module docstring)."""

_GLOB_CHARS = re.compile(r"[*?\[]")
_CSV_INFER_ROWS = 10_000


def _natural_key(path: Path) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith((".", "_")) for part in path.relative_to(root).parts)


def _format_of(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(FORMATS))
        raise InputError(f"unknown table suffix {path.suffix!r}; expected one of {known}",
                         path=path)
    return fmt


def _one_format(files: list[Path], where: str | Path) -> str:
    formats = sorted({_format_of(f) for f in files})
    if len(formats) > 1:
        raise InputError(f"mixed table formats ({', '.join(formats)}); keep one format per source",
                         path=where)
    return formats[0]


def _entries(source: Source) -> list[str | Path]:
    if isinstance(source, (str, Path)):
        return [source]
    entries = list(source)
    if not entries:
        raise InputError("no input given (an empty list of sources)")
    return entries


def _expand(entry: str | Path) -> tuple[list[Path], Path | None]:
    """The files of one entry, in natural order, and the folder hive partitions hang from."""
    text = str(entry)
    if _GLOB_CHARS.search(text) and not Path(text).exists():
        matches = [Path(m) for m in globlib.glob(text, recursive=True)]
        files = [m for m in matches if m.is_file() and not m.name.startswith((".", "_"))]
        if not files:
            raise InputError("no files match this pattern", path=text)
        files.sort(key=_natural_key)
        _one_format(files, text)
        return files, None
    path = Path(entry)
    if not path.exists():
        raise InputError("not found", path=path)
    if path.is_dir():
        files = [
            f for f in path.rglob("*")
            if f.is_file() and f.suffix.lower() in FORMATS and not _is_hidden(f, path)
        ]
        if not files:
            known = ", ".join(sorted(FORMATS))
            raise InputError(f"folder holds no table files ({known})", path=path)
        files.sort(key=_natural_key)
        _one_format(files, path)
        return files, path
    _format_of(path)
    return [path], None


def source_files(source: Source) -> list[Path]:
    """The concrete files a source names, in reading order (see the module docstring).

    Raises :class:`InputError` for a missing path, an unknown suffix, a folder or glob without
    table files, mixed formats, or a file named twice.
    """
    files: list[Path] = []
    for entry in _entries(source):
        files.extend(_expand(entry)[0])
    _reject_repeats(files)
    return files


def _reject_repeats(files: list[Path]) -> None:
    seen: set[Path] = set()
    for f in files:
        key = f.resolve()
        if key in seen:
            raise InputError("this file is named twice in the input", path=f)
        seen.add(key)


def _hive_values(file: Path, root: Path) -> dict[str, str]:
    return dict(part.split("=", 1) for part in file.relative_to(root).parent.parts if "=" in part)


def _scan_delimited(files: list[Path], fmt: str, hive_root: Path | None) -> pl.LazyFrame:
    separator = "\t" if fmt == "tsv" else ","
    frames = [
        pl.scan_csv(f, separator=separator, infer_schema_length=_CSV_INFER_ROWS) for f in files
    ]
    if hive_root is not None:
        keys: dict[str, list[str]] = {}
        per_file = [_hive_values(f, hive_root) for f in files]
        for values in per_file:
            for k, v in values.items():
                keys.setdefault(k, []).append(v)
        integer = {k: all(re.fullmatch(r"-?\d+", v) for v in vs) for k, vs in keys.items()}
        frames = [
            frame.with_columns(
                pl.lit(int(v) if integer[k] else v, dtype=pl.Int64 if integer[k] else pl.String)
                .alias(k)
                for k, v in values.items()
            )
            for frame, values in zip(frames, per_file, strict=True)
        ]
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")


def _scan_entry(entry: str | Path) -> tuple[pl.LazyFrame, list[Path]]:
    files, hive_root = _expand(entry)
    fmt = _one_format(files, entry)
    if fmt == "parquet":
        frame = pl.scan_parquet([str(f) for f in files], hive_partitioning=hive_root is not None)
    else:
        frame = _scan_delimited(files, fmt, hive_root)
    return frame, files


def scan_table(source: Source) -> pl.LazyFrame:
    """Lazily open every table file a source names, as one :class:`polars.LazyFrame`.

    >>> frame = scan_table("shards/")                        # doctest: +SKIP
    >>> frame.select("label").collect()      # reads one column only   # doctest: +SKIP

    Raises :class:`InputError` (naming the path) for a missing path, an unknown suffix, an empty
    folder or glob, mixed formats in one folder or glob, and a file named twice.
    """
    scans = [_scan_entry(entry) for entry in _entries(source)]
    _reject_repeats([f for _, files in scans for f in files])
    frames = [frame for frame, _ in scans]
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")


def count_rows(file: Path) -> int:
    """Number of data rows in one table file (Parquet: from its footer, CSV: one pass)."""
    fmt = _format_of(file)
    if fmt == "parquet":
        return pq.ParquetFile(file).metadata.num_rows
    separator = "\t" if fmt == "tsv" else ","
    return int(pl.scan_csv(file, separator=separator).select(pl.len()).collect().item())


def locate_row(source: Source, row: int) -> tuple[Path, int]:
    """Turn a 0-based row of ``scan_table(source)`` into ``(file, 0-based row in that file)``.

    Reads only Parquet footers (CSV files are counted), so it is meant for error messages.
    A row past the end is reported against the last file.
    """
    files = source_files(source)
    start = 0
    for file in files:
        rows = count_rows(file)
        if row < start + rows:
            return file, row - start
        start += rows
    return files[-1], row - (start - count_rows(files[-1]))


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (for provenance in manifests)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def describe_source(source: Source) -> str:
    """A short human name for a source, for messages: the path, or ``"a.csv + 2 more"``."""
    entries = _entries(source)
    first = str(entries[0])
    return first if len(entries) == 1 else f"{first} + {len(entries) - 1} more"
