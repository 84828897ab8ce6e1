"""Images made on the spot for tests."""

from __future__ import annotations

import base64
import io

from PIL import Image


def encode_image(fmt: str = "PNG", size: tuple[int, int] = (64, 48), mode: str = "RGB") -> bytes:
    """A plain image in `fmt`. Mode "1" (one bit per pixel, blank) makes a huge picture in a few kB."""
    out = io.BytesIO()
    Image.new(mode, size).save(out, format=fmt)
    return out.getvalue()


def base64_image(fmt: str = "PNG", size: tuple[int, int] = (64, 48), mode: str = "RGB") -> str:
    return base64.b64encode(encode_image(fmt, size, mode)).decode()
