"""Read Parquet/CSV tables into :class:`~sanitizer.records.Records`: :func:`read_records`.

One row is one record. You name the label column; the rest is found or named:

* **images**: ``image="img"`` names one image column (PNG/JPEG bytes, a Hugging Face
  ``{bytes, path}`` struct, image paths, or pixel lists; see :mod:`connectors.images`);
  ``image="pixel*"`` (a pattern) or ``image=[...]`` (a list) names one-column-per-pixel data.
* **tabular**: ``features=[...]`` names numeric feature columns (a numeric list column counts as
  one feature per element, named ``col[0]``, ``col[1]``...).
* **text**: ``text="review"`` names one string column; each value goes through
  :func:`connectors.text_tokens.normalize_text` and the records are ``modality="text"`` with
  ``features`` an object array ``(N,)`` of the normalised strings (tokenizing is left to the
  model: :class:`connectors.text_tokens.TextTokenizer`). A text column is never inferred: name it.
* **neither**: the modality is inferred from the columns left after removing the label, id,
  contributor and trusted columns. A single binary, ``{bytes, path}`` struct or integer list
  column is an image column; else pixel-named columns (``pixel0``..., ``1x1``...) are a flat image;
  else every numeric column (integers, floats, numeric lists) is a feature, in table order, and
  non-numeric columns are ignored. Two candidate image columns are an error: name one.

Ids come from the ``id`` column (cast to string, must be unique: a duplicate is an error naming
both rows), else from :func:`connectors.record_ids.content_ids`. ``trusted_column`` names a
boolean (or 0/1) column marking the vetted healing set within the same table; without it every
record gets ``trusted``. Labels are parsed by :func:`connectors.labels.parse_labels` (pass
``class_names`` to fix the class order).

Errors are :class:`~connectors.errors.InputError` naming the file, the 0-based row within that
file and the column: a missing column (with the list of available ones), a null, a NaN or infinite
feature, a bad label, an undecodable or wrongly sized image, a text column that is not a string
column, a missing (null) text or one that is empty once normalised.

Memory: only the needed columns are read. Image tables are read in batches of
``batch_rows`` records, each decoded straight into the preallocated output, so peak memory is
about the final ``uint8`` array plus one batch, whatever the storage type of the pixels.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from connectors.errors import InputError
from connectors.images import (
    ImageShape,
    image_column_kind,
    images_from_column,
    images_from_pixel_columns,
    pixel_column_names,
)
from connectors.labels import parse_labels
from connectors.lists import is_list_type, leaf_type, lists_to_numpy
from connectors.pixel_arrays import normalize_shape
from connectors.record_ids import content_ids, find_duplicate
from connectors.tables import (
    Source,
    describe_source,
    locate_row,
    scan_table,
    source_files,
)
from connectors.text_tokens import normalize_text
from sanitizer.records import Records

BATCH_ROWS = 16_384


def _is_numeric(dtype: pa.DataType) -> bool:
    return pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype)


def _arrow_schema(frame: pl.LazyFrame) -> pa.Schema:
    return frame.head(0).collect().to_arrow().schema


def _column_summary(names: Sequence[str], limit: int = 30) -> str:
    """Column names for a message, pixel columns collapsed: ``label, pixel0 ... pixel783 (784)``."""
    pixels = pixel_column_names(names)
    shown: list[str] = []
    for name in names:
        if name not in pixels:
            shown.append(name)
        elif name == pixels[0]:
            shown.append(f"{pixels[0]} ... {pixels[-1]} ({len(pixels)} pixel columns)")
    more = f", ... ({len(shown)} in all)" if len(shown) > limit else ""
    return ", ".join(shown[:limit]) + more


def _check_columns(schema: pa.Schema, wanted: Sequence[str]) -> None:
    missing = [c for c in dict.fromkeys(wanted) if c not in schema.names]
    if missing:
        raise InputError(
            f"missing column(s) {', '.join(repr(c) for c in missing)}; available: "
            f"{_column_summary(schema.names)}"
        )


def _is_pattern(name: str) -> bool:
    return any(ch in name for ch in "*?[")


def _named_data_columns(
    image: str | Sequence[str] | None, features: Sequence[str] | None
) -> list[str]:
    """The image/feature columns the caller named explicitly (patterns excluded)."""
    if features is not None:
        return list(features)
    if isinstance(image, str):
        return [] if _is_pattern(image) else [image]
    return [] if image is None else list(image)


def _choose_layout(
    schema: pa.Schema,
    reserved: set[str],
    image: str | Sequence[str] | None,
    features: Sequence[str] | None,
) -> tuple[str, list[str]]:
    """``("image-column" | "pixel-columns" | "tabular", columns)``, by the module docstring."""
    rest = [c for c in schema.names if c not in reserved]
    if image is not None and features is not None:
        raise ValueError("give either image or features, not both")
    if isinstance(image, str) and _is_pattern(image):
        matched = [c for c in rest if fnmatch.fnmatchcase(c, image)]
        if not matched:
            raise InputError(f"no column matches {image!r}; available: "
                             f"{_column_summary(schema.names)}")
        return "pixel-columns", pixel_column_names(matched) or matched
    if isinstance(image, str):
        return "image-column", [image]
    if image is not None:
        return "pixel-columns", list(image)
    if features is not None:
        return "tabular", list(features)
    candidates = []
    for name in rest:
        kind = image_column_kind(schema.field(name).type)
        integer_lists = kind == "array" and pa.types.is_integer(leaf_type(schema.field(name).type))
        if kind in ("encoded", "struct") or integer_lists:
            candidates.append(name)
    if len(candidates) > 1:
        raise InputError(f"several columns could hold images ({', '.join(candidates)}); "
                         "choose one with image=")
    if candidates:
        return "image-column", candidates
    pixels = pixel_column_names(rest)
    if pixels:
        return "pixel-columns", pixels
    numeric = [c for c in rest if _is_numeric(leaf_type(schema.field(c).type))]
    if not numeric:
        raise InputError("found no image or numeric feature columns; available: "
                         f"{_column_summary(schema.names)}")
    return "tabular", numeric


def _read_images(
    frame: pl.LazyFrame,
    layout: str,
    columns: list[str],
    meta_columns: list[str],
    image_shape: ImageShape | None,
    image_root: Path | None,
    batch_rows: int,
) -> tuple[np.ndarray, pl.DataFrame]:
    """Decode images batch by batch into one array; return it with the other needed columns."""
    total = int(frame.select(pl.len()).collect().item())
    shape = normalize_shape(image_shape)
    if total == 0:
        return np.zeros((0, *(shape or (1, 0, 0))), np.uint8), frame.select(meta_columns).collect()
    out: np.ndarray | None = None
    metas = []
    start = 0
    needed = frame.select(*dict.fromkeys(meta_columns + columns))
    batches = (needed.collect_batches(chunk_size=batch_rows)
               if hasattr(needed, "collect_batches") else [needed.collect()])  # older polars
    for batch in batches:
        try:
            if layout == "image-column":
                images = images_from_column(batch.get_column(columns[0]), column_name=columns[0],
                                            image_shape=shape, base_dir=image_root)
            else:
                images = images_from_pixel_columns(batch, columns, image_shape=shape)
        except InputError as error:
            raise error.located(row=None if error.row is None else error.row + start) from None
        if out is None:
            shape = images.shape[1:]
            out = np.empty((total, *shape), dtype=np.uint8)
        out[start:start + len(images)] = images
        metas.append(batch.select(meta_columns))
        start += len(images)
    if out is None or start != total:
        raise InputError(f"expected {total} rows but read {start}; was the input changing?")
    return out, pl.concat(metas)


def _feature_matrix(frame: pl.DataFrame, columns: list[str]) -> tuple[np.ndarray, list[str]]:
    """Numeric columns (scalars or fixed-length lists) as ``float32`` ``(N, F)`` plus names."""
    blocks, names = [], []
    for name in columns:
        series = frame.get_column(name)
        array = series.to_arrow()
        if is_list_type(array.type) and _is_numeric(leaf_type(array.type)):
            values = lists_to_numpy(array, column_name=name).reshape(frame.height, -1)
            names.extend(f"{name}[{i}]" for i in range(values.shape[1]))
        elif _is_numeric(array.type) or pa.types.is_boolean(array.type):
            if series.null_count():
                raise InputError("missing value (null)", row=int(series.is_null().arg_true()[0]),
                                 column=name)
            values = series.cast(pl.Float64).to_numpy()[:, None]
            names.append(name)
        else:
            raise InputError(f"feature column is not numeric ({series.dtype})", column=name)
        blocks.append(values.astype(np.float32))
    matrix = np.concatenate(blocks, axis=1) if blocks else np.zeros((frame.height, 0), np.float32)
    bad = np.argwhere(~np.isfinite(matrix))
    if len(bad):
        row, position = (int(v) for v in bad[0])
        raise InputError(f"feature value {matrix[row, position]} is not a finite number",
                         row=row, column=names[position])
    return matrix, names


def _texts(series: pl.Series) -> np.ndarray:
    """A string column as an object array ``(N,)`` of normalised ``str`` (see module docstring)."""
    if isinstance(series.dtype, (pl.Categorical, pl.Enum)):
        series = series.cast(pl.String)
    if series.dtype == pl.Null:  # a column of nulls only
        raise InputError("missing text (null)", row=0, column=series.name)
    if series.dtype != pl.String:
        raise InputError(f"text column is not text ({series.dtype})", column=series.name)
    if series.null_count():
        raise InputError("missing text (null)", row=int(series.is_null().arg_true()[0]),
                         column=series.name)
    texts = np.empty(len(series), dtype=object)
    for row, value in enumerate(series.to_list()):
        text = normalize_text(value)
        if not text:
            raise InputError("empty text (nothing left once whitespace and control characters "
                             "are removed)", row=row, column=series.name)
        texts[row] = text
    return texts


def _trusted_flags(series: pl.Series) -> np.ndarray:
    if series.null_count():
        raise InputError("missing trusted flag (null)", row=int(series.is_null().arg_true()[0]),
                         column=series.name)
    if series.dtype == pl.Boolean:
        return series.to_numpy().astype(bool)
    if series.dtype.is_integer():
        values = series.to_numpy()
        bad = np.flatnonzero((values != 0) & (values != 1))
        if len(bad):
            raise InputError(f"trusted flag must be true/false or 0/1, found {values[bad[0]]}",
                             row=int(bad[0]), column=series.name)
        return values.astype(bool)
    raise InputError(f"trusted column must be boolean or 0/1, found {series.dtype}",
                     column=series.name)


def _ids(meta: pl.DataFrame, id_column: str | None, features: np.ndarray, labels: np.ndarray,
         trusted: np.ndarray, contributors: np.ndarray | None) -> np.ndarray:
    if id_column is None:
        return content_ids(features, labels, trusted, contributors)
    series = meta.get_column(id_column)
    if series.null_count():
        raise InputError("missing id (null)", row=int(series.is_null().arg_true()[0]),
                         column=id_column)
    return series.cast(pl.String).to_numpy().astype(object)


def _relocate(error: InputError, source: Source) -> InputError:
    """Turn a row of the combined scan into a (file, row within file) location."""
    if error.path is not None:
        return error
    if error.row is None:
        return error.located(path=describe_source(source))
    file, row = locate_row(source, error.row)
    return error.located(path=file, row=row)


def _reject_duplicate_ids(ids: np.ndarray, id_column: str, source: Source) -> None:
    pair = find_duplicate(ids)
    if pair is None:
        return
    (first_file, first_row), (file, row) = (locate_row(source, r) for r in pair)
    raise InputError(f"duplicate id {str(ids[pair[1]])!r}, also in {first_file} row {first_row}",
                     path=file, row=row, column=id_column)


@contextmanager
def _located_errors(source: Source) -> Iterator[None]:
    """Give every error raised inside the file and row it concerns, as an InputError."""
    try:
        yield
    except InputError as error:
        raise _relocate(error, source) from None
    except pl.exceptions.PolarsError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise InputError(f"cannot read table ({type(error).__name__}: {first_line})",
                         path=describe_source(source)) from None


def _read_values(frame: pl.LazyFrame, source: Source, meta_columns: list[str],
                 image: str | Sequence[str] | None, features: list[str] | None,
                 image_shape: ImageShape | None, image_root: str | Path | None,
                 batch_rows: int, text: str | None = None,
                 ) -> tuple[np.ndarray, pl.DataFrame, list[str], str]:
    """The records' features, the meta columns, feature names and the modality."""
    if text is not None:
        if image is not None or features is not None:
            raise ValueError("give only one of image, features or text")
        _check_columns(_arrow_schema(frame), meta_columns + [text])
        table = frame.select(*dict.fromkeys(meta_columns + [text])).collect()
        return _texts(table.get_column(text)), table, [text], "text"
    schema = _arrow_schema(frame)
    _check_columns(schema, meta_columns + _named_data_columns(image, features))
    layout, columns = _choose_layout(schema, set(meta_columns), image, features)
    if layout == "tabular":
        table = frame.select(*dict.fromkeys(meta_columns + columns)).collect()
        values, feature_names = _feature_matrix(table, columns)
        return values, table, feature_names, "tabular"
    root = Path(image_root) if image_root is not None else source_files(source)[0].parent
    values, meta = _read_images(frame, layout, columns, meta_columns, image_shape, root, batch_rows)
    return values, meta, [], "image"


