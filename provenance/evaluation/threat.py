"""Families for the profile-picture threat model (issue: avatars, tight crops, stickers).

The older families (:mod:`.profile`) use small circles with wide margins and moderate
crops; a scam account's profile picture is usually tighter. These families draw every
parameter from the threat model's ranges, not from anyone's measured numbers:

* ``avatar_round``: a square around the face keeping 40-80 % of the short side, resized
  to 150-400 px, shown in a circle that fills 85-100 % of the image side (one in five
  smaller, with a margin), on a solid colour, a gradient or a blurred copy of itself;
* ``avatar_small``: the same avatar as platforms serve it, 48-128 px;
* ``crop_tight``: 20-40 % of the area centred on the upper half, resized to 300-400 px;
* ``combo_caption``: a crop keeping 70-90 % of each side, a colour filter, one or two
  caption bands, JPEG quality 40-60;
* ``stickers_heavy``: 2-6 emoji, 10-30 % of the short side each, at least one on the face;
* ``profile_screenshot``: a phone screenshot of an account page (light or dark) where the
  photo is only the round avatar, 15-30 % of the screen width, over a banner photo,
  beside the name, bio and post tiles.

Where the face is: the evaluation knows no faces, so it assumes the portrait convention
of the references (face centred horizontally, in the upper half or centre).
"""

from __future__ import annotations


import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .profile import _theme, circle_mask, fake_handle, fake_name, font, paste_emoji, pick_emoji, vertical_gradient
from .families import Params, choice, face_box, jpeg_roundtrip, random_colour, register, uniform

_CAPTIONS = ("Dispo ce soir", "Snap : {h}", "{p} € la soirée", "DM for prices", "Only {p}$ tonight",
             "Telegram @{h}", "new here, DM me", "Cash app only", "Available now", "Add me : {h}")
_BIO_LINES = ("Model · Travel · Fashion", "DM for collabs", "Link below", "Living my best life",
              "Business inquiries via DM", "Paris | Dubai | Miami")


def _face_square(image: Image.Image, rng: np.random.Generator, low: float, high: float) -> tuple[Image.Image, Params]:
    """A square around the face keeping ``low``-``high`` of the short side."""
    fraction = uniform(rng, low, high)
    centre = (uniform(rng, 0.44, 0.56), uniform(rng, 0.40, 0.52))
    width, height = image.size
    side = fraction * min(width, height)
    box = face_box(image.size, side * side / (width * height), height / width, centre)
    return image.crop(box), {"side_fraction": fraction, "centre": list(centre), "box": list(box)}


