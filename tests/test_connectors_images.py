"""Image columns in every supported encoding -> uint8 (N, C, H, W), checked on real images."""

from __future__ import annotations

import io
import time

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from PIL import Image

from connectors.errors import InputError
from connectors.image_codecs import decode_images, encode_images
from connectors.images import (
    encode_png,
    image_column_kind,
    images_from_column,
    images_from_pixel_columns,
    pixel_column_names,
)

N = 300


@pytest.fixture
def gray(fmnist) -> np.ndarray:
    """300 real Fashion-MNIST images, (N, 1, 28, 28) uint8."""
    return fmnist["x_train"][:N, None]


@pytest.fixture
def rgb(cifar10) -> np.ndarray:
    """300 real CIFAR-10 images, (N, 3, 32, 32) uint8."""
    return np.ascontiguousarray(cifar10["x_train"][:: 10000 // N][:N].transpose(0, 3, 1, 2))


def _hwc(images: np.ndarray) -> np.ndarray:
    return images.transpose(0, 2, 3, 1)


def _png(array_hw_or_hwc: np.ndarray, mode: str | None = None) -> bytes:
    image = Image.fromarray(array_hw_or_hwc)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------- encoded bytes (PNG, JPEG)

@pytest.mark.parametrize("which", ["gray", "rgb"])
def test_png_bytes_round_trip_exactly(request, which):
    images = request.getfixturevalue(which)
    column = pa.array(encode_png(images), pa.binary())
    assert image_column_kind(column.type) == "encoded"
    decoded = images_from_column(column, column_name="image")
    assert decoded.dtype == np.uint8 and decoded.shape == images.shape
    np.testing.assert_array_equal(decoded, images)


def test_polars_binary_and_large_binary_columns(gray):
    series = pl.Series("image", encode_png(gray))
    np.testing.assert_array_equal(images_from_column(series, column_name="image"), gray)
    chunked = pa.chunked_array([pa.array(encode_png(gray[:100]), pa.large_binary()),
                                pa.array(encode_png(gray[100:]), pa.large_binary())])
    np.testing.assert_array_equal(images_from_column(chunked, column_name="image"), gray)


def test_jpeg_bytes_decode_close_to_the_original(rgb, gray):
    for images in (rgb, gray):
        column = pa.array(encode_images(images, "JPEG", quality=95))
        decoded = images_from_column(column, column_name="image")
        assert decoded.shape == images.shape
        assert np.abs(decoded.astype(int) - images).mean() < 4  # lossy, but close


def test_png_decode_throughput(fmnist):
    images = fmnist["x_train"][:10_000, None]
    column = pa.array(encode_png(images))
    start = time.perf_counter()
    images_from_column(column, column_name="image")
    rate = len(images) / (time.perf_counter() - start)
    print(f"\nPNG decode: {rate:,.0f} images/s (28x28 grayscale)")


def test_modes_are_unified_first_image_decides(gray, rgb):
    # Colour column: palette and RGBA images become RGB (alpha dropped), gray is repeated.
    hwc = _hwc(rgb[:3])
    blobs = [_png(hwc[0]), _png(hwc[1], "RGBA"), _png(hwc[2], "P"), _png(hwc[0], "L")]
    decoded = images_from_column(pa.array(blobs), column_name="image")
    assert decoded.shape == (4, 3, 32, 32)
    np.testing.assert_array_equal(decoded[0], rgb[0])
    np.testing.assert_array_equal(decoded[1], rgb[1])
    luma = np.asarray(Image.fromarray(hwc[0]).convert("L"))
    np.testing.assert_array_equal(decoded[3], np.repeat(luma[None], 3, axis=0))
    # Grayscale column: LA and 1-bit stay one channel, an RGB image is converted to luma.
    blobs = [_png(gray[0, 0]), _png(gray[1, 0], "LA"), _png(np.repeat(gray[2, 0][..., None], 3, 2))]
    decoded = images_from_column(pa.array(blobs), column_name="image")
    assert decoded.shape == (3, 1, 28, 28)
    np.testing.assert_array_equal(decoded, gray[:3])
    # image_shape fixes the channel count instead of the first image.
    decoded = images_from_column(pa.array(encode_png(gray[:2])), column_name="image",
                                 image_shape=(3, 28, 28))
    np.testing.assert_array_equal(decoded, np.repeat(gray[:2], 3, axis=1))


# ---------------------------------------------------------------- Hugging Face {bytes, path}

def test_struct_with_bytes_or_paths_relative_to_base_dir(tmp_path, gray):
    blobs = encode_png(gray[:50])
    (tmp_path / "img").mkdir()
    rows = []
    for i, blob in enumerate(blobs):
        if i % 2:  # every other image only on disk
            (tmp_path / "img" / f"{i}.png").write_bytes(blob)
            rows.append({"bytes": None, "path": f"img/{i}.png"})
        else:
            rows.append({"bytes": blob, "path": f"original_{i}.png"})
    column = pa.array(rows, pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    assert image_column_kind(column.type) == "struct"
    decoded = images_from_column(column, column_name="image", base_dir=tmp_path)
    np.testing.assert_array_equal(decoded, gray[:50])
    paths = pa.array([f"img/{i}.png" for i in range(1, 50, 2)])
    np.testing.assert_array_equal(
        images_from_column(paths, column_name="file", base_dir=tmp_path), gray[1:50:2])
    with pytest.raises(InputError, match=r"row 1, column 'image': cannot read image file"):
        images_from_column(column, column_name="image", base_dir=tmp_path / "elsewhere")


# ---------------------------------------------------------------- numeric lists

def test_flat_fixed_size_list_uint8(gray):
    flat = pa.FixedSizeListArray.from_arrays(pa.array(gray.reshape(-1)), 28 * 28)
    np.testing.assert_array_equal(images_from_column(flat, column_name="pixels"), gray)


def test_flat_int64_list_and_float_list(gray):
    ints = pa.array(list(gray.reshape(N, -1).astype(np.int64)), pa.list_(pa.int64()))
    np.testing.assert_array_equal(images_from_column(ints, column_name="pixels"), gray)
    floats = pl.Series("pixels", gray.reshape(N, -1).astype(np.float64)).to_arrow()
    np.testing.assert_array_equal(images_from_column(floats, column_name="pixels"), gray)


def test_nested_lists_hw_and_hwc_and_chw(gray, rgb):
    nested_hw = pl.Series("image", gray[:, 0].astype(np.int32))  # polars Array(Array(i32))
    np.testing.assert_array_equal(images_from_column(nested_hw, column_name="image"), gray)
    as_lists = pa.array([img.tolist() for img in gray[:40, 0]])  # list<list<int64>>
    np.testing.assert_array_equal(images_from_column(as_lists, column_name="image"), gray[:40])
    nested_hwc = pl.Series("image", _hwc(rgb))
    np.testing.assert_array_equal(images_from_column(nested_hwc, column_name="image"), rgb)
    nested_chw = pl.Series("image", rgb)  # 3 x 32 x 32: channels first is recognised
    np.testing.assert_array_equal(images_from_column(nested_chw, column_name="image"), rgb)


def test_flat_rgb_needs_channels_last_order(rgb):
    flat = pl.Series("pixels", _hwc(rgb).reshape(N, -1))  # 3072 = 3 x 32 x 32
    np.testing.assert_array_equal(images_from_column(flat, column_name="pixels"), rgb)
    np.testing.assert_array_equal(
        images_from_column(flat, column_name="pixels", image_shape=(3, 32, 32)), rgb)
    wide = pl.Series("pixels", _hwc(rgb)[:, :16].reshape(N, -1))  # 16 x 32 RGB, not square
    with pytest.raises(InputError, match="not a square image; give image_shape"):
        images_from_column(wide, column_name="pixels")
    decoded = images_from_column(wide, column_name="pixels", image_shape=(3, 16, 32))
    np.testing.assert_array_equal(decoded, rgb[:, :, :16])


def test_json_list_strings_as_written_to_csv(gray):
    strings = pa.array([str(img.reshape(-1).tolist()) for img in gray[:20]])
    np.testing.assert_array_equal(images_from_column(strings, column_name="pixels"), gray[:20])


def test_array_throughput(fmnist):
    images = fmnist["x_train"][:, None]
    column = pl.Series("pixels", images.reshape(len(images), -1).astype(np.int64)).to_arrow()
    start = time.perf_counter()
    images_from_column(column, column_name="pixels")
    rate = len(images) / (time.perf_counter() - start)
    print(f"\nint64 pixel lists: {rate:,.0f} images/s (28x28)")


# ---------------------------------------------------------------- one column per pixel

def test_pixel_columns_in_numeric_order(gray):
    flat = gray.reshape(N, -1)
    frame = pl.DataFrame({f"pixel{i}": flat[:, i].astype(np.int64) for i in range(784)})
    shuffled = frame.select(np.random.default_rng(0).permutation(frame.columns).tolist())
    columns = pixel_column_names(["label", *shuffled.columns])
    assert columns[:3] == ["pixel0", "pixel1", "pixel2"] and columns[10] == "pixel10"
    np.testing.assert_array_equal(images_from_pixel_columns(shuffled, columns), gray)


def test_grid_named_pixel_columns(gray):
    flat = gray.reshape(N, -1)
    names = [f"{r}x{c}" for r in range(1, 29) for c in range(1, 29)]
    frame = pl.DataFrame({name: flat[:, i] for i, name in enumerate(names)})
    columns = pixel_column_names(reversed(frame.columns))
    assert columns[:2] == ["1x1", "1x2"] and columns[28] == "2x1"
    np.testing.assert_array_equal(images_from_pixel_columns(frame, columns), gray)


# ---------------------------------------------------------------- errors

def test_undecodable_bytes_name_row_and_column(gray):
    blobs = encode_png(gray[:8])
    blobs[5] = blobs[5][:40]  # truncated file
    with pytest.raises(InputError, match=r"^row 5, column 'image': cannot decode image bytes"):
        images_from_column(pa.array(blobs), column_name="image")
    blobs[5] = b"definitely not an image"
    with pytest.raises(InputError, match=r"^row 5, column 'image': cannot decode"):
        images_from_column(pa.array(blobs), column_name="image")


def test_mixed_sizes_name_the_row(gray, rgb):
    blobs = encode_png(gray[:8])
    blobs[5] = encode_png(rgb[:1, :1])[0]  # a 32x32 image among 28x28 ones
    with pytest.raises(InputError, match=r"row 5, column 'image': image is 32x32, expected "
                                         r"28x28 \(height x width\)"):
        images_from_column(pa.array(blobs), column_name="image")
    ragged = pa.array([img.reshape(-1).tolist() for img in gray[:6]]
                      + [gray[6, 0, :27].reshape(-1).tolist()])
    with pytest.raises(InputError, match=r"row 6, column 'px': list has 756 values, expected 784"):
        images_from_column(ragged, column_name="px")


def test_null_images_name_the_row(gray):
    blobs: list = encode_png(gray[:4])
    blobs[2] = None
    with pytest.raises(InputError, match=r"row 2, column 'image': missing image \(null\)"):
        images_from_column(pa.array(blobs, pa.binary()), column_name="image")
    struct = pa.array([{"bytes": b, "path": None} for b in blobs],
                      pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    with pytest.raises(InputError, match=r"row 2, column 'image': missing image"):
        images_from_column(struct, column_name="image")
    lists = pa.array([None if b is None else img.reshape(-1).tolist()
                      for b, img in zip(blobs, gray[:4], strict=True)])
    with pytest.raises(InputError, match=r"row 2, column 'px': missing value \(null\)"):
        images_from_column(lists, column_name="px")


def test_pixel_values_outside_0_255_name_row_and_column(gray):
    values = gray[:5].reshape(5, -1).astype(np.int64)
    values[3, 100] = 256
    with pytest.raises(InputError, match=r"row 3, column 'px': pixel value 256 is outside 0..255"):
        images_from_column(pa.array(list(values)), column_name="px")
    values[3, 100] = -1
    frame = pl.DataFrame({f"pixel{i}": values[:, i] for i in range(784)})
    with pytest.raises(InputError, match=r"row 3, column 'pixel100': pixel value -1 is outside"):
        images_from_pixel_columns(frame, pixel_column_names(frame.columns))
    scaled = pl.Series("px", gray[:5].reshape(5, -1) / 255.0)
    with pytest.raises(InputError, match=r"column 'px': pixel value .* is not a whole number"):
        images_from_column(scaled, column_name="px")


def test_pixel_column_problems(gray):
    flat = gray[:5].reshape(5, -1)
    frame = pl.DataFrame({f"pixel{i}": flat[:, i] for i in range(784) if i != 7})
    with pytest.raises(InputError, match="number 7 is missing"):
        images_from_pixel_columns(frame, pixel_column_names(frame.columns))
    frame = pl.DataFrame({f"pixel{i}": flat[:, i] for i in range(783)})
    with pytest.raises(InputError, match="783 pixel columns do not make a square image"):
        images_from_pixel_columns(frame, pixel_column_names(frame.columns))
    frame = pl.DataFrame({f"pixel{i}": flat[:, i] for i in range(784)}).with_columns(
        pl.when(pl.int_range(5) == 4).then(None).otherwise(pl.col("pixel9")).alias("pixel9"))
    with pytest.raises(InputError, match=r"row 4, column 'pixel9': missing pixel value"):
        images_from_pixel_columns(frame, pixel_column_names(frame.columns))


def test_sixteen_bit_images_are_refused(gray):
    wide = Image.fromarray(gray[1, 0].astype(np.uint16) * 256)
    buffer = io.BytesIO()
    wide.save(buffer, format="PNG")
    blobs = [encode_png(gray[:1])[0], buffer.getvalue()]
    with pytest.raises(InputError, match=r"row 1, column 'image': unsupported image mode"):
        decode_images(blobs, column="image")


def test_unsupported_column_type():
    with pytest.raises(InputError, match="column 'image': cannot read images from a column of"):
        images_from_column(pa.array([1, 2, 3]), column_name="image")
