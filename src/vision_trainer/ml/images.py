"""Decode and validate one image: format from content, pixel cap, EXIF rotation, RGB output."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .errors import ImageTooLargeError, InvalidImageError, UnsupportedFormatError

# Pillow opens phones' MPO files (JPEG with extra frames) through its JPEG plugin, as their first frame.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
DEFAULT_MAX_PIXELS = 50_000_000
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def sniff_format(header: bytes) -> str | None:
    """The allowed format whose magic bytes ``header`` starts with, if any."""
    if header[:4] == b"RIFF" and header[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _SIGNATURES if header.startswith(magic)), None)


def open_image(
    source: bytes | Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: int | None = None,
) -> Image.Image:
    """Decode an image into an RGB ``PIL.Image``.

    Args:
        source: The encoded bytes, or a path to them.
        max_pixels: Refuse images with more pixels than this before decoding them.
        draft_size: For JPEGs, let the decoder downscale by a power of two while both sides stay at
            least this large (much faster for big photos whose output is resized anyway).

    Raises:
        UnsupportedFormatError: the content is not one of ``ALLOWED_FORMATS``.
        ImageTooLargeError: more than ``max_pixels`` pixels.
        InvalidImageError: corrupt or truncated data.
    """
    data = source if isinstance(source, bytes) else source.read_bytes()
    stream = io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream, formats=ALLOWED_FORMATS)
    except Image.UnidentifiedImageError:
        if fmt := sniff_format(data[:16]):
            raise InvalidImageError(f"corrupt or truncated {fmt} file") from None
        raise UnsupportedFormatError(f"not a supported image (allowed: {', '.join(ALLOWED_FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLargeError(f"image has more than {max_pixels} pixels") from None
    except MemoryError:
        raise
    except Exception as exc:  # Pillow raises many types on crafted headers (found by bench/fuzz_images.py)
        raise InvalidImageError(f"cannot read image: {type(exc).__name__}: {exc}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLargeError(f"image is {width}x{height}, more than {max_pixels} pixels")
    if draft_size and image.format in ("JPEG", "MPO"):
        image.draft("RGB", (draft_size, draft_size))
    try:
        image.load()
        return to_rgb(ImageOps.exif_transpose(image))
    except MemoryError:
        raise
    except Exception as exc:  # e.g. TypeError from a TIFF with rational-typed size tags
        raise InvalidImageError(f"corrupt or truncated image: {type(exc).__name__}: {exc}") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparent areas become white, 16-bit is rescaled."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        array = np.clip(array / peak * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if image.mode == "P" or image.mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
