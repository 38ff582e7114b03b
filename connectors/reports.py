"""Write and read result tables (scores, decisions...): :func:`write_table`, :func:`read_table`.

Reports go where the user points them, in the format the file name asks for:

================================== =============================================================
destination                        format
================================== =============================================================
``*.parquet``, ``*.pq``            Parquet (typed, compact; best for large or nested results)
``*.csv``                          CSV; list and struct columns become JSON strings
                                   (``"[0.1, 0.9]"``), which :mod:`connectors.labels` and
                                   :mod:`connectors.images` read back
``*.jsonl``, ``*.ndjson``, ``*.json`` JSON lines: one JSON object per row (also for ``.json``)
``-``                              standard output, JSON lines unless ``fmt`` says otherwise
================================== =============================================================

``fmt`` (``"parquet"``, ``"csv"`` or ``"jsonl"``) overrides the suffix. Files are written
atomically (:func:`connectors.atomic.atomic_path`): a reader never sees a half-written report.
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

from connectors.atomic import atomic_path
from connectors.errors import InputError

SUFFIX_FORMATS = {
    ".parquet": "parquet", ".pq": "parquet", ".csv": "csv",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
}
FORMATS = ("parquet", "csv", "jsonl")
_ALIASES = {"pq": "parquet", "ndjson": "jsonl", "json": "jsonl"}


def table_format(dest: str | Path, fmt: str | None = None) -> str:
    """The format for ``dest``: ``fmt`` if given (aliases ``pq``, ``json``, ``ndjson`` accepted),
    else from the suffix, else ``"jsonl"`` for ``-``. Raises :class:`InputError` otherwise."""
    if fmt is not None:
        name = _ALIASES.get(fmt.lower(), fmt.lower())
        if name not in FORMATS:
            raise InputError(f"unknown table format {fmt!r}; expected one of {', '.join(FORMATS)}")
        return name
    if str(dest) == "-":
        return "jsonl"
    suffix = Path(dest).suffix.lower()
    if suffix not in SUFFIX_FORMATS:
        raise InputError(f"cannot tell the table format from suffix {suffix!r}; use one of "
                         f"{', '.join(SUFFIX_FORMATS)} or pass a format", path=dest)
    return SUFFIX_FORMATS[suffix]


def _nested_as_json(df: pl.DataFrame) -> pl.DataFrame:
    """List, array and struct columns as JSON strings (CSV has no nested values)."""
    encoded = []
    for name, dtype in df.schema.items():
        if dtype == pl.Binary:
            raise ValueError(f"column {name!r} holds bytes, which CSV cannot store; "
                             "write Parquet or JSON lines instead")
        if isinstance(dtype, pl.Struct):
            encoded.append(pl.col(name).struct.json_encode())
        elif isinstance(dtype, (pl.List, pl.Array)):
            # Wrap in a one-field struct to reuse polars' JSON encoder, then unwrap: {"v":[..]}.
            wrapped = pl.struct(pl.col(name).alias("v")).struct.json_encode()
            encoded.append(
                pl.when(pl.col(name).is_null()).then(None)
                .otherwise(wrapped.str.slice(5, wrapped.str.len_bytes() - 6))
                .alias(name)
            )
    return df.with_columns(encoded) if encoded else df


def _write(df: pl.DataFrame, target: Path, fmt: str) -> None:
    if fmt == "parquet":
        df.write_parquet(target)
    elif fmt == "csv":
        _nested_as_json(df).write_csv(target)
    else:
        df.write_ndjson(target)


def write_table(df: pl.DataFrame, dest: str | Path, fmt: str | None = None) -> None:
    """Write ``df`` to ``dest`` (a path, or ``-`` for standard output): Parquet, CSV, JSON lines."""
    fmt = table_format(dest, fmt)
    if str(dest) == "-":
        if fmt == "parquet":
            df.write_parquet(sys.stdout.buffer)
            sys.stdout.buffer.flush()
        else:
            sys.stdout.write(_nested_as_json(df).write_csv() if fmt == "csv" else df.write_ndjson())
            sys.stdout.flush()
        return
    with atomic_path(Path(dest)) as tmp:
        _write(df, tmp, fmt)


def read_table(path: str | Path, fmt: str | None = None) -> pl.DataFrame:
    """Read a table written by :func:`write_table` (or any Parquet/CSV/JSON-lines file).

    CSV list columns come back as their JSON strings. A ``.json`` file holding one JSON array of
    objects (rather than JSON lines) is read too.
    """
    path = Path(path)
    fmt = table_format(path, fmt)
    if not path.is_file():
        raise InputError("not found", path=path)
    try:
        if fmt == "parquet":
            return pl.read_parquet(path)
        if fmt == "csv":
            return pl.read_csv(path, infer_schema_length=10_000)
        with open(path, "rb") as handle:
            head = handle.read(64).lstrip()
        if head.startswith(b"["):
            return pl.read_json(path)
        return pl.read_ndjson(path)
    except pl.exceptions.PolarsError as error:
        raise InputError(f"cannot read {fmt} table ({error})", path=path) from None
