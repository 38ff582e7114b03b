"""Turn an image column, in whatever encoding it arrives, into ``uint8`` ``(N, C, H, W)`` arrays.

Crowdsourced image data is stored in a handful of ways. :func:`images_from_column` recognises
the column's Arrow type and picks the matching decoder:

=============================  ==================================================================
column type                     how it is read
=============================  ==================================================================
``binary``                      PNG/JPEG/... file bytes, decoded with Pillow
                                (:func:`connectors.image_codecs.decode_images`)
``struct<bytes, path>``         the Hugging Face ``Image`` feature: ``bytes`` when present, else
                                the file at ``path`` (relative paths start at ``base_dir``)
``string``                      file paths (relative to ``base_dir``), or JSON lists of pixels
                                as written to CSV by :func:`connectors.reports.write_table`
``list`` / ``fixed_size_list``  pixel numbers, flat or nested
                                (:func:`connectors.pixel_arrays.images_from_lists`)
=============================  ==================================================================

A fourth layout, one numeric column per pixel (``pixel0`` ... ``pixel783``), spans many columns
and is handled by :func:`images_from_pixel_columns` with :func:`pixel_column_names`.

Grayscale images come out with ``C = 1``, colour with ``C = 3``; how mixed modes and sizes are
handled is described in :mod:`connectors.image_codecs` (first image decides, palette/RGBA/LA are
converted, different sizes are an error). ``image_shape`` is ``(C, H, W)`` or ``(H, W)``; when
given it fixes channels and size instead of the first image.

Every problem is an :class:`~connectors.errors.InputError` with the 0-based row within the
column and the column name: undecodable bytes, a null image, an image of another size, a pixel
outside 0..255.

>>> import numpy as np
>>> images = np.arange(2 * 28 * 28, dtype=np.uint64).reshape(2, 1, 28, 28).astype(np.uint8)
>>> back = images_from_column(pa.array(encode_png(images)), column_name="image")
>>> bool((back == images).all())
True
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from connectors.errors import InputError
from connectors.image_codecs import decode_images, encode_images, encode_png
from connectors.lists import (
    Column,
    first_null,
    is_list_type,
    is_string_type,
    json_lists,
    looks_like_json_lists,
    to_arrow,
)
from connectors.pixel_arrays import (
    ImageShape,
    images_from_lists,
    images_from_pixel_columns,
    normalize_shape,
    pixel_column_names,
)

__all__ = [
    "ImageShape",
    "decode_images",
    "encode_images",
    "encode_png",
    "image_column_kind",
    "images_from_column",
    "images_from_lists",
    "images_from_pixel_columns",
    "pixel_column_names",
]


def _is_binary(dtype: pa.DataType) -> bool:
    types = pa.types
    return types.is_binary(dtype) or types.is_large_binary(dtype) or types.is_binary_view(dtype)


def image_column_kind(dtype: pa.DataType) -> str | None:
    """What kind of image column an Arrow type can be, or ``None`` if it cannot hold images.

    ``"encoded"`` (binary file bytes), ``"struct"`` (``{bytes, path}``), ``"array"`` (a list with
    numeric elements) or ``"string"`` (paths or JSON lists).
    """
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    if _is_binary(dtype):
        return "encoded"
    if pa.types.is_struct(dtype) and {"bytes", "path"} & {f.name for f in dtype}:
        return "struct"
    if is_list_type(dtype):
        leaf = dtype
        while is_list_type(leaf):
            leaf = leaf.value_type
        return "array" if pa.types.is_integer(leaf) or pa.types.is_floating(leaf) else None
    if is_string_type(dtype):
        return "string"
    return None


def _read_file(path: str, base_dir: Path | None, row: int, column: str) -> bytes:
    file = Path(path)
    if not file.is_absolute() and base_dir is not None:
        file = base_dir / file
    try:
        return file.read_bytes()
    except OSError as error:
        raise InputError(f"cannot read image file {str(file)!r} ({error.strerror or error})",
                         row=row, column=column) from None


def _blobs_from_struct(array: pa.StructArray, base_dir: Path | None, column: str) -> list[bytes]:
    if array.null_count:
        raise InputError("missing image (null)", row=first_null(array), column=column)
    names = {f.name for f in array.type}
    data = array.field("bytes").to_pylist() if "bytes" in names else [None] * len(array)
    paths = array.field("path").to_pylist() if "path" in names else [None] * len(array)
    blobs = []
    for row, (blob, path) in enumerate(zip(data, paths, strict=True)):
        if blob is None:
            if path is None:
                raise InputError("missing image (both bytes and path are null)", row=row,
                                 column=column)
            blob = _read_file(path, base_dir, row, column)
        blobs.append(blob)
    return blobs


def _blobs_from_paths(array: pa.Array, base_dir: Path | None, column: str) -> list[bytes]:
    if array.null_count:
        raise InputError("missing image path (null)", row=first_null(array), column=column)
    return [_read_file(path, base_dir, row, column) for row, path in enumerate(array.to_pylist())]


def images_from_column(
    column: Column,
    *,
    column_name: str,
    image_shape: ImageShape | None = None,
    base_dir: str | Path | None = None,
) -> np.ndarray:
    """Decode one image column (any kind in the module docstring) to ``(N, C, H, W)`` ``uint8``.

    ``base_dir`` anchors relative image paths (struct ``path`` fields and path strings); without
    it they are relative to the working directory.
    """
    array = to_arrow(column)
    kind = image_column_kind(array.type)
    shape = normalize_shape(image_shape)
    base = None if base_dir is None else Path(base_dir)
    if kind == "encoded":
        return decode_images(array.to_pylist(), column=column_name, image_shape=shape)
    if kind == "struct":
        blobs = _blobs_from_struct(array, base, column_name)
        return decode_images(blobs, column=column_name, image_shape=shape)
    if kind == "array":
        return images_from_lists(array, column_name=column_name, image_shape=shape)
    if kind == "string":
        if looks_like_json_lists(array):
            if array.null_count:
                raise InputError("missing image (null)", row=first_null(array), column=column_name)
            decoded = json_lists(array, column_name=column_name)
            return images_from_lists(decoded, column_name=column_name, image_shape=shape)
        blobs = _blobs_from_paths(array, base, column_name)
        return decode_images(blobs, column=column_name, image_shape=shape)
    raise InputError(
        f"cannot read images from a column of type {array.type}; expected image bytes, a "
        "{bytes, path} struct, file paths or lists of pixel values",
        column=column_name,
    )