def _backdrop(square: Image.Image, size: int, kind: str, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    if kind == "blurred":
        radius = max(2, size // 12)
        return square.resize((size, size), Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(radius)), {}
    top, bottom = random_colour(rng), random_colour(rng)
    if kind == "solid":
        return Image.new("RGB", (size, size), tuple(top)), {"colour": top}
    return vertical_gradient((size, size), top, bottom), {"colours": [top, bottom]}


def _round_avatar(image: Image.Image, rng: np.random.Generator, low_px: int, high_px: int) -> tuple[Image.Image, Params]:
    square, crop = _face_square(image, rng, 0.4, 0.8)
    size = int(rng.integers(low_px, high_px + 1))
    fill = uniform(rng, 0.85, 1.0) if rng.random() < 0.8 else uniform(rng, 0.6, 0.85)
    background = choice(rng, ("solid", "gradient", "blurred"))
    canvas, colours = _backdrop(square, size, background, rng)
    diameter = max(4, round(size * fill))
    offset = (size - diameter) // 2
    disc = square.resize((diameter, diameter), Image.Resampling.LANCZOS)
    canvas.paste(disc, (offset, offset), circle_mask(diameter))
    return canvas, {"size": size, "fill": fill, "background": background, **colours, **crop}


@register("avatar_round")
def avatar_round(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """A tight square face crop shown as a round avatar of 150-400 px."""
    return _round_avatar(image, rng, 150, 400)


@register("avatar_small")
def avatar_small(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """The round avatar at the size platforms serve it: 48-128 px, JPEG-compressed."""
    avatar, params = _round_avatar(image, rng, 48, 128)
    quality = int(rng.integers(70, 91))
    return jpeg_roundtrip(avatar, quality), {**params, "quality": quality}


@register("crop_tight")
def crop_tight(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """20-40 % of the area centred on the upper half, resized to 300-400 px wide."""
    area = uniform(rng, 0.2, 0.4)
    aspect = round(float(np.exp(uniform(rng, -0.2, 0.2))), 3)
    centre = (uniform(rng, 0.4, 0.6), uniform(rng, 0.3, 0.5))
    box = face_box(image.size, area, aspect, centre)
    crop = image.crop(box)
    width = int(rng.integers(300, 401))
    height = max(1, round(width * crop.size[1] / crop.size[0]))
    return crop.resize((width, height), Image.Resampling.BICUBIC), {
        "area": area, "aspect": aspect, "centre": list(centre), "box": list(box), "width": width}


def _caption_text(rng: np.random.Generator) -> str:
    price = f"{int(rng.integers(50, 500))}"
    return choice(rng, _CAPTIONS).format(h=fake_handle(rng), p=price)


def _caption_band(image: Image.Image, rng: np.random.Generator, position: str) -> Params:
    """A full-width band with a line of text, at the top, the middle or the bottom."""
    width, height = image.size
    band = max(10, round(height * uniform(rng, 0.08, 0.16)))
    top = {"top": 0, "bottom": height - band}.get(position, round(height * uniform(rng, 0.55, 0.8)))
    colour = random_colour(rng)
    opacity = uniform(rng, 0.55, 1.0)
    overlay = Image.new("RGB", (width, band), tuple(colour))
    region = image.crop((0, top, width, top + band))
    image.paste(Image.blend(region, overlay, opacity), (0, top))
    text = _caption_text(rng)
    size = max(8, round(band * 0.6))
    ink = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
    ImageDraw.Draw(image).text((round(width * 0.05), top + (band - size) // 2), text,
                               font=font(choice(rng, ("Montserrat-Bold.ttf", "NotoSans-Regular.ttf")), size), fill=ink)
    return {"text": text, "top": top, "height": band, "colour": colour, "opacity": opacity}


@register("combo_caption")
def combo_caption(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """Crop keeping 70-90 % of each side, colour filter, one or two caption bands, JPEG 40-60."""
    from .transforms import color_filter

    width, height = image.size
    keep_w, keep_h = uniform(rng, 0.7, 0.9), uniform(rng, 0.7, 0.9)
    left = round((width - keep_w * width) * uniform(rng, 0.0, 1.0))
    top = round((height - keep_h * height) * uniform(rng, 0.0, 1.0))
    box = (left, top, left + round(keep_w * width), top + round(keep_h * height))
    out, filtered = color_filter(image.crop(box), rng)
    out = out.convert("RGB")
    positions = ["top", "bottom", "middle"]
    bands = [_caption_band(out, rng, positions.pop(int(rng.integers(len(positions)))))
             for _ in range(int(rng.integers(1, 3)))]
    quality = int(rng.integers(40, 61))
    return jpeg_roundtrip(out, quality), {"box": list(box), "filter": filtered, "bands": bands, "quality": quality}


@register("stickers_heavy")
def stickers_heavy(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """2-6 emoji stickers, 10-30 % of the short side each; the first sits on the face."""
    out = image.copy()
    width, height = out.size
    stickers = []
    for number in range(int(rng.integers(2, 7))):
        size = max(8, round(min(width, height) * uniform(rng, 0.1, 0.3)))
        if number == 0:  # over the face: around the centre of the upper half
            cx, cy = uniform(rng, 0.35, 0.65) * width, uniform(rng, 0.3, 0.55) * height
            xy = (min(max(0, round(cx - size / 2)), width - size), min(max(0, round(cy - size / 2)), height - size))
        else:
            xy = (round((width - size) * uniform(rng, 0.0, 1.0)), round((height - size) * uniform(rng, 0.0, 1.0)))
        emoji = pick_emoji(rng)
        paste_emoji(out, emoji, size, xy)
        stickers.append({"emoji": emoji, "size": size, "xy": list(xy)})
    return out, {"stickers": stickers}


def _banner(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A photo-like banner: smooth colour fields with texture, as a cover photo has."""
    coarse = rng.integers(0, 256, size=(4, 8, 3)).astype(np.uint8)
    base = Image.fromarray(coarse, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    grain = rng.normal(0, 18, size=(height, width, 1))
    return Image.fromarray(np.clip(np.asarray(base, dtype=np.float32) + grain, 0, 255).astype(np.uint8), "RGB")


@register("profile_screenshot")
def profile_screenshot(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """A phone screenshot of an account page: status bar, banner, the stolen photo only as the
    round avatar over the banner's edge, name, handle, bio, buttons and post tiles."""
    theme = _theme(rng)
    width = int(rng.integers(360, 721))
    height = round(width * uniform(rng, 1.9, 2.2))
    unit = width / 24
    canvas = Image.new("RGB", (width, height), tuple(theme["page"]))
    draw = ImageDraw.Draw(canvas)
    status = round(unit * 1.6)
    draw.text((round(unit), round(unit * 0.3)), f"{int(rng.integers(0, 24)):d}:{int(rng.integers(0, 60)):02d}",
              font=font("NotoSans-Regular.ttf", round(unit * 0.9)), fill=tuple(theme["text"]))
    banner_h = round(width * uniform(rng, 0.28, 0.4))
    canvas.paste(_banner(width, banner_h, rng), (0, status))
    fraction = uniform(rng, 0.15, 0.3)
    diameter = max(8, round(width * fraction))
    square, crop = _face_square(image, rng, 0.4, 0.8)
    disc = square.resize((diameter, diameter), Image.Resampling.LANCZOS)
    ring = max(2, diameter // 20)
    left, top = round(unit), status + banner_h - diameter // 2
    draw.ellipse((left - ring, top - ring, left + diameter + ring, top + diameter + ring), fill=tuple(theme["page"]))
    canvas.paste(disc, (left, top), circle_mask(diameter))
    y = top + diameter + round(unit * 0.6)
    name, handle = fake_name(rng), fake_handle(rng)
    draw.text((left, y), name, font=font("IBMPlexSans-SemiBold.ttf", round(unit * 1.2)), fill=tuple(theme["text"]))
    y += round(unit * 1.6)
    draw.text((left, y), f"@{handle}", font=font("NotoSans-Regular.ttf", round(unit * 0.9)), fill=tuple(theme["muted"]))
    y += round(unit * 1.4)
    for line in range(int(rng.integers(1, 3))):
        draw.text((left, y), choice(rng, _BIO_LINES), font=font("NotoSans-Regular.ttf", round(unit * 0.9)),
                  fill=tuple(theme["text"]))
        y += round(unit * 1.2)
    button_w = round(unit * 6)
    draw.rounded_rectangle((width - button_w - round(unit), status + banner_h + round(unit * 0.5), width - round(unit),
                            status + banner_h + round(unit * 2)), radius=round(unit * 0.7), fill=tuple(theme["accent"]))
    cell = width // 3
    y += round(unit)
    while y + cell <= height:
        for col in range(3):
            colour = tuple(random_colour(rng))
            draw.rectangle((col * cell + 1, y, (col + 1) * cell - 2, y + cell - 3), fill=colour)
        y += cell
    params = {"width": width, "height": height, "dark": theme["dark"], "avatar_fraction": fraction,
              "diameter": diameter, "avatar_xy": [left, top], "banner_height": banner_h, "name": name, **crop}
    return canvas, params
