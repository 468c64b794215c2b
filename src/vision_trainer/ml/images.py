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
# A photo is at most a panorama; 20000x10 is a bomb whose resize to a 256 short side is 512,000 px long.
DEFAULT_MAX_ASPECT = 50.0
_ROWS_PER_STEP = 256
_ORIENTATION = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
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


class PixelBudget:
    """Decoded pixels a request may still spend, over all its images; not thread-safe (one per request)."""

    def __init__(self, pixels: int) -> None:
        self.total = pixels
        self.left = pixels

    def spend(self, pixels: int) -> None:
        """Raises ImageTooLargeError when ``pixels`` would pass what is left (nothing is spent then)."""
        if pixels > self.left:
            raise ImageTooLargeError(
                f"decoding this image would pass the {self.total} pixels one request may decode; "
                "send fewer or smaller images per request"
            )
        self.left -= pixels


def open_image(
    source: bytes | Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: int | None = None,
    max_aspect: float = DEFAULT_MAX_ASPECT,
    budget: PixelBudget | None = None,
) -> Image.Image:
    """Decode an image into an RGB ``PIL.Image``, no larger than what its user needs.

    Args:
        source: The encoded bytes, or a path to them.
        max_pixels: Refuse images with more pixels than this before decoding them.
        draft_size: The shorter side its user resizes to. JPEGs are decoded downscaled by a power of two
            while both sides stay at least this large (much faster for big photos); any other image is
            shrunk by a whole factor right after decoding, to a shorter side of at least this, so a large
            decoded image is never held or converted at full size.
        max_aspect: Refuse images whose long side is more than this times the short side (read from
            the header, before decoding).
        budget: Pixels the caller's request may still decode; the image's are spent before decoding.

    Raises:
        UnsupportedFormatError: the content is not one of ``ALLOWED_FORMATS``.
        ImageTooLargeError: more than ``max_pixels`` pixels.
        InvalidImageError: corrupt or truncated data, or too elongated.
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
    if max(width, height) > max_aspect * max(min(width, height), 1):
        raise InvalidImageError(
            f"image is {width}x{height}: its long side is more than {max_aspect:g} times its short side"
        )
    if draft_size and image.format in ("JPEG", "MPO"):
        image.draft("RGB", (draft_size, draft_size))
    if budget is not None:
        budget.spend(image.size[0] * image.size[1])  # after draft: what will really be decoded
    try:
        image.load()
        if draft_size and min(image.size) >= 2 * draft_size:
            # Shrink first (the full-size image is never copied), then apply the EXIF rotation it had.
            method = _TRANSPOSE.get(image.getexif().get(_ORIENTATION, 1))
            small = shrink(image, draft_size)
            return to_rgb(small.transpose(method) if method is not None else small)
        return to_rgb(ImageOps.exif_transpose(image))
    except MemoryError:
        raise
    except Exception as exc:  # e.g. TypeError from a TIFF with rational-typed size tags
        raise InvalidImageError(f"corrupt or truncated image: {type(exc).__name__}: {exc}") from None


def shrink(image: Image.Image, min_side: int) -> Image.Image:
    """Reduce by the largest whole factor that keeps the shorter side at least ``min_side`` (box filter,
    as a JPEG's draft decode does); small images are returned as they are."""
    factor = min(image.size) // max(min_side, 1)
    if factor < 2:
        return image
    try:
        return image.reduce(factor)
    except ValueError:  # a mode Pillow cannot reduce (e.g. some 16-bit ones): convert first, then reduce
        return to_rgb(image).reduce(factor)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparent areas become white, 16-bit is rescaled."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return Image.fromarray(_to_8bit(np.asarray(image), image.mode), mode="L").convert("RGB")
    if image.mode == "P" or image.mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _to_8bit(array: np.ndarray, mode: str) -> np.ndarray:
    """16-bit or 32-bit gray to 8-bit, a band of rows at a time, so the float copy stays small."""
    peak = 65535.0 if mode.startswith("I;16") or float(array.max(initial=0)) > 255 else 255.0
    out = np.empty(array.shape, dtype=np.uint8)
    for start in range(0, array.shape[0], _ROWS_PER_STEP):
        rows = array[start : start + _ROWS_PER_STEP].astype(np.float64)
        out[start : start + _ROWS_PER_STEP] = np.clip(rows / peak * 255.0, 0, 255).astype(np.uint8)
    return out