def read_records(
    source: Source,
    *,
    label: str,
    id: str | None = None,
    contributor: str | None = None,
    image: str | Sequence[str] | None = None,
    features: list[str] | None = None,
    text: str | None = None,
    trusted_column: str | None = None,
    trusted: bool = False,
    class_names: list[str] | None = None,
    image_shape: ImageShape | None = None,
    image_root: str | Path | None = None,
    batch_rows: int = BATCH_ROWS,
) -> Records:
    """Read the table(s) of ``source`` into :class:`~sanitizer.records.Records`.

    ``source`` is anything :func:`connectors.tables.scan_table` accepts (file, glob, folder of
    shards, list). ``image_shape`` (``(C, H, W)`` or ``(H, W)``) fixes the image size and channel
    count (needed for flat pixel data that is not square). ``image_root`` anchors relative image
    paths; it defaults to the folder of the first table file. ``text`` names a string column
    and makes text records (normalised strings; not combinable with ``image``/``features``). See
    the module docstring for the rest.

    >>> records = read_records("collected.parquet", label="label", image="image",
    ...                        contributor="worker")            # doctest: +SKIP
    """
    frame = scan_table(source)
    with _located_errors(source):
        meta_columns = list(dict.fromkeys(
            c for c in (label, id, contributor, trusted_column) if c is not None))
        values, meta, feature_names, modality = _read_values(
            frame, source, meta_columns, image, features, image_shape, image_root, batch_rows,
            text)
        labels, names = parse_labels(meta.get_column(label), column_name=label,
                                     class_names=class_names)
        flags = (_trusted_flags(meta.get_column(trusted_column)) if trusted_column is not None
                 else np.full(len(values), bool(trusted)))
        who = (meta.get_column(contributor).cast(pl.String).to_numpy().astype(object)
               if contributor is not None else None)
        ids = _ids(meta, id, values, labels, flags, who)
    if id is not None:
        _reject_duplicate_ids(ids, id, source)
    return Records(features=values, labels=labels, ids=ids, trusted=flags, class_names=names,
                   modality=modality, contributors=who, feature_names=feature_names)


def read_features(
    source: Source,
    *,
    modality: str | None = None,
    id: str | None = None,
    image: str | Sequence[str] | None = None,
    features: list[str] | None = None,
    image_shape: ImageShape | None = None,
    image_root: str | Path | None = None,
    batch_rows: int = BATCH_ROWS,
    text: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read unlabelled records to predict on: ``(features, ids)``.

    Columns are found as in :func:`read_records` (no label column is needed); ``modality``,
    when given, must match what is found. Ids come from ``id`` or are content hashes. Text is
    read only from the column ``text`` names (``modality="text"`` without it is a ``ValueError``);
    the result is then the normalised strings, for the stored tokenizer to encode.
    """
    if modality == "text" and text is None:
        raise ValueError("text records need text= naming the text column")
    frame = scan_table(source)
    with _located_errors(source):
        values, meta, _, found = _read_values(
            frame, source, [id] if id is not None else [], image, features, image_shape,
            image_root, batch_rows, text)
        if modality is not None and found != modality:
            raise InputError(f"found {found} columns, the model takes {modality} records")
        n = len(values)
        ids = _ids(meta, id, values, np.zeros((n, 1), np.float32), np.zeros(n, bool), None)
    return values, ids
