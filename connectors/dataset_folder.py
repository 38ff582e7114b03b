"""The dataset folder ``sanitize ingest`` writes and ``sanitize train`` reads.

Ingesting once into a fixed layout means every later step reads one well-checked format,
fast, whatever the original data looked like. The folder holds::

    dataset/
      manifest.json          what is inside, where it came from (see below)
      part-00000.parquet     records 0 .. rows_per_shard-1
      part-00001.parquet     ...

Each shard has one row per record and these columns:

=============== ===================================== ==========================================
column          Arrow type                            meaning
=============== ===================================== ==========================================
``id``          ``string``                            unique record id
``contributor`` ``string`` (nullable)                 who supplied the record
``trusted``     ``bool``                              part of the vetted healing set
``label``       ``list<float32>`` (K values)          probability vector over ``class_names``
``pixels``      ``fixed_size_list<uint8>[C*H*W]``     image, channels-first (C, H, W) row-major
``features``    ``fixed_size_list<float32>[F]``       tabular features (instead of ``pixels``)
``waveform``    ``fixed_size_list<float32>[S]``       audio: mono samples in [-1, 1] (instead)
``text``        ``string``                            text: the normalised text (instead)
=============== ===================================== ==========================================

``manifest.json`` holds ``format_version`` (1), ``tool_version``, ``created`` (UTC, ISO 8601),
``modality``, ``input_shape`` (``[C, H, W]``, ``[F]``, ``[S]`` or ``[]`` for text), ``sample_rate``
(audio, else null), ``feature_names``, ``class_names``,
``counts`` (``records``, ``collected``, ``trusted``, ``soft_labels``, and per-class counts of
collected and trusted records by hard label, keyed by class name), ``inputs`` (the source files:
``path``, ``sha256``, ``rows``, ``role`` = ``collected`` or ``trusted``), ``shards`` (file name
and row count of each shard, used to check the folder on reading) and the keys of any ``extra``
dict given to :func:`write_dataset` (they must not clash with the keys above).

The whole folder is written under a temporary name and renamed into place
(:func:`connectors.atomic.atomic_path`), so a crash never leaves a half-written dataset. An
existing folder is replaced only if it is itself a dataset folder (has a ``manifest.json``) or
is empty, so a typo cannot wipe unrelated files.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from connectors.atomic import atomic_path
from connectors.errors import InputError
from connectors.lists import lists_to_numpy
from sanitizer.records import Records

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ROLES = ("collected", "trusted")
_RESERVED = {
    "format_version", "tool_version", "created", "modality", "input_shape", "feature_names",
    "class_names", "counts", "inputs", "shards", "sample_rate",
}
# The column that holds each modality's data, and the Arrow type of one value.
DATA_COLUMNS = {"image": ("pixels", pa.uint8()), "tabular": ("features", pa.float32()),
                "audio": ("waveform", pa.float32()), "text": ("text", pa.string())}


def shard_name(index: int) -> str:
    """File name of shard ``index``: ``part-00000.parquet``, ``part-00001.parquet``..."""
    return f"part-{index:05d}.parquet"


def _per_class(records: Records, mask: np.ndarray) -> dict[str, int]:
    counts = np.bincount(records.hard_labels[mask], minlength=records.num_classes)
    return {name: int(c) for name, c in zip(records.class_names, counts, strict=True)}


def _counts(records: Records) -> dict[str, Any]:
    trusted = records.trusted
    return {
        "records": len(records),
        "collected": int((~trusted).sum()),
        "trusted": int(trusted.sum()),
        "soft_labels": int(records.soft.sum()),
        "per_class_collected": _per_class(records, ~trusted),
        "per_class_trusted": _per_class(records, trusted),
    }


def _check_inputs(inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    checked = []
    for entry in inputs:
        missing = {"path", "sha256", "rows", "role"} - set(entry)
        if missing:
            raise ValueError(f"input entry {entry} lacks {sorted(missing)}")
        if entry["role"] not in ROLES:
            raise ValueError(f"input role must be one of {ROLES}, got {entry['role']!r}")
        checked.append({**entry, "path": str(entry["path"]), "rows": int(entry["rows"])})
    return checked


def _shard_table(records: Records, start: int, stop: int) -> pa.Table:
    n = stop - start
    labels = np.ascontiguousarray(records.labels[start:stop], dtype=np.float32)
    k = labels.shape[1]
    label_offsets = pa.array(np.arange(n + 1, dtype=np.int32) * k, pa.int32())
    label = pa.ListArray.from_arrays(label_offsets, pa.array(labels.reshape(-1)))
    values = records.features[start:stop]
    data_name, data_type = DATA_COLUMNS[records.modality]
    if records.modality == "text":
        if values.dtype != object:
            raise ValueError("dataset folders store texts, not token ids")
        data = pa.array([str(v) for v in values], pa.string())
    else:
        flat = np.ascontiguousarray(values, dtype=data_type.to_pandas_dtype()).reshape(-1)
        data = pa.FixedSizeListArray.from_arrays(pa.array(flat, data_type),
                                                 math.prod(records.input_shape))
    contributors = (pa.nulls(n, pa.string()) if records.contributors is None else
                    pa.array([None if c is None else str(c)
                              for c in records.contributors[start:stop]], pa.string()))
    return pa.table({
        "id": pa.array([str(i) for i in records.ids[start:stop]], pa.string()),
        "contributor": contributors,
        "trusted": pa.array(records.trusted[start:stop], pa.bool_()),
        "label": label,
        data_name: data,
    })


def _refuse_unrelated_folder(folder: Path) -> None:
    unrelated = folder.exists() and not (folder / MANIFEST).is_file()
    if unrelated and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(
                f"{folder} exists and is not a sanitize dataset folder (no {MANIFEST}); "
                "refusing to replace it"
            )


def write_dataset(
    records: Records,
    folder: str | Path,
    *,
    tool_version: str,
    inputs: list[dict[str, Any]],
    extra: dict[str, Any] | None = None,
    tables: dict[str, pa.Table] | None = None,
    rows_per_shard: int = 50_000,
) -> dict[str, Any]:
    """Write ``records`` as a dataset folder (layout in the module docstring); return the manifest.

    ``inputs`` describes the source files (``path``, ``sha256``, ``rows``, ``role``), e.g. built
    with :func:`connectors.tables.file_sha256` and :func:`connectors.tables.count_rows`.
    ``tables`` are written beside the shards as ``<name>.parquet`` (e.g. ``quarantine``: the
    audio files ingest could not use), inside the same atomic rename.
    """
    folder = Path(folder)
    if rows_per_shard < 1:
        raise ValueError("rows_per_shard must be at least 1")
    if len(set(map(str, records.ids))) != len(records):
        raise ValueError("record ids must be unique")
    clash = _RESERVED & set(extra or {})
    if clash:
        raise ValueError(f"extra manifest keys clash with built-in ones: {sorted(clash)}")
    _refuse_unrelated_folder(folder)
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "tool_version": tool_version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "modality": records.modality,
        "input_shape": list(records.input_shape),
        "sample_rate": records.sample_rate,
        "feature_names": list(records.feature_names),
        "class_names": list(records.class_names),
        "counts": _counts(records),
        "inputs": _check_inputs(inputs),
        "shards": [],
        **(extra or {}),
    }
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        starts = range(0, max(len(records), 1), rows_per_shard)
        for index, start in enumerate(starts):
            stop = min(start + rows_per_shard, len(records))
            pq.write_table(_shard_table(records, start, stop), tmp / shard_name(index),
                           compression="zstd")
            manifest["shards"].append({"file": shard_name(index), "rows": stop - start})
        for name, table in (tables or {}).items():
            pq.write_table(table, tmp / f"{name}.parquet")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The parsed ``manifest.json`` of a dataset folder (checked for format version)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise InputError(f"not a sanitize dataset folder ({MANIFEST} missing; create one with "
                         "`sanitize ingest`)", path=folder)
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError(f"manifest is not valid JSON ({error})", path=path) from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        found = manifest.get("format_version") if isinstance(manifest, dict) else None
        raise InputError(f"unsupported dataset format_version {found!r} (this version reads "
                         f"{FORMAT_VERSION})", path=path)
    for key in ("modality", "input_shape", "class_names", "counts", "shards"):
        if key not in manifest:
            raise InputError(f"manifest lacks {key!r}", path=path)
    return manifest


def _read_shard(path: Path, expected_rows: int, data_name: str) -> pa.Table:
    if not path.is_file():
        raise InputError("shard listed in the manifest is missing", path=path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        raise InputError(f"cannot read shard ({error})", path=path) from None
    needed = ["id", "contributor", "trusted", "label", data_name]
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise InputError(f"shard lacks column(s) {missing}", path=path)
    if table.num_rows != expected_rows:
        raise InputError(f"shard has {table.num_rows} rows, manifest says {expected_rows}",
                         path=path)
    return table.select(needed)


def read_dataset(folder: str | Path) -> tuple[Records, dict[str, Any]]:
    """Read a dataset folder back into ``Records`` (vectorised), with its manifest.

    Raises :class:`InputError` when the manifest is missing or unreadable, a shard is missing or
    unreadable, or shards disagree with the manifest (row counts, vector lengths).
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    modality = manifest["modality"]
    if modality not in DATA_COLUMNS:
        raise InputError(f"unknown modality {modality!r}", path=folder / MANIFEST)
    data_name, data_type = DATA_COLUMNS[modality]
    shape = tuple(int(d) for d in manifest["input_shape"])
    k = len(manifest["class_names"])
    tables = [_read_shard(folder / shard["file"], int(shard["rows"]), data_name)
              for shard in manifest["shards"]]
    if not tables:
        raise InputError("manifest lists no shards", path=folder / MANIFEST)
    table = pa.concat_tables(tables)
    if table.num_rows != manifest["counts"]["records"]:
        raise InputError(f"shards hold {table.num_rows} records, manifest says "
                         f"{manifest['counts']['records']}", path=folder / MANIFEST)
    shard_of = np.repeat(np.arange(len(tables)), [t.num_rows for t in tables])
    shard_start = np.cumsum([0] + [t.num_rows for t in tables])
    try:
        labels = lists_to_numpy(table.column("label"), column_name="label", expected_dims=(k,))
        if modality == "text":
            values = table.column(data_name).to_numpy(zero_copy_only=False).astype(object)
        else:
            values = lists_to_numpy(table.column(data_name), column_name=data_name,
                                    expected_dims=(math.prod(shape),))
            values = values.astype(data_type.to_pandas_dtype(), copy=False).reshape(-1, *shape)
    except InputError as error:
        row = error.row or 0
        shard = manifest["shards"][int(shard_of[row])]["file"] if len(shard_of) else MANIFEST
        local_row = row - int(shard_start[shard_of[row]])
        raise error.located(path=folder / shard, row=local_row) from None
    contributors = table.column("contributor")
    return Records(
        features=values,
        labels=labels.astype(np.float32, copy=False),
        ids=table.column("id").to_numpy().astype(object),
        trusted=table.column("trusted").to_numpy(),
        class_names=list(manifest["class_names"]),
        modality=manifest["modality"],
        contributors=(None if contributors.null_count == table.num_rows
                      else contributors.to_numpy().astype(object)),
        feature_names=list(manifest.get("feature_names", [])),
        sample_rate=manifest.get("sample_rate"),
    ), manifest
