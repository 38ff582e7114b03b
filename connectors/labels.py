"""Parse a label column into probability rows and class names: :func:`parse_labels`.

``sanitize`` works with labels as probability vectors (``float32``, shape ``(N, K)``): a hard label
is a one-hot row, a *confidence* label (the HaS-Nets threat model) any other distribution.
A label column may hold:

* **class names** (strings, booleans or a categorical column): ``"cat"``, ``"dog"``;
* **integers**: ``3``, or floats holding whole numbers (``3.0``, common in CSV files);
* **probability vectors**: a list column (``[0.1, 0.9]``), or in CSV a string column of JSON
  lists. Every vector must have K values, none negative, none NaN, summing to 1 within
  ``1e-3`` absolute tolerance; it is then divided by its sum, so stored rows sum to 1 up to
  ``float32`` rounding.

Class order (the meaning of column ``k`` of the result):

* if ``class_names`` is given, that order. Integer labels are then *indices* into it
  (``0`` is ``class_names[0]``), except when every class name is itself an integer
  (``["3", "5", "7"]``), in which case labels are matched by value. Probability vectors must have
  ``len(class_names)`` values;
* otherwise the sorted unique labels (integers numerically, then named ``"0"``, ``"1"``...), or
  ``class_0`` ... ``class_{K-1}`` for probability vectors.

Pass ``class_names`` whenever several tables must agree (a collected set and a trusted set): a
class missing from one table would otherwise shift every later column.

Every problem is an :class:`~connectors.errors.InputError` naming the 0-based row and the column:
a null label, an unknown class name (``unknown label 'cat' (known: ...)``), an index out of range,
a vector of the wrong length, a negative entry or a sum other than 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from connectors.errors import InputError
from connectors.lists import (
    Column,
    first_null,
    first_true,
    is_list_type,
    is_string_type,
    json_lists,
    lists_to_numpy,
    looks_like_json_lists,
    to_arrow,
)
from sanitizer.records import one_hot

SUM_TOLERANCE = 1e-3
"""How far (absolute) a probability vector's sum may be from 1 before it is rejected."""


def _known(class_names: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(repr(c) for c in class_names[:limit])
    return shown + (f", ... ({len(class_names)} in all)" if len(class_names) > limit else "")


def _probabilities(array: pa.Array, class_names: Sequence[str] | None,
                   column: str) -> tuple[np.ndarray, list[str]]:
    expected = None if class_names is None else (len(class_names),)
    values = lists_to_numpy(array, column_name=column, expected_dims=expected)
    if values.dtype.kind not in "iuf":
        raise InputError(f"probability vectors must hold numbers, found {array.type}",
                         column=column)
    values = values.astype(np.float64)
    if values.shape[1] == 0:
        raise InputError("probability vectors are empty", row=0, column=column)
    row = first_true(~np.isfinite(values).all(axis=1))
    if row >= 0:
        raise InputError("probability vector contains NaN or infinity", row=row, column=column)
    row = first_true((values < 0).any(axis=1))
    if row >= 0:
        raise InputError(f"probability vector has a negative entry ({values[row].min():g})",
                         row=row, column=column)
    sums = values.sum(axis=1)
    row = first_true(np.abs(sums - 1.0) > SUM_TOLERANCE)
    if row >= 0:
        raise InputError(f"probability vector sums to {sums[row]:.4g}, not 1 "
                         f"(tolerance {SUM_TOLERANCE:g})", row=row, column=column)
    names = list(class_names) if class_names is not None else [
        f"class_{k}" for k in range(values.shape[1])
    ]
    return (values / sums[:, None]).astype(np.float32), names


def _from_names(array: pa.Array, class_names: Sequence[str] | None,
                column: str) -> tuple[np.ndarray, list[str]]:
    if class_names is None:
        class_names = sorted(pc.unique(array).to_pylist())
    index = pc.index_in(array, value_set=pa.array(list(class_names), type=pa.string()))
    if index.null_count:
        row = first_null(index)
        raise InputError(f"unknown label {array[row].as_py()!r} (known: {_known(class_names)})",
                         row=row, column=column)
    return one_hot(index.to_numpy(zero_copy_only=False), len(class_names)), list(class_names)


def _is_integer_name(name: str) -> bool:
    return name.strip().lstrip("+-").isdigit()


def _from_integers(values: np.ndarray, class_names: Sequence[str] | None,
                   column: str) -> tuple[np.ndarray, list[str]]:
    if class_names is None:
        classes = np.unique(values)
        return one_hot(np.searchsorted(classes, values), len(classes)), [str(c) for c in classes]
    names = list(class_names)
    if names and all(_is_integer_name(n) for n in names):
        by_value = np.array([int(n) for n in names])
        order = np.argsort(by_value)
        position = np.clip(np.searchsorted(by_value[order], values), 0, len(names) - 1)
        found = by_value[order][position] == values
        row = first_true(~found)
        if row >= 0:
            raise InputError(f"unknown label {int(values[row])} (known: {_known(names)})",
                             row=row, column=column)
        return one_hot(order[position], len(names)), names
    row = first_true((values < 0) | (values >= len(names)))
    if row >= 0:
        raise InputError(f"label {int(values[row])} is not a class index (0..{len(names) - 1} for "
                         f"the {len(names)} class names given)", row=row, column=column)
    return one_hot(values.astype(np.int64), len(names)), names


def parse_labels(
    column: Column,
    *,
    column_name: str = "label",
    class_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Labels as ``(N, K)`` ``float32`` probability rows, plus the K class names in column order.

    >>> probs, names = parse_labels(pa.array(["dog", "cat", "dog"]))
    >>> names, probs.argmax(axis=1).tolist()
    (['cat', 'dog'], [1, 0, 1])

    See the module docstring for the accepted column types, the class order and the errors.
    """
    array = to_arrow(column)
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if len(set(class_names)) != len(class_names) or not class_names:
            raise ValueError(f"class_names must be unique and non-empty, got {class_names}")
    if array.null_count:
        raise InputError("missing label (null)", row=first_null(array), column=column_name)
    dtype = array.type
    if is_list_type(dtype):
        return _probabilities(array, class_names, column_name)
    if is_string_type(dtype) and looks_like_json_lists(array):
        decoded = json_lists(array, column_name=column_name, dtype=pl.List(pl.Float64))
        return _probabilities(decoded, class_names, column_name)
    if is_string_type(dtype):
        return _from_names(array.cast(pa.string()), class_names, column_name)
    if pa.types.is_boolean(dtype):
        return _from_names(array.cast(pa.string()), class_names, column_name)
    if pa.types.is_integer(dtype):
        return _from_integers(array.to_numpy(zero_copy_only=False).astype(np.int64), class_names,
                              column_name)
    if pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        values = array.cast(pa.float64()).to_numpy(zero_copy_only=False)
        row = first_true(~np.isfinite(values) | (values != np.round(values)))
        if row >= 0:
            raise InputError(f"label {values[row]:g} is not a whole number; store probability "
                             "labels as a list column", row=row, column=column_name)
        return _from_integers(values.astype(np.int64), class_names, column_name)
    raise InputError(f"cannot read labels from a column of type {dtype}; expected class names, "
                     "integers or lists of probabilities", column=column_name)
