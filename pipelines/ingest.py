"""``sanitize ingest``: read crowdsourced records (and the trusted healing set), validate them,
write a dataset folder.

The trusted set is either a separate source (``--trusted trusted.parquet``) or a boolean column
of the same table (``--trusted-column is_trusted``). Checks beyond the per-table ones of
:func:`connectors.read_records`: the trusted set uses no label unknown to the collected data,
no trusted record also appears among the collected ones (same id or same content), both parts
have the same image size / feature count, and every class has at least one trusted record (a
warning: such a class cannot be healed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from connectors.dataset_folder import write_dataset
from connectors.errors import InputError
from connectors.record_ids import content_ids, find_duplicate
from connectors.table_records import read_records
from connectors.tables import count_rows, file_sha256, source_files
from sanitizer import __version__
from sanitizer.records import Records, concat


def _inputs(source, role: str) -> list[dict]:
    return [{"path": str(f), "sha256": file_sha256(f), "rows": count_rows(f), "role": role}
            for f in source_files(source)]


def _content_hashes(records: Records) -> np.ndarray:
    """A hash of each record's features alone (label and role left out)."""
    n = len(records)
    return content_ids(records.features, np.zeros((n, 1), np.float32), np.zeros(n, bool))


def _check_overlap(collected: Records, trusted: Records, trusted_source) -> None:
    seen = {i: n for n, i in enumerate(collected.ids)}
    for n, i in enumerate(trusted.ids):
        if i in seen:
            raise InputError(f"trusted record id {i!r} also appears in the collected data "
                             f"(collected position {seen[i]})", path=str(trusted_source), row=n, column="id")
    c_hash = {h: n for n, h in enumerate(_content_hashes(collected))}
    for n, h in enumerate(_content_hashes(trusted)):
        if h in c_hash:
            raise InputError(f"trusted record {trusted.ids[n]!r} has the same content as collected "
                             f"record {collected.ids[c_hash[h]]!r}", path=str(trusted_source), row=n)


def ingest(collected_source, output: str | Path, *, label: str, trusted_source=None,
           trusted_column: str | None = None, id: str | None = None, contributor: str | None = None,
           image: str | Sequence[str] | None = None, features: list[str] | None = None,
           class_names: list[str] | None = None, image_shape=None,
           rows_per_shard: int = 50_000) -> tuple[dict, list[str]]:
    """Read, validate and write a dataset folder; returns ``(manifest, warnings)``."""
    if trusted_source is None and trusted_column is None:
        raise InputError("no trusted healing set: give a trusted source or a trusted column",
                         path=str(collected_source))
    common = dict(label=label, id=id, contributor=contributor, image=image, features=features,
                  image_shape=image_shape)
    records = read_records(collected_source, trusted_column=trusted_column, class_names=class_names,
                           **common)
    inputs = _inputs(collected_source, "collected")
    if trusted_source is not None:
        trusted = read_records(trusted_source, trusted=True, class_names=records.class_names, **common)
        if trusted.input_shape != records.input_shape or trusted.modality != records.modality:
            raise InputError(f"trusted records are {trusted.modality} {trusted.input_shape}, "
                             f"collected are {records.modality} {records.input_shape}",
                             path=str(trusted_source))
        _check_overlap(records.collected, trusted, trusted_source)
        records = concat([records, trusted])
        inputs += _inputs(trusted_source, "trusted")
    if not records.trusted.any():
        raise InputError(f"column {trusted_column!r} marks no record as trusted",
                         path=str(collected_source), column=trusted_column)
    if records.trusted.all():
        raise InputError("every record is trusted: nothing to sanitize", path=str(collected_source))
    dup = find_duplicate(records.ids)
    if dup is not None:
        raise InputError(f"id {records.ids[dup[1]]!r} appears twice", path=str(collected_source),
                         column=id or "id")
    warnings = []
    per_class = np.bincount(records.hard_labels[records.trusted], minlength=records.num_classes)
    empty = [records.class_names[c] for c in np.flatnonzero(per_class == 0)]
    if empty:
        warnings.append(f"no trusted record for class(es) {', '.join(map(repr, empty))}: "
                        "the healed network cannot learn them from the trusted set")
    manifest = write_dataset(records, output, tool_version=__version__, inputs=inputs,
                             extra={"warnings": warnings, "columns": {
                                 "label": label, "id": id, "contributor": contributor,
                                 "image": image, "features": features}},
                             rows_per_shard=rows_per_shard)
    return manifest, warnings

