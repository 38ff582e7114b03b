"""``sanitize ingest``: read crowdsourced records (and the trusted healing set), validate them,
write a dataset folder.

Sources: Parquet/CSV tables (images, tabular features, or a text column with ``text=``), and
audio as a folder with one sub-folder per class or as a manifest table with a path column
(``audio_path=``). Audio files that cannot be used (corrupt, missing, outside the root, wrong
length or rate under the chosen :class:`AudioPolicy`) do not stop the ingest: they are listed
with the reason in the dataset folder's ``quarantine.parquet`` and counted in the manifest.
The trusted audio set is read with the policy resolved on the collected one.

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
import polars as pl

from connectors.audio_files import AudioPolicy, is_audio_source, read_audio_records
from connectors.dataset_folder import write_dataset
from connectors.errors import InputError
from connectors.record_ids import content_ids, find_duplicate
from connectors.table_records import read_records
from connectors.tables import count_rows, file_sha256, source_files
from sanitizer import __version__
from sanitizer.records import Records, class_skewed, concat


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


def _audio_inputs(source, role: str) -> list[dict]:
    """An audio folder is described by its path alone (hashing every clip would double the
    ingest time); a manifest table like any other table."""
    if Path(str(source)).is_dir():
        return [{"path": str(source), "sha256": "", "rows": 0, "role": role}]
    return _inputs(source, role)


def ingest(collected_source, output: str | Path, *, label: str | None = "label", trusted_source=None,
           trusted_column: str | None = None, id: str | None = None, contributor: str | None = None,
           image: str | Sequence[str] | None = None, features: list[str] | None = None,
           text: str | None = None, audio_path: str | None = None,
           audio_policy: AudioPolicy | None = None,
           class_names: list[str] | None = None, image_shape=None,
           rows_per_shard: int = 50_000) -> tuple[dict, list[str]]:
    """Read, validate and write a dataset folder; returns ``(manifest, warnings)``.

    Audio is read when ``collected_source`` is a folder of class sub-folders holding audio files
    or when ``audio_path`` names the path column of a manifest table."""
    if trusted_source is None and trusted_column is None:
        raise InputError("no trusted healing set: give a trusted source or a trusted column",
                         path=str(collected_source))
    audio = audio_path is not None or is_audio_source(collected_source)
    quarantine = []
    extra: dict = {}
    if audio:
        def read(source, **kw):
            records, q, policy = read_audio_records(
                source, label=label, path=audio_path or "path", id=id, contributor=contributor,
                policy=kw.pop("policy", audio_policy), **kw)
            quarantine.append(q)
            return records, policy
        records, audio_policy = read(collected_source, trusted_column=trusted_column,
                                     class_names=class_names)
        inputs = _audio_inputs(collected_source, "collected")
    else:
        if label is None:
            raise InputError("no label column given", path=str(collected_source))
        common = dict(label=label, id=id, contributor=contributor, image=image, features=features,
                      text=text, image_shape=image_shape)
        records = read_records(collected_source, trusted_column=trusted_column,
                               class_names=class_names, **common)
        inputs = _inputs(collected_source, "collected")
    if trusted_source is not None:
        if audio:
            trusted, _ = read(trusted_source, trusted=True, class_names=records.class_names,
                              policy=audio_policy)
            inputs += _audio_inputs(trusted_source, "trusted")
        else:
            trusted = read_records(trusted_source, trusted=True, class_names=records.class_names,
                                   **common)
            inputs += _inputs(trusted_source, "trusted")
        if trusted.input_shape != records.input_shape or trusted.modality != records.modality:
            raise InputError(f"trusted records are {trusted.modality} {trusted.input_shape}, "
                             f"collected are {records.modality} {records.input_shape}",
                             path=str(trusted_source))
        _check_overlap(records.collected, trusted, trusted_source)
        records = concat([records, trusted])
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
    if class_skewed(per_class):
        present = np.flatnonzero(per_class)
        rare, common = present[per_class[present].argmin()], present[per_class[present].argmax()]
        warnings.append(f"the trusted set is class-skewed ({records.class_names[rare]!r}: "
                        f"{per_class[rare]} records, {records.class_names[common]!r}: {per_class[common]}): "
                        "vet about as many records of each class; a network healed on few records of a "
                        "class misjudges them (benchmarks/RESULTS.md, 'random trusted sample')")
    tables = {}
    if audio:
        q = pl.concat(quarantine)
        tables["quarantine"] = q.to_arrow()
        extra = {"audio_policy": audio_policy.to_dict(), "quarantined": q.height}
        if q.height:
            warnings.append(f"{q.height} audio file(s) quarantined (first: {q['path'][0]}: "
                            f"{q['reason'][0]}); see quarantine.parquet in the dataset folder")
    manifest = write_dataset(records, output, tool_version=__version__, inputs=inputs,
                             extra={"warnings": warnings, "columns": {
                                 "label": label, "id": id, "contributor": contributor,
                                 "image": image, "features": features, "text": text,
                                 "audio_path": audio_path}, **extra},
                             tables=tables, rows_per_shard=rows_per_shard)
    return manifest, warnings

