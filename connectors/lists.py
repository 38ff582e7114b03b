"""Turn Arrow list columns into dense NumPy arrays without Python loops: :func:`lists_to_numpy`.

Pixel arrays, probability vectors and embedding vectors all arrive as *list columns*: Arrow
``list``, ``large_list``, ``fixed_size_list`` (polars ``Array``) or ``list_view``, possibly nested
(an image as a list of rows of pixels). A dense ``(N, d1, d2, ...)`` array exists only when every
row has the same lengths at every level, so the conversion is:

1. check the top level has no nulls and every row has the same length ``d1``
   (``pyarrow.compute.list_value_length``, one vectorised call);
2. ``flatten()`` one level, which concatenates the rows' values into one array of ``N * d1``;
3. repeat for each nested level, then hand the flat leaf values to NumPy and ``reshape``.

Each step is a single Arrow kernel over the whole column (hundreds of thousands of 28x28 images
per second on one core), and a bad row is still reported exactly: a value at flat position ``i``
of a level with ``p`` values per record belongs to record ``i // p``.

CSV cannot hold lists, so lists written to CSV (as :func:`connectors.reports.write_table` does)
are JSON strings such as ``"[0.1, 0.9]"``; :func:`json_lists` decodes such a column first.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from connectors.errors import InputError

Column = pa.Array | pa.ChunkedArray | pl.Series
"""Anything connectors accept as one column: an Arrow array (chunked or not) or a polars Series."""


def to_arrow(column: Column) -> pa.Array:
    """One contiguous, dictionary-decoded :class:`pyarrow.Array` for any :data:`Column`."""
    if isinstance(column, pl.Series):
        column = column.to_arrow()
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    return column


def is_list_type(dtype: pa.DataType) -> bool:
    """``True`` for every Arrow list flavour (variable, large, fixed-size, view)."""
    return (
        pa.types.is_list(dtype)
        or pa.types.is_large_list(dtype)
        or pa.types.is_fixed_size_list(dtype)
        or pa.types.is_list_view(dtype)
        or pa.types.is_large_list_view(dtype)
    )


def is_string_type(dtype: pa.DataType) -> bool:
    """``True`` for Arrow ``string``, ``large_string`` and ``string_view``."""
    types = pa.types
    return types.is_string(dtype) or types.is_large_string(dtype) or types.is_string_view(dtype)


def leaf_type(dtype: pa.DataType) -> pa.DataType:
    """The element type under all list levels (``list<list<uint8>>`` gives ``uint8``)."""
    while is_list_type(dtype):
        dtype = dtype.value_type
    return dtype


def list_depth(dtype: pa.DataType) -> int:
    """How many list levels a type has (0 for a scalar type)."""
    depth = 0
    while is_list_type(dtype):
        dtype, depth = dtype.value_type, depth + 1
    return depth


def first_true(mask: pa.Array | np.ndarray) -> int:
    """Position of the first ``True`` in a boolean array (``-1`` if none)."""
    if isinstance(mask, np.ndarray):
        hits = np.flatnonzero(mask)
        return int(hits[0]) if len(hits) else -1
    return int(pc.index(mask, True).as_py())


def first_null(array: pa.Array) -> int:
    """Position of the first null in an Arrow array (``-1`` if none)."""
    return first_true(array.is_null()) if array.null_count else -1


def lists_to_numpy(
    column: Column,
    *,
    column_name: str,
    expected_dims: tuple[int, ...] | None = None,
) -> np.ndarray:
    """A list column (possibly nested) as one NumPy array of shape ``(N, d1, d2, ...)``.

    The element dtype is the Arrow leaf type's NumPy equivalent (``uint8``, ``int64``,
    ``float32``...). ``expected_dims`` fixes the lengths each level must have; otherwise the first
    record's lengths decide. Raises :class:`InputError` with the record's row and ``column_name``
    for a null record, a null element or a record with different lengths. Rows count from 0 within
    ``column``.
    """
    array = to_arrow(column)
    n = len(array)
    depth = list_depth(array.type)
    if expected_dims is not None and len(expected_dims) != depth:
        raise InputError(
            f"expected {len(expected_dims)} nested list level(s), found {depth} ({array.type})",
            column=column_name,
        )
    dims: list[int] = []
    level = array
    per_record = 1
    while is_list_type(level.type):
        where = "" if not dims else f" at nesting level {len(dims) + 1}"
        if level.null_count:
            raise InputError(f"missing value (null){where}", row=first_null(level) // per_record,
                             column=column_name)
        lengths = pc.list_value_length(level).to_numpy(zero_copy_only=False)
        if expected_dims is not None:
            want = expected_dims[len(dims)]
        elif pa.types.is_fixed_size_list(level.type):
            want = level.type.list_size
        else:
            want = int(lengths[0]) if len(lengths) else 0
        bad = first_true(lengths != want)
        if bad >= 0:
            raise InputError(
                f"list has {int(lengths[bad])} values{where}, expected {want}",
                row=bad // per_record, column=column_name,
            )
        dims.append(want)
        per_record *= want
        level = level.flatten()
    if level.null_count:
        raise InputError("missing value (null) inside the list",
                         row=first_null(level) // per_record, column=column_name)
    return level.to_numpy(zero_copy_only=False).reshape(n, *dims)


def looks_like_json_lists(column: Column) -> bool:
    """``True`` for a string column whose first non-null value starts with ``[``."""
    array = to_arrow(column)
    if not is_string_type(array.type):
        return False
    values = array.drop_null()
    return len(values) > 0 and values[0].as_py().lstrip().startswith("[")


def json_lists(column: Column, *, column_name: str, dtype: pl.DataType | None = None) -> pa.Array:
    """Decode a string column of JSON lists (``"[0.1, 0.9]"``) into an Arrow list array.

    ``dtype`` (a polars type such as ``pl.List(pl.Float64)``) fixes the result type; without it
    the type is inferred from all values. An invalid value raises :class:`InputError` naming its
    row; finding that row costs one Python ``json.loads`` per record, but only on the error path.
    """
    series = pl.Series(column_name, to_arrow(column))
    try:
        decoded = series.str.json_decode(dtype, infer_schema_length=None)
    except pl.exceptions.PolarsError as error:
        for row, text in enumerate(series.to_list()):
            if text is None:
                continue
            try:
                json.loads(text)
            except ValueError as bad:
                raise InputError(f"not a valid JSON list ({bad.msg})", row=row,
                                 column=column_name) from None
        raise InputError(f"cannot decode JSON lists: {error}", column=column_name) from None
    return to_arrow(decoded)
