"""Decode and encode image files (PNG, JPEG, anything Pillow reads) as ``uint8`` arrays.

:func:`decode_images` turns a sequence of encoded images into one ``(N, C, H, W)`` ``uint8`` array;
:func:`encode_images` / :func:`encode_png` go the other way. Both loop over images in Python
because Pillow decodes one image per call; each iteration does the minimum (open with the known
format, ``tobytes`` straight into the output), which reaches well over 10,000 small PNGs per second
on one core.

Colour handling. A dataset has one channel count, so images are brought to one Pillow *mode*:

* ``1``, ``L``, ``LA`` (grayscale, with or without alpha) become ``L``: ``C = 1``;
* ``RGB``, ``RGBA``, ``RGBX``, ``P``/``PA`` (palette), ``CMYK``, ``YCbCr`` become ``RGB``:
  ``C = 3``.

The **first image decides** the target mode for the whole column (unless the caller fixes the
channel count with ``image_shape``), and every other image is converted with Pillow's
``convert``: a colour image in a grayscale column becomes luma (ITU-R 601-2), a grayscale one in
a colour column is repeated over three channels. Alpha is dropped, not composited over a
background. 16-bit and floating-point modes (``I;16``, ``I``, ``F``) are refused rather than
silently clipped to 8 bits.

All images must have the same height and width (the first image's, or ``image_shape``'s);
a different size is an :class:`InputError` such as ``row 5: image is 32x32, expected 28x28
(height x width)``. Rows count from 0 within the sequence given.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from connectors.errors import InputError

TARGET_MODE = {
    "1": "L", "L": "L", "LA": "L",
    "RGB": "RGB", "RGBA": "RGB", "RGBX": "RGB", "P": "RGB", "PA": "RGB", "CMYK": "RGB",
    "YCbCr": "RGB",
}
"""Pillow mode of an input image -> the mode it is decoded to (``L``: 1 channel, ``RGB``: 3)."""

CHANNELS = {"L": 1, "RGB": 3}
MODE_FOR_CHANNELS = {1: "L", 3: "RGB"}
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def _open(blob: bytes, formats: tuple[str, ...] | None, row: int, column: str) -> Image.Image:
    try:
        try:
            image = Image.open(io.BytesIO(blob), formats=formats)
        except Image.UnidentifiedImageError:
            if formats is None:
                raise
            image = Image.open(io.BytesIO(blob))  # a column may mix PNG and JPEG
        image.load()
    except _DECODE_ERRORS as error:
        raise InputError(f"cannot decode image bytes ({error})", row=row, column=column) from None
    return image


def _target_mode(image: Image.Image, channels: int | None, row: int, column: str) -> str:
    if image.mode not in TARGET_MODE:
        raise InputError(
            f"unsupported image mode {image.mode!r} (16-bit or float?); "
            "store 8-bit grayscale or RGB",
            row=row, column=column,
        )
    if channels is None:
        return TARGET_MODE[image.mode]
    if channels not in MODE_FOR_CHANNELS:
        raise InputError(f"images must have 1 or 3 channels, image_shape asks for {channels}",
                         column=column)
    return MODE_FOR_CHANNELS[channels]


def decode_images(
    blobs: Sequence[bytes | None],
    *,
    column: str,
    image_shape: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """Decode encoded images into one ``(N, C, H, W)`` ``uint8`` array.

    ``image_shape`` ``(C, H, W)`` fixes channels and size; otherwise the first image decides both
    (see the module docstring). ``None`` entries and undecodable bytes raise :class:`InputError`
    with their row and ``column``.
    """
    n = len(blobs)
    if n == 0:
        return np.zeros((0, *(image_shape or (1, 0, 0))), dtype=np.uint8)
    if blobs[0] is None:
        raise InputError("missing image (null)", row=0, column=column)
    first = _open(blobs[0], None, 0, column)
    mode = _target_mode(first, None if image_shape is None else image_shape[0], 0, column)
    channels = CHANNELS[mode]
    height, width = (first.height, first.width) if image_shape is None else image_shape[1:]
    formats = (first.format,) if first.format else None
    out = np.empty((n, height * width * channels), dtype=np.uint8)
    for row, blob in enumerate(blobs):
        if blob is None:
            raise InputError("missing image (null)", row=row, column=column)
        image = first if row == 0 else _open(blob, formats, row, column)
        if image.size != (width, height):
            raise InputError(
                f"image is {image.height}x{image.width}, expected {height}x{width} "
                "(height x width)",
                row=row, column=column,
            )
        if image.mode != mode:
            _target_mode(image, channels, row, column)  # refuses 16-bit/float modes
            image = image.convert(mode)
        out[row] = np.frombuffer(image.tobytes(), dtype=np.uint8)
    # Pillow's bytes are pixel-interleaved (H, W, C); Records are channels-first (C, H, W).
    return np.ascontiguousarray(out.reshape(n, height, width, channels).transpose(0, 3, 1, 2))


def encode_images(images: np.ndarray, format: str = "PNG", **save_options: object) -> list[bytes]:
    """Encode a ``(N, C, H, W)`` ``uint8`` array (C = 1 or 3) as one file's bytes per image.

    ``format`` is any format Pillow writes (``"PNG"``, ``"JPEG"``, ``"WEBP"``...);
    ``save_options`` go to :meth:`PIL.Image.Image.save` (e.g. ``quality=90`` for JPEG).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[1] not in MODE_FOR_CHANNELS:
        raise ValueError(
            f"expected uint8 images of shape (N, 1 or 3, H, W), got {images.dtype} {images.shape}"
        )
    hwc = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
    mode = MODE_FOR_CHANNELS[images.shape[1]]
    encoded = []
    for pixels in hwc:
        buffer = io.BytesIO()
        Image.fromarray(pixels[..., 0] if mode == "L" else pixels).save(
            buffer, format=format, **save_options
        )
        encoded.append(buffer.getvalue())
    return encoded


def encode_png(images: np.ndarray, *, compress_level: int = 6) -> list[bytes]:
    """Encode ``(N, C, H, W)`` ``uint8`` images (C = 1 or 3) as lossless PNG bytes, one per image.

    Decoding the result with :func:`decode_images` gives back exactly ``images``.
    """
    return encode_images(images, "PNG", compress_level=compress_level)
