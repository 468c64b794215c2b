from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import image_bytes
from vision_trainer.ml.errors import ImageTooLargeError, InvalidImageError, UnsupportedFormatError
from vision_trainer.ml.images import open_image


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"])
def test_allowed_formats_decode_to_rgb(fmt: str) -> None:
    image = open_image(image_bytes((200, 30, 30), fmt=fmt))
    assert image.mode == "RGB" and image.size == (64, 64)
    assert image.getpixel((32, 32))[0] > 150


def test_rgba_transparency_becomes_white_and_grayscale_becomes_rgb() -> None:
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert open_image(encode(rgba, "PNG")).getpixel((0, 0)) == (255, 255, 255)
    gray = Image.new("L", (8, 8), 77)
    assert open_image(encode(gray, "PNG")).getpixel((0, 0)) == (77, 77, 77)


def test_16_bit_grayscale_is_rescaled_not_clipped() -> None:
    sixteen = Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16))
    value = open_image(encode(sixteen, "PNG")).getpixel((0, 0))
    assert 120 <= value[0] <= 135


def test_exif_orientation_is_applied() -> None:
    wide = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = wide.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    assert open_image(encode(wide, "JPEG", exif=exif.tobytes())).size == (20, 40)


def test_text_file_is_an_unsupported_format() -> None:
    with pytest.raises(UnsupportedFormatError):
        open_image(b"just some text, named photo.jpg")


def test_truncated_jpeg_is_invalid() -> None:
    data = image_bytes((10, 200, 10), fmt="JPEG", size=256, noise=40)
    with pytest.raises(InvalidImageError):
        open_image(data[: len(data) // 2])


def test_pixel_cap_refuses_before_decoding() -> None:
    with pytest.raises(ImageTooLargeError):
        open_image(image_bytes((0, 0, 0), size=300), max_pixels=200 * 200)


def test_jpeg_draft_decode_keeps_requested_size() -> None:
    big = encode(Image.new("RGB", (2000, 1000), (10, 10, 10)), "JPEG")
    image = open_image(big, draft_size=256)
    assert min(image.size) >= 256 and image.size[0] < 2000


def tiff_with_rational_size() -> bytes:
    """A TIFF whose ImageWidth tag is a RATIONAL rather than an integer."""
    import struct

    entries = [(256, 5, 1, 8 + 2 + 12 * 4 + 4), (257, 3, 1, 16), (258, 3, 1, 8), (259, 3, 1, 1)]
    ifd = (
        struct.pack("<H", len(entries))
        + b"".join(
            struct.pack("<HHI", tag, kind, count)
            + (struct.pack("<I", value) if kind == 5 else struct.pack("<HH", value, 0))
            for tag, kind, count, value in entries
        )
        + struct.pack("<I", 0)
    )
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<II", 24, 1) + b"\x00" * 64


def test_crafted_tiff_header_is_refused_not_crashed() -> None:
    with pytest.raises(InvalidImageError):
        open_image(tiff_with_rational_size())


def test_any_decoder_exception_becomes_invalid_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/fuzz_images.py found TIFFs on which Pillow raises TypeError; no decoder error may escape."""
    from PIL import ImageOps

    def broken(image):
        raise TypeError("'IFDRational' object cannot be interpreted as an integer")

    monkeypatch.setattr(ImageOps, "exif_transpose", broken)
    with pytest.raises(InvalidImageError, match="TypeError"):
        open_image(image_bytes((1, 2, 3)))
