"""Profile-photo-theft transform families drawn with PIL.

Circular avatars on a background, handle/price text, emoji stickers and fake
social-media profile pages with the stolen photo as a post or as the big avatar.
Fonts and emoji come from AugLy's bundled assets. Registered into
:data:`provenance.evaluation.transforms.FAMILIES` on import.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .families import Params, choice, face_box, random_colour, register, uniform

FONT_NAMES = ("Montserrat-Bold.ttf", "NotoSans-Regular.ttf", "Impact.ttf", "IBMPlexSans-SemiBold.ttf")
EMOJI_FOLDERS = ("smileys", "people", "symbols", "activity", "objects")
_SYLLABLES = ("ka", "lo", "mi", "ra", "ven", "tor", "sa", "lin", "de", "nu", "el", "jo", "mar", "ti", "ko")
_PRICE_TEXTS = ("${p}", "only ${p}!", "€{p}", "£{p} DM me", "SALE ${p}", "{p} USD")
_HANDLE_TEXTS = ("@{h}", "@{h} on IG", "follow @{h}", "DM @{h}", "#{h}")


@lru_cache(maxsize=64)
def font(name: str, size: int) -> ImageFont.FreeTypeFont:
    """A TrueType font from AugLy's assets, cached by (name, size)."""
    from augly.utils import FONTS_DIR

    return ImageFont.truetype(os.path.join(FONTS_DIR, name), max(6, int(size)))


@lru_cache(maxsize=8)
def emoji_files(folder: str) -> tuple[str, ...]:
    """The sorted PNG files of one AugLy twemoji folder."""
    from augly.utils import EMOJI_DIR

    path = os.path.join(EMOJI_DIR, folder)
    return tuple(sorted(f for f in os.listdir(path) if f.endswith(".png")))


def pick_emoji(rng: np.random.Generator) -> str:
    """A random AugLy twemoji as ``folder/file.png``."""
    folder = choice(rng, EMOJI_FOLDERS)
    return f"{folder}/{choice(rng, emoji_files(folder))}"


def paste_emoji(out: Image.Image, emoji: str, size: int, xy: tuple[int, int]) -> None:
    """Paste twemoji ``emoji`` (``folder/file.png``), ``size`` pixels square, at ``xy`` in place."""
    from augly.utils import EMOJI_DIR

    with Image.open(os.path.join(EMOJI_DIR, emoji)) as image:
        sticker = image.convert("RGBA").resize((size, size), Image.Resampling.LANCZOS)
    out.paste(sticker, xy, sticker)


def fake_name(rng: np.random.Generator) -> str:
    """A pronounceable made-up display name like 'Ravenlo Mitor'."""
    parts = []
    for _ in range(2):
        word = "".join(choice(rng, _SYLLABLES) for _ in range(int(rng.integers(2, 4))))
        parts.append(word.capitalize())
    return " ".join(parts)


def fake_handle(rng: np.random.Generator) -> str:
    """A made-up account handle like 'ravenlo_93'."""
    word = "".join(choice(rng, _SYLLABLES) for _ in range(int(rng.integers(2, 4))))
    return f"{word}{choice(rng, ('_', '.', ''))}{int(rng.integers(1, 999))}"


def circle_mask(diameter: int) -> Image.Image:
    """An antialiased L-mode disc of ``diameter`` pixels."""
    big = Image.new("L", (diameter * 4, diameter * 4), 0)
    ImageDraw.Draw(big).ellipse((0, 0, diameter * 4 - 1, diameter * 4 - 1), fill=255)
    return big.resize((diameter, diameter), Image.Resampling.LANCZOS)


def circular_face(image: Image.Image, rng: np.random.Generator, diameter: int) -> tuple[Image.Image, Params]:
    """Square crop around the face (45-100% of the short side) resized to ``diameter``."""
    fraction = uniform(rng, 0.45, 1.0)
    centre = (uniform(rng, 0.45, 0.55), uniform(rng, 0.42, 0.55))
    width, height = image.size
    side = fraction * min(width, height)
    box = face_box(image.size, side * side / (width * height), height / width, centre)
    square = image.crop(box).resize((diameter, diameter), Image.Resampling.LANCZOS)
    return square, {"crop_fraction": fraction, "centre": list(centre), "box": list(box)}


