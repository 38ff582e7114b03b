"""Images stored as numbers rather than files: list columns and one-column-per-pixel tables.

Two layouts are common in the wild:

**A list column** holding each image's pixels, in one of these shapes (Arrow ``list``,
``large_list``, ``fixed_size_list`` or polars ``Array``, any integer type, or floats holding
whole numbers):

* nested ``H x W`` (grayscale) or ``H x W x C`` (channels last, as NumPy/Pillow produce); a
  nested ``C x H x W`` is recognised when ``C`` is 1 or 3 and the last level is not, or when
  it matches ``image_shape``;
* flat, ``H*W`` or ``H*W*C`` values in row-major, channels-last order (``pixels.ravel()`` of an
  ``(H, W, C)`` array). Without ``image_shape`` a flat length must be a square (``784`` -> 28x28
  grayscale) or three times a square (``3072`` -> 32x32 RGB).

:func:`images_from_lists` converts the whole column with Arrow kernels (see
:mod:`connectors.lists`), no per-row Python.

**Pixel columns**: one numeric column per pixel, as in the Kaggle CSV exports of MNIST
(``pixel0`` ... ``pixel783`` or ``pixel1`` ... ``pixel784``) or grid-named ones (``1x1`` ...
``28x28``, row x column). :func:`pixel_column_names` finds and orders them (by number, so
``pixel10`` comes after ``pixel9``), and :func:`images_from_pixel_columns` stacks them.

Every value must be a whole number in 0..255; anything else (a negative value, 300, 0.5, NaN,
null) is an :class:`InputError` naming the row and the column. Images scaled to 0..1 must be
multiplied by 255 first; guessing the scale would silently change the data.

``image_shape`` is ``(C, H, W)`` (or ``(H, W)`` for grayscale), the same order as
:attr:`sanitizer.records.Records.input_shape`, even though flat values are read channels-last.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from connectors.errors import InputError
from connectors.lists import Column, leaf_type, list_depth, lists_to_numpy, to_arrow

ImageShape = tuple[int, int] | tuple[int, int, int]
"""``(H, W)`` for grayscale or ``(C, H, W)``."""

_PIXEL_NAME = re.compile(r"^pix(?:el)?s?[_\-]?(\d+)$", re.IGNORECASE)
_GRID_NAME = re.compile(r"^(\d+)x(\d+)$")


def normalize_shape(image_shape: Sequence[int] | None) -> tuple[int, int, int] | None:
    """``(H, W)`` -> ``(1, H, W)``; ``(C, H, W)`` unchanged; ``None`` stays ``None``."""
    if image_shape is None:
        return None
    shape = tuple(int(d) for d in image_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or shape[0] not in (1, 3) or min(shape) < 1:
        raise ValueError(
            f"image_shape must be (H, W) or (C, H, W) with C in (1, 3), got {image_shape}")
    return shape  # type: ignore[return-value]


def square_shape(length: int) -> tuple[int, int, int] | None:
    """The ``(C, H, W)`` a flat pixel count implies: ``H*W`` square -> C=1, ``3*H*W`` -> C=3."""
    for channels in (1, 3):
        if length % channels == 0:
            side = math.isqrt(length // channels)
            if side > 0 and side * side * channels == length:
                return (channels, side, side)
    return None


def to_uint8(values: np.ndarray, *, column: str | Sequence[str], row_offset: int = 0) -> np.ndarray:
    """Check that ``values`` ``(N, ...)`` are whole numbers in 0..255 and return them as ``uint8``.

    ``column`` is one name, or one name per position along axis 1 (pixel columns), so the error
    can name the exact column. Raises :class:`InputError` at the first bad value.
    """
    if values.dtype == np.uint8:
        return values
    if values.dtype.kind not in "iuf":
        raise InputError(f"pixel values must be numbers, found {values.dtype}",
                         column=column if isinstance(column, str) else None)
    ok = True
    if len(values):
        if values.dtype.kind == "f":
            with np.errstate(invalid="ignore"):
                ok = bool(np.isfinite(values).all() and (values == np.round(values)).all())
        ok = ok and values.min() >= 0 and values.max() <= 255
    if not ok:
        flat = values.reshape(len(values), -1)
        with np.errstate(invalid="ignore"):
            bad = ~((flat >= 0) & (flat <= 255) & (flat == np.round(flat)))
        row, position = (int(i[0]) for i in np.nonzero(bad))
        value = flat[row, position]
        name = column if isinstance(column, str) else column[position]
        kind = ("missing (NaN)" if np.isnan(value) else
                "not a whole number" if 0 <= value <= 255 else "outside 0..255")
        raise InputError(f"pixel value {value:g} is {kind} (pixels must be integers 0..255)",
                         row=row + row_offset, column=name)
    return values.astype(np.uint8)


def _channels_last(flat_or_nested: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    channels, height, width = shape
    hwc = flat_or_nested.reshape(len(flat_or_nested), height, width, channels)
    return np.ascontiguousarray(hwc.transpose(0, 3, 1, 2))


def _interpret(values: np.ndarray, image_shape: tuple[int, int, int] | None,
               column: str) -> np.ndarray:
    """``(N, d1[, d2[, d3]])`` numbers -> ``(N, C, H, W)`` in the layouts the docstring lists."""
    dims = values.shape[1:]
    if len(dims) == 1:
        shape = image_shape or square_shape(dims[0])
        if shape is None:
            raise InputError(
                f"{dims[0]} pixel values are not a square image; give image_shape=(C, H, W)",
                row=0, column=column)
        if math.prod(shape) != dims[0]:
            raise InputError(f"image has {dims[0]} values, image_shape {shape} needs "
                             f"{math.prod(shape)}", row=0, column=column)
        return _channels_last(values, shape)
    if len(dims) == 2:
        shape = (1, *dims)
        if image_shape is not None and image_shape != shape:
            raise InputError(f"image is {dims[0]}x{dims[1]}, expected {image_shape[1]}x"
                             f"{image_shape[2]} (height x width)", row=0, column=column)
        return values.reshape(len(values), *shape)
    if len(dims) == 3:
        a, b, c = dims
        if image_shape is not None:
            if image_shape == (c, a, b):
                return _channels_last(values, image_shape)
            if image_shape == dims:
                return values
            raise InputError(f"image has nested shape {a}x{b}x{c}, which fits neither HxWxC nor "
                             f"CxHxW for image_shape {image_shape}", row=0, column=column)
        if c in (1, 3):
            return _channels_last(values, (c, a, b))
        if a in (1, 3):
            return values
        raise InputError(f"image has nested shape {a}x{b}x{c}; expected HxWxC or CxHxW with "
                         "1 or 3 channels", row=0, column=column)
    raise InputError(f"images nested {len(dims)} levels deep; expected flat, HxW or HxWxC lists",
                     column=column)


def images_from_lists(
    column: Column,
    *,
    column_name: str,
    image_shape: ImageShape | None = None,
    batch_rows: int = 16_384,
) -> np.ndarray:
    """A list column of pixel values as ``(N, C, H, W)`` ``uint8`` (layouts: module docstring).

    Works through ``batch_rows`` records at a time so wide integer types (``int64`` pixels) never
    need more than one batch of temporary memory. Errors name the record's row (from 0) and
    ``column_name``.
    """
    array = to_arrow(column)
    leaf = leaf_type(array.type)
    if list_depth(array.type) == 0 or not (pa.types.is_integer(leaf) or pa.types.is_floating(leaf)):
        raise InputError(f"expected a list column of pixel numbers, found {array.type}",
                         column=column_name)
    shape = normalize_shape(image_shape)
    if len(array) == 0:
        return np.zeros((0, *(shape or (1, 0, 0))), dtype=np.uint8)
    expected_dims: tuple[int, ...] | None = None
    out: np.ndarray | None = None
    for start in range(0, len(array), batch_rows):
        piece = array.slice(start, batch_rows)
        try:
            values = lists_to_numpy(piece, column_name=column_name, expected_dims=expected_dims)
            images = _interpret(to_uint8(values, column=column_name), shape, column_name)
        except InputError as error:
            raise error.located(row=None if error.row is None else error.row + start) from None
        if out is None:
            expected_dims, shape = values.shape[1:], images.shape[1:]
            out = np.empty((len(array), *shape), dtype=np.uint8)
        out[start:start + len(images)] = images
    assert out is not None
    return out


def pixel_column_names(names: Iterable[str]) -> list[str]:
    """The pixel columns among ``names``, in pixel order (empty list if there are none).

    Recognises ``pixel0``/``pixel_0``/``px0``/``pixels0``... (ordered by number) and grid names
    ``1x1``, ``1x2``... (ordered by row, then column). Other names are ignored.
    """
    names = list(names)
    numbered = sorted((int(m.group(1)), n) for n in names if (m := _PIXEL_NAME.match(n)))
    if numbered:
        return [n for _, n in numbered]
    grid = sorted(
        ((int(m.group(1)), int(m.group(2))), n) for n in names if (m := _GRID_NAME.match(n)))
    return [n for _, n in grid]


def _grid_shape(columns: Sequence[str]) -> tuple[int, int, int] | None:
    cells = [m for c in columns if (m := _GRID_NAME.match(c))]
    if len(cells) != len(columns) or not cells:
        return None
    height = max(int(m.group(1)) for m in cells)
    width = max(int(m.group(2)) for m in cells)
    return (1, height, width) if height * width == len(columns) else None


def _check_consecutive(columns: Sequence[str]) -> None:
    numbers = [int(m.group(1)) for c in columns if (m := _PIXEL_NAME.match(c))]
    if len(numbers) == len(columns) and numbers:
        expected = range(numbers[0], numbers[0] + len(numbers))
        missing = sorted(set(expected) - set(numbers))
        if missing or len(set(numbers)) != len(numbers):
            gap = f"number {missing[0]} is missing" if missing else "a number repeats"
            raise InputError(f"pixel columns are not consecutive ({gap}); pass the columns "
                             "explicitly", column=columns[0])


def images_from_pixel_columns(
    frame: pl.DataFrame,
    columns: Sequence[str],
    *,
    image_shape: ImageShape | None = None,
) -> np.ndarray:
    """Stack one-column-per-pixel data into ``(N, C, H, W)`` ``uint8`` images.

    ``columns`` are in pixel order (row-major, channels last, as :func:`pixel_column_names`
    returns them). The shape comes from ``image_shape``, else from grid names (``28x28``), else
    from the column count (square, or 3 x square for RGB). Converts one column at a time into a
    preallocated ``uint8`` array, so memory stays at the output size plus one column.
    """
    columns = list(columns)
    _check_consecutive(columns)
    shape = normalize_shape(image_shape) or _grid_shape(columns) or square_shape(len(columns))
    if shape is None or math.prod(shape) != len(columns):
        raise InputError(
            f"{len(columns)} pixel columns do not make a square image"
            + ("" if shape is None else f" of shape {shape}")
            + "; give image_shape=(C, H, W)",
            column=columns[0] if columns else None,
        )
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"missing pixel column(s) {missing[:5]}", column=missing[0])
    out = np.empty((frame.height, len(columns)), dtype=np.uint8)
    for position, name in enumerate(columns):
        series = frame.get_column(name)
        if series.null_count():
            row = int(series.is_null().arg_true()[0])
            raise InputError("missing pixel value (null)", row=row, column=name)
        out[:, position] = to_uint8(series.to_numpy(), column=name)
    return _channels_last(out, shape)
