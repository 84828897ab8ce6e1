"""The simulator's stand-in for a Kontext edit: a deterministic Pillow transform of the input.

The same input bytes, prompt, seed, size and format always give the same output bytes (for a given
Pillow version). A colour named in the prompt tints the picture toward it; the seed scatters a few
translucent discs over it, so different seeds give visibly different "edits".
"""

from __future__ import annotations

import io
import math
import random
import re

from PIL import Image, ImageDraw, ImageOps

from receiver.bfl.validation import MAX_ASPECT, MIN_ASPECT, parse_aspect_ratio

TARGET_PIXELS = 1024 * 1024
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 40),
    "orange": (245, 130, 20),
    "yellow": (245, 215, 40),
    "gold": (212, 175, 55),
    "green": (40, 170, 60),
    "teal": (0, 128, 128),
    "cyan": (0, 200, 220),
    "blue": (30, 80, 220),
    "purple": (130, 50, 180),
    "violet": (140, 80, 220),
    "magenta": (220, 40, 170),
    "pink": (245, 120, 180),
    "brown": (130, 80, 40),
    "black": (20, 20, 20),
    "white": (245, 245, 245),
    "snow": (235, 242, 255),
    "grey": (128, 128, 128),
    "gray": (128, 128, 128),
    "silver": (192, 192, 200),
}
_WORD = re.compile(r"[a-z]+")


def output_size(width: int, height: int, aspect_ratio: str | None = None) -> tuple[int, int]:
    """About one megapixel, sides multiples of 32, at `aspect_ratio` or else the input's ratio."""
    parsed = parse_aspect_ratio(aspect_ratio) if aspect_ratio else None
    ratio = parsed[0] / parsed[1] if parsed else width / height
    ratio = min(max(ratio, MIN_ASPECT), MAX_ASPECT)
    return _side(TARGET_PIXELS * ratio), _side(TARGET_PIXELS / ratio)


def sized_output(source: tuple[int, int], requested: tuple[int, int], max_mp: float) -> tuple[int, int]:
    """FLUX.2's output: the requested width and height, a 0 side following the input's ratio, at most
    `max_mp` megapixels, sides multiples of 16."""
    (width, height), (want_w, want_h) = source, requested
    if want_w and not want_h:
        want_h = round(want_w * height / width)
    elif want_h and not want_w:
        want_w = round(want_h * width / height)
    elif not want_w:
        want_w, want_h = width, height
    scale = min(1.0, math.sqrt(max_mp * 1_000_000 / (want_w * want_h)))
    return _multiple(want_w * scale, 16), _multiple(want_h * scale, 16)


def prompt_colour(prompt: str) -> tuple[int, int, int] | None:
    """The first colour the prompt names, if any."""
    for word in _WORD.findall(prompt.lower()):
        if word in COLOURS:
            return COLOURS[word]
    return None


def edit_image(data: bytes, prompt: str, seed: int, size: tuple[int, int], output_format: str) -> bytes:
    """Crop and scale `data` to `size`, tint it toward the prompt's colour, scatter seeded discs."""
    with Image.open(io.BytesIO(data)) as source:
        source.draft("RGB", size)  # JPEG only: decode at a reduced scale when the input is large
        picture = (ImageOps.exif_transpose(source) or source).convert("RGB")
    picture = ImageOps.fit(picture, size, Image.Resampling.LANCZOS)
    colour = prompt_colour(prompt)
    if colour is not None:
        picture = _tint(picture, colour)
    picture = _scatter(picture, seed)
    buffer = io.BytesIO()
    if output_format == "png":
        picture.save(buffer, "PNG")
    else:
        picture.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _side(area: float) -> int:
    """The side of a square of `area`, rounded to a multiple of 32."""
    return max(32, round(math.sqrt(area) / 32) * 32)


def _multiple(side: float, step: int) -> int:
    """`side` rounded down to a multiple of `step` (never below one step): within a megapixel cap."""
    return max(step, int(side // step) * step)


def _tint(picture: Image.Image, colour: tuple[int, int, int]) -> Image.Image:
    # Keep the light and shade of the original, recoloured: the look of "change the car to red".
    shaded = ImageOps.colorize(ImageOps.grayscale(picture), black=(0, 0, 0), white=colour, mid=colour)
    return Image.blend(picture, shaded, 0.55)


def _scatter(picture: Image.Image, seed: int) -> Image.Image:
    rng = random.Random(seed)
    width, height = picture.size
    overlay = Image.new("RGBA", picture.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for _ in range(12):
        radius = rng.randint(min(width, height) // 40, min(width, height) // 10)
        x, y = rng.randrange(width), rng.randrange(height)
        fill = (rng.randrange(256), rng.randrange(256), rng.randrange(256), rng.randint(40, 90))
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill)
    return Image.alpha_composite(picture.convert("RGBA"), overlay).convert("RGB")
