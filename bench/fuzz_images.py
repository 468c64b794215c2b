"""Fuzz the image validation function (ml.images.open_image) with atheris.

    .venv/bin/python bench/fuzz_images.py --runs 20000

Every input must either decode to an RGB image or raise one of our InvalidImageError types; any
other exception is a crash. Seeds: one small valid file per allowed format plus a few refused ones.
Prints JSON and a markdown table.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports():
    from vision_trainer.ml.errors import InvalidImageError
    from vision_trainer.ml.images import open_image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report  # noqa: E402

MAX_PIXELS = 4_000_000
stats = {"inputs": 0, "decoded": 0, "refused": 0, "crashes": 0}
LIMIT: dict[str, Any] = {"runs": 0, "start": 0.0, "crash_dir": None}
crashes: dict[str, dict[str, object]] = {}


def seeds(folder: Path) -> None:
    from PIL import Image

    image = Image.new("RGB", (24, 16), (200, 40, 40))
    for fmt in ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"):
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        (folder / f"seed.{fmt.lower()}").write_bytes(buffer.getvalue())
    (folder / "seed.svg").write_bytes(b'<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>')
    (folder / "seed.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")


def one_input(data: bytes) -> None:
    if stats["inputs"] >= LIMIT["runs"]:
        finish()
    stats["inputs"] += 1
    try:
        image = open_image(data, max_pixels=MAX_PIXELS)
        if image.mode != "RGB":
            raise AssertionError(f"decoded to mode {image.mode}, not RGB")
        stats["decoded"] += 1
    except InvalidImageError:
        stats["refused"] += 1
    except Exception as exc:  # anything else is a bug in the validation function
        stats["crashes"] += 1
        key = f"{type(exc).__name__}: {exc}"[:200]
        entry = crashes.setdefault(key, {"count": 0, "first_input_prefix": data[:32].hex()})
        entry["count"] += 1
        if LIMIT["crash_dir"] and entry["count"] == 1:
            (Path(LIMIT["crash_dir"]) / f"crash-{len(crashes)}.bin").write_bytes(data)


def finish() -> None:
    """Report and leave: libFuzzer ends the process itself, so we stop it after the asked-for runs."""
    report(
        "fuzz_images: ml.images.open_image under atheris",
        [{**stats, "seconds": time.perf_counter() - LIMIT["start"]}],
        {"distinct uncaught exceptions": crashes or "none"},
    )
    sys.stdout.flush()
    os._exit(1 if stats["crashes"] else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20000)
    parser.add_argument("--crash-dir", type=Path, help="write the first input of each distinct crash here")
    args = parser.parse_args()
    LIMIT.update(runs=args.runs, start=time.perf_counter(), crash_dir=args.crash_dir)
    corpus = tempfile.mkdtemp(prefix="vt-fuzz-")
    seeds(Path(corpus))
    atheris.Setup([sys.argv[0], "-max_len=4096", "-print_final_stats=0", corpus], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
