"""The sample images the result server hands out, generated into the run's temp directory.

Noise does not compress, so the files are as large on the wire as on disk, and each is a real image
with a valid header (the receiver checks type and dimensions while it streams).
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

TINY = "tiny.jpg"
ONE_MIB = "one-mib.jpg"
TWENTY_MIB = "twenty-mib.png"

_MIB = 1024 * 1024
_COMMENT_MAX = 65_000  # a JPEG COM segment holds at most 65533 bytes


@dataclass(frozen=True)
class Sample:
    name: str
    bytes: int
    width: int
    height: int


def write_samples(directory: Path, seed: int = 20261121) -> dict[str, Sample]:
    """Write the three samples into `directory`; return them by file name."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    samples = [
        _write(directory / TINY, _tiny_jpeg()),
        _write(directory / ONE_MIB, _noise_jpeg(rng, _MIB)),
        _write(directory / TWENTY_MIB, _noise_png(rng, 2800, 2500)),
    ]
    return {sample.name: sample for sample in samples}


def _write(path: Path, data: bytes) -> Sample:
    path.write_bytes(data)
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
    return Sample(path.name, len(data), width, height)


def _tiny_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def _noise(rng: random.Random, width: int, height: int) -> Image.Image:
    return Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))


def _noise_jpeg(rng: random.Random, size: int, width: int = 1024) -> bytes:
    """A noise JPEG of exactly `size` bytes: the tallest image under it, padded with a comment."""
    image = _noise(rng, width, 1024)
    low, high, best = 1, 1024, b""
    while low <= high:
        height = (low + high) // 2
        data = _jpeg(image.crop((0, 0, width, height)))
        if len(data) <= size:
            low, best = height + 1, data
        else:
            high = height - 1
    padding = size - len(best)
    if padding > _COMMENT_MAX:
        raise RuntimeError(f"cannot pad a noise JPEG by {padding} bytes")
    if padding < 5:
        return best
    height = Image.open(io.BytesIO(best)).size[1]
    # The comment segment costs 4 bytes of its own (marker and length).
    return _jpeg(image.crop((0, 0, width, height)), comment=b"x" * (padding - 4))


def _jpeg(image: Image.Image, comment: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    if comment:
        image.save(buffer, "JPEG", quality=95, comment=comment)
    else:
        image.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _noise_png(rng: random.Random, width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    _noise(rng, width, height).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()