def paste_circle(canvas: Image.Image, square: Image.Image, xy: tuple[int, int], ring: list[int] | None) -> None:
    """Paste ``square`` as a disc at ``xy``, with an optional coloured ring around it."""
    diameter = square.size[0]
    if ring is not None:
        width = max(2, diameter // 25)
        ImageDraw.Draw(canvas).ellipse(
            (xy[0] - 2 * width, xy[1] - 2 * width, xy[0] + diameter + 2 * width, xy[1] + diameter + 2 * width),
            fill=tuple(ring),
        )
    canvas.paste(square, xy, circle_mask(diameter))


def vertical_gradient(size: tuple[int, int], top: list[int], bottom: list[int]) -> Image.Image:
    """An RGB image fading from ``top`` to ``bottom``."""
    ramp = np.linspace(0.0, 1.0, size[1])[:, None, None]
    pixels = (1 - ramp) * np.array(top) + ramp * np.array(bottom)
    return Image.fromarray(np.repeat(pixels, size[0], axis=1).astype(np.uint8), "RGB")


@register("avatar_circle")
def avatar_circle(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """The face cut out as a round avatar on a plain or gradient background."""
    diameter = int(rng.integers(110, 301))
    margin = uniform(rng, 0.08, 0.6)
    background = choice(rng, ("solid", "gradient"))
    top, bottom = random_colour(rng), random_colour(rng)
    ring = random_colour(rng) if rng.random() < 0.5 else None
    square, crop = circular_face(image, rng, diameter)
    side = round(diameter * (1 + 2 * margin))
    canvas = (Image.new("RGB", (side, side), tuple(top)) if background == "solid"
              else vertical_gradient((side, side), top, bottom))
    offset = (side - diameter) // 2
    paste_circle(canvas, square, (offset, offset), ring)
    params = {"diameter": diameter, "margin": margin, "background": background, "colours": [top, bottom],
              "ring": ring, **crop}
    return canvas, params


@register("text_overlay")
def text_overlay(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """One or two lines of handle/price text in a random font, colour and place."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    width, height = out.size
    lines = []
    for _ in range(int(rng.integers(1, 3))):
        if rng.random() < 0.5:
            text = choice(rng, _HANDLE_TEXTS).format(h=fake_handle(rng))
        else:
            text = choice(rng, _PRICE_TEXTS).format(p=f"{int(rng.integers(5, 500))}.{int(rng.integers(0, 100)):02d}")
        name = choice(rng, FONT_NAMES)
        size = round(height * uniform(rng, 0.07, 0.16))
        colour = random_colour(rng)
        x = round(width * uniform(rng, 0.0, 0.55))
        y = round(height * uniform(rng, 0.0, 0.88))
        stroke = int(rng.integers(0, 3))
        draw.text((x, y), text, font=font(name, size), fill=tuple(colour), stroke_width=stroke,
                  stroke_fill=(0, 0, 0) if sum(colour) > 380 else (255, 255, 255))
        lines.append({"text": text, "font": name, "size": size, "colour": colour, "xy": [x, y], "stroke": stroke})
    return out, {"lines": lines}


@register("emoji_stickers")
def emoji_stickers(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """One to four twemoji stickers, 10-30% of the short side each."""
    out = image.copy()
    width, height = out.size
    stickers = []
    for _ in range(int(rng.integers(1, 5))):
        emoji = pick_emoji(rng)
        size = max(8, round(min(width, height) * uniform(rng, 0.1, 0.3)))
        x = round((width - size) * uniform(rng, 0.0, 1.0))
        y = round((height - size) * uniform(rng, 0.0, 1.0))
        paste_emoji(out, emoji, size, (x, y))
        stickers.append({"emoji": emoji, "size": size, "xy": [x, y]})
    return out, {"stickers": stickers}


def _theme(rng: np.random.Generator) -> dict:
    dark = bool(rng.random() < 0.35)
    return {
        "dark": dark,
        "page": [18, 18, 18] if dark else [255, 255, 255],
        "text": [240, 240, 240] if dark else [20, 20, 20],
        "muted": [140, 140, 140],
        "accent": choice(rng, ([24, 119, 242], [225, 48, 108], [29, 161, 242], [0, 149, 246], [37, 211, 102])),
    }


def _header(draw: ImageDraw.ImageDraw, width: int, theme: dict, rng: np.random.Generator) -> int:
    height = max(28, width // 10)
    draw.rectangle((0, 0, width, height), fill=tuple(theme["accent"]))
    app = choice(rng, ("Photogram", "FaceLink", "Snapbook", "Pixly", "Chirper"))
    draw.text((height // 3, height // 5), app, font=font("Montserrat-Bold.ttf", height // 2), fill=(255, 255, 255))
    return height


def _button(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], label: str, colour: list[int]) -> None:
    draw.rounded_rectangle(box, radius=(box[3] - box[1]) // 3, fill=tuple(colour))
    size = max(8, (box[3] - box[1]) // 2)
    draw.text((box[0] + size // 2, box[1] + size // 3), label, font=font("NotoSans-Regular.ttf", size),
              fill=(255, 255, 255))


@register("profile_post")
def profile_post(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """A fake social-media page: header bar, author line, Follow button, the photo as a big
    post, then a like bar and a caption."""
    theme = _theme(rng)
    width = int(rng.integers(360, 721))
    photo_w = round(width * uniform(rng, 0.8, 1.0))
    photo = image.resize((photo_w, max(1, round(photo_w * image.size[1] / image.size[0]))), Image.Resampling.LANCZOS)
    name = fake_name(rng)
    unit = width // 12
    canvas = Image.new("RGB", (width, photo.size[1] + 6 * unit), tuple(theme["page"]))
    draw = ImageDraw.Draw(canvas)
    top = _header(draw, width, theme, rng) + unit // 3
    avatar = max(8, unit)
    draw.ellipse((unit // 3, top, unit // 3 + avatar, top + avatar), fill=tuple(random_colour(rng)))
    draw.text((avatar + unit // 2, top + avatar // 6), name, font=font("IBMPlexSans-SemiBold.ttf", unit // 2),
              fill=tuple(theme["text"]))
    _button(draw, (width - 3 * unit, top + unit // 8, width - unit // 3, top + avatar - unit // 8), "Follow",
            theme["accent"])
    photo_top = top + avatar + unit // 3
    canvas.paste(photo, ((width - photo_w) // 2, photo_top))
    below = photo_top + photo.size[1] + unit // 4
    for i in range(3):
        draw.ellipse((unit // 3 + i * unit, below, unit // 3 + i * unit + unit * 2 // 3, below + unit * 2 // 3),
                     outline=tuple(theme["text"]), width=2)
    likes = int(rng.integers(3, 99999))
    draw.text((unit // 3, below + unit), f"{likes:,} likes  ·  {fake_handle(rng)} new pic",
              font=font("NotoSans-Regular.ttf", max(8, unit * 2 // 5)), fill=tuple(theme["muted"]))
    params = {"width": width, "photo_width": photo_w, "dark": theme["dark"], "accent": theme["accent"],
              "name": name, "likes": likes, "photo_xy": [(width - photo_w) // 2, photo_top]}
    return canvas, params


@register("profile_avatar")
def profile_avatar(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """A fake profile header where the photo is the big round avatar, with name, counts,
    Follow/Message buttons and a grid of placeholder posts."""
    theme = _theme(rng)
    width = int(rng.integers(360, 721))
    unit = width // 12
    diameter = round(width * uniform(rng, 0.28, 0.45))
    square, crop = circular_face(image, rng, diameter)
    canvas = Image.new("RGB", (width, round(width * 1.3)), tuple(theme["page"]))
    draw = ImageDraw.Draw(canvas)
    top = _header(draw, width, theme, rng) + unit // 2
    ring = theme["accent"] if rng.random() < 0.5 else None
    paste_circle(canvas, square, (unit // 2, top), ring)
    name = fake_name(rng)
    text_x = unit // 2 + diameter + unit // 2
    draw.text((text_x, top), name, font=font("IBMPlexSans-SemiBold.ttf", unit * 3 // 5), fill=tuple(theme["text"]))
    counts = [int(v) for v in rng.integers(0, 5000, size=3)]
    draw.text((text_x, top + unit), f"{counts[0]} posts  {counts[1]} followers",
              font=font("NotoSans-Regular.ttf", max(8, unit * 2 // 5)), fill=tuple(theme["muted"]))
    buttons_top = top + diameter + unit // 2
    _button(draw, (unit // 2, buttons_top, width // 2 - unit // 4, buttons_top + unit), "Follow", theme["accent"])
    _button(draw, (width // 2 + unit // 4, buttons_top, width - unit // 2, buttons_top + unit), "Message",
            theme["muted"])
    cell = width // 3
    for row in range(2):
        for col in range(3):
            y = buttons_top + 3 * unit // 2 + row * cell
            draw.rectangle((col * cell + 1, y, (col + 1) * cell - 2, y + cell - 3), fill=tuple(random_colour(rng)))
    params = {"width": width, "diameter": diameter, "dark": theme["dark"], "accent": theme["accent"], "ring": ring,
              "name": name, "counts": counts, **crop}
    return canvas, params
