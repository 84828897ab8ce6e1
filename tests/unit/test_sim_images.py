"""The simulator's deterministic stand-in for an edit."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageStat

from receiver.simulator.images import edit_image, output_size, prompt_colour


def image_bytes(size: tuple[int, int] = (320, 240), colour: tuple[int, int, int] = (128, 128, 128)) -> bytes:
    buffer = io.BytesIO()
    picture = Image.new("RGB", size, colour)
    picture.paste((40, 40, 40), (0, 0, size[0] // 2, size[1] // 2))  # some shade to keep after a tint
    picture.save(buffer, "PNG")
    return buffer.getvalue()


def decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


@pytest.mark.parametrize(
    ("width", "height", "aspect_ratio", "expected"),
    [
        (1000, 1000, None, (1024, 1024)),
        (1920, 1080, None, (1376, 768)),
        (1080, 1920, None, (768, 1376)),
        (500, 500, "16:9", (1376, 768)),
        (500, 500, "3:7", (672, 1568)),
        (5000, 500, None, (1568, 672)),  # 10:1 input, clamped to 7:3
        (500, 5000, None, (672, 1568)),
    ],
)
def test_output_is_about_one_megapixel_in_multiples_of_32(
    width: int, height: int, aspect_ratio: str | None, expected: tuple[int, int]
) -> None:
    out_width, out_height = output_size(width, height, aspect_ratio)

    assert (out_width, out_height) == expected
    assert out_width % 32 == 0
    assert out_height % 32 == 0
    assert 0.95e6 < out_width * out_height < 1.15e6


def test_the_first_colour_named_in_the_prompt_wins() -> None:
    assert prompt_colour("Change the car color to Red, keep the blue sky") == (220, 30, 40)
    assert prompt_colour("It's now snowing, everything is covered in snow") == (235, 242, 255)
    assert prompt_colour("Remove the object from her face") is None
    assert prompt_colour("A reddish glow") is None


def test_the_same_input_prompt_and_seed_give_the_same_bytes() -> None:
    source = image_bytes()

    first = edit_image(source, "Change the car color to red", 42, (1024, 768), "jpeg")
    second = edit_image(source, "Change the car color to red", 42, (1024, 768), "jpeg")

    assert first == second
    assert first != edit_image(source, "Change the car color to red", 43, (1024, 768), "jpeg")
    assert first != edit_image(source, "Change the car color to blue", 42, (1024, 768), "jpeg")


@pytest.mark.parametrize(("output_format", "pil_format"), [("jpeg", "JPEG"), ("png", "PNG")])
def test_output_has_the_requested_size_and_format(output_format: str, pil_format: str) -> None:
    picture = decode(edit_image(image_bytes(), "Make it vintage", 1, (672, 1568), output_format))

    assert picture.format == pil_format
    assert picture.size == (672, 1568)
    assert picture.mode == "RGB"


def test_a_named_colour_tints_the_picture_toward_it() -> None:
    source = image_bytes(colour=(128, 128, 128))

    red_r, red_g, red_b = ImageStat.Stat(decode(edit_image(source, "make it red", 7, (512, 512), "png"))).mean
    blue_r, _, blue_b = ImageStat.Stat(decode(edit_image(source, "make it blue", 7, (512, 512), "png"))).mean

    assert red_r > red_g + 30
    assert red_r > red_b + 30
    assert blue_b > blue_r + 30


def test_a_prompt_without_colour_keeps_the_picture_close_to_its_input() -> None:
    source = image_bytes(colour=(128, 128, 128))

    edited = decode(edit_image(source, "remove the object", 7, (320, 240), "png"))
    original = decode(source)

    difference = [
        abs(a - b) for a, b in zip(ImageStat.Stat(edited).mean, ImageStat.Stat(original).mean, strict=True)
    ]
    assert max(difference) < 25
    assert edited.tobytes() != original.convert("RGB").tobytes()  # the seeded discs still show


def test_a_large_jpeg_input_is_scaled_down_to_the_output_size() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (3000, 2000), (90, 140, 200)).save(buffer, "JPEG")
    size = output_size(3000, 2000)

    first = edit_image(buffer.getvalue(), "make it green", 1, size, "jpeg")

    assert size == (1248, 832)
    assert decode(first).size == size
    assert first == edit_image(buffer.getvalue(), "make it green", 1, size, "jpeg")
