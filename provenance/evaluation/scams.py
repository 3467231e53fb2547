"""Families for what scammers do that the older families do not cover (issue #23).

Every parameter is drawn from the threat model's ranges, not from anyone's measured numbers:

* ``avatar_tiny``: the round or square avatar served at 32-64 px, shown in a comment list or
  a notification and upscaled 1.5-3x by the phone that took the screenshot; the query is
  the row the hunter cropped;
* ``screen_photo``: the photo shown on a monitor or phone and photographed: a perspective
  of 5-20 degrees, moiré, glare, a colour cast, camera blur and noise, some background
  around the screen;
* ``beauty_filter``: strong edge-preserving skin smoothing, brightening, a slight face
  reshape (local warps of 2-6 % of the face), a vignette;
* ``story_post``: the photo inside a 9:16 story screenshot (letterboxed or cropped to fill)
  with its UI (progress bars, author, reply field, buttons), a caption and stickers, or in
  a feed post cropped to 4:5.

Like the other families, the face is assumed where the portrait convention puts it.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .families import Params, choice, jpeg_roundtrip, random_colour, register, uniform
from .profile import _theme, circle_mask, fake_handle, fake_name, font, paste_emoji, pick_emoji, vertical_gradient
from .threat import _caption_text, _face_square

_COMMENTS = ("so pretty 😍", "DM me", "where is this?", "Follow back", "check my bio", "nice pic", "❤️❤️",
             "liked your photo", "started following you", "sent you a message", "mentioned you in a story")


def _cv2():
    import cv2

    return cv2


# --- avatar_tiny ---------------------------------------------------------------------


@register("avatar_tiny")
def avatar_tiny(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """A 32-64 px avatar (round or square) upscaled 1.5-3x in a comment or notification row."""
    square, crop = _face_square(image, rng, 0.4, 0.8)
    served = int(rng.integers(32, 65))
    quality = int(rng.integers(60, 91))
    tiny = jpeg_roundtrip(square.resize((served, served), Image.Resampling.LANCZOS), quality)
    scale = uniform(rng, 1.5, 3.0)
    shown = max(8, round(served * scale))
    avatar = tiny.resize((shown, shown), choice(rng, (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)))
    theme, layout = _theme(rng), choice(rng, ("comment", "notification"))
    round_avatar = bool(rng.random() < 0.7)
    pad = max(4, round(shown * uniform(rng, 0.15, 0.4)))
    width = round(shown * uniform(rng, 4.0, 7.0))
    height = shown + 2 * pad
    page = [max(0, min(255, c + (30 if theme["dark"] else -14))) for c in theme["page"]]
    canvas = Image.new("RGB", (width, height), tuple(theme["page"]))
    draw = ImageDraw.Draw(canvas)
    if layout == "notification":
        draw.rounded_rectangle((1, 1, width - 2, height - 2), radius=pad, fill=tuple(page))
    canvas.paste(avatar, (pad, pad), circle_mask(shown) if round_avatar else None)
    size = max(7, round(shown * 0.28))
    text_x = pad * 2 + shown
    draw.text((text_x, pad), fake_handle(rng), font=font("IBMPlexSans-SemiBold.ttf", size), fill=tuple(theme["text"]))
    draw.text((text_x, pad + round(size * 1.5)), choice(rng, _COMMENTS), font=font("NotoSans-Regular.ttf", size),
              fill=tuple(theme["muted"]))
    params = {"served": served, "quality": quality, "scale": scale, "shown": shown, "round": round_avatar,
              "layout": layout, "dark": theme["dark"], "avatar_xy": [pad, pad], **crop}
    if rng.random() < 0.5:  # re-shared as a JPEG rather than kept as the PNG screenshot
        params["reshare_quality"] = int(rng.integers(70, 96))
        canvas = jpeg_roundtrip(canvas, params["reshare_quality"])
    return canvas, params


# --- screen_photo --------------------------------------------------------------------


def _projected_corners(width: int, height: int, yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Where a flat ``width`` x ``height`` screen's corners land when a pinhole camera, at
    twice the screen's width from it, sees it turned by yaw/pitch/roll degrees."""
    half = np.array([[-width, -height], [width, -height], [width, height], [-width, height]], np.float64) / 2
    points = np.column_stack([half, np.zeros(4)])
    a, b, c = (math.radians(v) for v in (yaw, pitch, roll))
    rot_y = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    rot_x = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    rot_z = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    turned = points @ (rot_z @ rot_x @ rot_y).T
    distance = 2.0 * width
    return turned[:, :2] * distance / (distance + turned[:, 2:3])


def _screen(image: Image.Image, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """The photo as a screen shows it: a bezel around it, a colour cast, lifted blacks."""
    width = int(rng.integers(360, 641))
    photo = image.resize((width, max(1, round(width * image.size[1] / image.size[0]))), Image.Resampling.BILINEAR)
    bezel = max(3, round(width * uniform(rng, 0.02, 0.06)))
    shade = int(rng.integers(8, 45))
    framed = Image.new("RGB", (photo.size[0] + 2 * bezel, photo.size[1] + 2 * bezel), (shade, shade, shade))
    framed.paste(photo, (bezel, bezel))
    gains = [uniform(rng, 0.85, 1.15) for _ in range(3)]
    lift = uniform(rng, 0.0, 25.0, 1)
    pixels = np.asarray(framed, np.float32) * np.array(gains, np.float32) * (1 - lift / 255) + lift
    return pixels, {"photo_width": width, "bezel": bezel, "gains": gains, "black_lift": lift}


def _moire(shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """A multiplicative beat pattern of two nearly aligned gratings (screen pixels against
    the camera's sensor)."""
    height, width = shape
    period = uniform(rng, 2.2, 4.0)
    angle = math.radians(uniform(rng, -8, 8, 2))
    beat = uniform(rng, 0.015, 0.06)
    amplitude = uniform(rng, 0.03, 0.12)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    coordinate = xs * math.cos(angle) + ys * math.sin(angle)
    grating = np.cos(2 * math.pi * coordinate / period) * np.cos(2 * math.pi * coordinate * beat / period)
    pattern = 1 - amplitude * 0.5 * (1 + grating)
    return pattern[..., None], {"period": period, "angle": round(math.degrees(angle), 2), "beat": beat,
                                "amplitude": amplitude}


def _glare(shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    height, width = shape
    centre = (uniform(rng, 0.1, 0.9) * width, uniform(rng, 0.1, 0.9) * height)
    radius = uniform(rng, 0.15, 0.4) * min(width, height)
    strength = uniform(rng, 0.15, 0.45)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    blob = np.exp(-(((xs - centre[0]) ** 2) + ((ys - centre[1]) * 1.6) ** 2) / (2 * radius**2))
    return (255 * strength * blob)[..., None], {"glare_centre": [round(v) for v in centre],
                                                "glare_radius": round(radius), "glare": strength}


@register("screen_photo")
def screen_photo(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """The photo on a monitor or phone, photographed at 5-20 degrees with moiré and glare."""
    cv2 = _cv2()
    screen, params = _screen(image, rng)
    height, width = screen.shape[:2]
    yaw = uniform(rng, 5, 20, 1) * choice(rng, (-1, 1))
    pitch = uniform(rng, 0, 12, 1) * choice(rng, (-1, 1))
    roll = uniform(rng, -5, 5, 1)
    corners = _projected_corners(width, height, yaw, pitch, roll)
    margin = uniform(rng, 0.08, 0.3)
    span = corners.max(axis=0) - corners.min(axis=0)
    out_w, out_h = (int(round(v)) for v in span * (1 + 2 * margin))
    target = (corners - corners.min(axis=0) + span * margin).astype(np.float32)
    source = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32)
    matrix = cv2.getPerspectiveTransform(source, target)
    warped = cv2.warpPerspective(screen, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.ones((height, width), np.float32), matrix, (out_w, out_h))[..., None]
    moire, moire_params = _moire((out_h, out_w), rng)
    glare, glare_params = _glare((out_h, out_w), rng)
    backdrop = np.asarray(vertical_gradient((out_w, out_h), random_colour(rng), random_colour(rng)), np.float32)
    scene = mask * (warped * moire + glare) + (1 - mask) * backdrop
    blur = uniform(rng, 0.4, 1.2, 2)
    noise = uniform(rng, 2, 6, 1)
    scene = cv2.GaussianBlur(scene, (0, 0), blur) + rng.normal(0, noise, scene.shape)
    photo = Image.fromarray(np.clip(scene, 0, 255).astype(np.uint8), "RGB")
    long_side = int(rng.integers(480, 1025))
    ratio = long_side / max(photo.size)
    photo = photo.resize((max(1, round(photo.size[0] * ratio)), max(1, round(photo.size[1] * ratio))),
                         Image.Resampling.BILINEAR)
    quality = int(rng.integers(60, 91))
    params.update(yaw=yaw, pitch=pitch, roll=roll, margin=margin, blur=blur, noise=noise, long_side=long_side,
                  quality=quality, **moire_params, **glare_params)
    return jpeg_roundtrip(photo, quality), params


# --- beauty_filter -------------------------------------------------------------------


def _reshape_maps(shape: tuple[int, int], centre: tuple[float, float], radius: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, Params]:
    """Sampling maps of a face reshape: the lower face pulled towards its midline (a slimmer
    jaw) and both eyes magnified, each by a few percent of the face."""
    height, width = shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    slim = uniform(rng, 0.02, 0.06)
    dx, dy = (xs - centre[0]) / radius, (ys - centre[1]) / radius
    lower = np.clip(dy, 0, 1.2) * np.exp(-(dx**2 + (dy - 0.5) ** 2) / 0.5)
    map_x = xs + slim * radius * dx * lower * 2
    map_y = ys.copy()
    eyes = uniform(rng, 0.04, 0.1)
    for side in (-1, 1):
        ex, ey = centre[0] + side * 0.38 * radius, centre[1] - 0.25 * radius
        reach = 0.3 * radius
        distance2 = ((xs - ex) ** 2 + (ys - ey) ** 2) / reach**2
        pull = eyes * np.exp(-distance2)
        map_x -= pull * (xs - ex)
        map_y -= pull * (ys - ey)
    return map_x, map_y, {"slim": slim, "eye_scale": eyes}


@register("beauty_filter")
def beauty_filter(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """Strong skin smoothing, brightening, a slight face reshape and a vignette."""
    cv2 = _cv2()
    pixels = np.asarray(image, np.uint8)
    height, width = pixels.shape[:2]
    short = min(width, height)
    centre = (uniform(rng, 0.45, 0.55) * width, uniform(rng, 0.4, 0.5) * height)
    radius = uniform(rng, 0.18, 0.28) * short
    map_x, map_y, params = _reshape_maps((height, width), centre, radius, rng)
    reshaped = cv2.remap(pixels, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    sigma_colour = uniform(rng, 30, 70, 1)
    passes = int(rng.integers(1, 3))
    smooth = reshaped
    for _ in range(passes):
        smooth = cv2.bilateralFilter(smooth, 0, sigma_colour, max(2.0, 0.03 * short))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    face = np.exp(-(((xs - centre[0]) / (1.3 * radius)) ** 2 + ((ys - centre[1]) / (1.6 * radius)) ** 2))
    weight = (uniform(rng, 0.3, 0.6) + (1 - 0.3) * face)[..., None].clip(0, 1)
    blended = smooth * weight + reshaped * (1 - weight)
    gamma = uniform(rng, 0.7, 0.9)
    gain = uniform(rng, 1.03, 1.15)
    bright = 255 * (blended / 255) ** gamma * gain
    vignette = uniform(rng, 0.2, 0.45)
    distance2 = ((xs - width / 2) / (width / 2)) ** 2 + ((ys - height / 2) / (height / 2)) ** 2
    out = bright * (1 - vignette * np.clip(distance2 / 2, 0, 1))[..., None]
    quality = int(rng.integers(75, 93))
    params.update(centre=[round(v) for v in centre], radius=round(radius), sigma_colour=sigma_colour,
                  passes=passes, gamma=gamma, gain=gain, vignette=vignette, quality=quality)
    return jpeg_roundtrip(Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB"), quality), params


# --- story_post ----------------------------------------------------------------------


def _story_photo(image: Image.Image, width: int, height: int, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """The photo on a 9:16 canvas: fitted to the width between bands, or scaled to fill and cropped."""
    fit = choice(rng, ("letterbox", "fill"))
    if fit == "fill":
        scale = max(width / image.size[0], height / image.size[1])
        big = image.resize((round(image.size[0] * scale), round(image.size[1] * scale)), Image.Resampling.BICUBIC)
        left = round((big.size[0] - width) * uniform(rng, 0.3, 0.7))
        top = round((big.size[1] - height) * uniform(rng, 0.3, 0.7))
        return big.crop((left, top, left + width, top + height)), {"fit": fit, "crop_xy": [left, top]}
    photo_h = max(1, round(width * image.size[1] / image.size[0]))
    photo = image.resize((width, photo_h), Image.Resampling.BICUBIC)
    band = choice(rng, ("blurred", "gradient"))
    if band == "blurred":
        canvas = image.resize((width, height), Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(width // 15))
    else:
        canvas = vertical_gradient((width, height), random_colour(rng), random_colour(rng))
    top = round((height - photo_h) * uniform(rng, 0.3, 0.6))
    canvas.paste(photo, (0, top))
    return canvas, {"fit": fit, "band": band, "photo_top": top}


def _story_ui(canvas: Image.Image, rng: np.random.Generator) -> Params:
    """Progress bars, the author line, a close cross, the reply field and two buttons, in place."""
    width, height = canvas.size
    draw = ImageDraw.Draw(canvas)
    unit = width / 24
    segments = int(rng.integers(1, 6))
    gap, y = round(unit * 0.3), round(unit * 0.6)
    bar_w = (width - 2 * round(unit * 0.5) - (segments - 1) * gap) / segments
    for i in range(segments):
        x = round(unit * 0.5 + i * (bar_w + gap))
        draw.rectangle((x, y, round(x + bar_w), y + max(2, round(unit * 0.15))), fill=(235, 235, 235))
    face = round(unit * 2)
    draw.ellipse((round(unit * 0.5), round(unit * 1.3), round(unit * 0.5) + face, round(unit * 1.3) + face),
                 fill=tuple(random_colour(rng)), outline=(255, 255, 255), width=2)
    draw.text((round(unit * 3), round(unit * 1.6)), f"{fake_handle(rng)}  {int(rng.integers(1, 23))}h",
              font=font("IBMPlexSans-SemiBold.ttf", round(unit * 0.9)), fill=(255, 255, 255))
    draw.text((width - round(unit * 2), round(unit * 1.3)), "×", font=font("NotoSans-Regular.ttf", round(unit * 1.6)),
              fill=(255, 255, 255))
    field_top = height - round(unit * 3.2)
    draw.rounded_rectangle((round(unit * 0.6), field_top, width - round(unit * 5.5), field_top + round(unit * 2.2)),
                           radius=round(unit), outline=(255, 255, 255), width=2)
    draw.text((round(unit * 1.5), field_top + round(unit * 0.5)), "Send message",
              font=font("NotoSans-Regular.ttf", round(unit * 0.9)), fill=(255, 255, 255))
    for i in range(2):
        x = width - round(unit * (4.6 - 2.2 * i))
        draw.ellipse((x, field_top + round(unit * 0.3), x + round(unit * 1.6), field_top + round(unit * 1.9)),
                     outline=(255, 255, 255), width=2)
    return {"segments": segments}


def _story_extras(canvas: Image.Image, rng: np.random.Generator) -> Params:
    """A caption box and 0-3 emoji stickers, in place."""
    width, height = canvas.size
    draw = ImageDraw.Draw(canvas)
    params: Params = {"stickers": []}
    if rng.random() < 0.8:
        text = _caption_text(rng)
        size = max(8, round(width * uniform(rng, 0.045, 0.07)))
        top = round(height * uniform(rng, 0.55, 0.78))
        box = (round(width * 0.08), top, round(width * 0.92), top + round(size * 1.8))
        draw.rounded_rectangle(box, radius=size // 2, fill=tuple(random_colour(rng)))
        draw.text((box[0] + size // 2, top + size // 3), text, font=font("Montserrat-Bold.ttf", size), fill=(255, 255, 255))
        params["caption"] = {"text": text, "top": top, "size": size}
    for _ in range(int(rng.integers(0, 4))):
        size = max(8, round(width * uniform(rng, 0.1, 0.2)))
        xy = (round((width - size) * uniform(rng, 0.0, 1.0)), round((height - size) * uniform(rng, 0.15, 0.85)))
        emoji = pick_emoji(rng)
        paste_emoji(canvas, emoji, size, xy)
        params["stickers"].append({"emoji": emoji, "size": size, "xy": list(xy)})
    return params


def _feed_post(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """A feed screenshot: author row, the photo cropped to 4:5, action icons, likes and a caption."""
    theme = _theme(rng)
    width = int(rng.integers(360, 721))
    unit = width / 24
    photo_h = round(width * 5 / 4)
    scale = max(width / image.size[0], photo_h / image.size[1])
    big = image.resize((round(image.size[0] * scale), round(image.size[1] * scale)), Image.Resampling.BICUBIC)
    left, top = (big.size[0] - width) // 2, (big.size[1] - photo_h) // 2
    photo = big.crop((left, top, left + width, top + photo_h))
    header = round(unit * 3.2)
    canvas = Image.new("RGB", (width, header + photo_h + round(unit * 6)), tuple(theme["page"]))
    draw = ImageDraw.Draw(canvas)
    draw.ellipse((round(unit * 0.6), round(unit * 0.6), round(unit * 2.6), round(unit * 2.6)),
                 fill=tuple(random_colour(rng)))
    draw.text((round(unit * 3.2), round(unit * 0.9)), fake_name(rng), font=font("IBMPlexSans-SemiBold.ttf", round(unit)),
              fill=tuple(theme["text"]))
    canvas.paste(photo, (0, header))
    below = header + photo_h + round(unit * 0.6)
    for i in range(3):
        x = round(unit * (0.6 + 2.4 * i))
        draw.ellipse((x, below, x + round(unit * 1.6), below + round(unit * 1.6)), outline=tuple(theme["text"]), width=2)
    draw.text((round(unit * 0.6), below + round(unit * 2.4)), f"{int(rng.integers(3, 99999)):,} likes · {_caption_text(rng)}",
              font=font("NotoSans-Regular.ttf", round(unit * 0.9)), fill=tuple(theme["text"]))
    return canvas, {"layout": "feed", "dark": theme["dark"], "width": width, "crop_xy": [left, top]}


@register("story_post")
def story_post(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """The photo in a 9:16 story screenshot with its UI, a caption and stickers (one in four: a feed post)."""
    if rng.random() < 0.25:
        return _feed_post(image, rng)
    width = int(rng.integers(360, 721))
    height = round(width * 16 / 9)
    canvas, params = _story_photo(image, width, height, rng)
    params.update(layout="story", width=width, **_story_ui(canvas, rng), **_story_extras(canvas, rng))
    if rng.random() < 0.5:
        params["quality"] = int(rng.integers(70, 96))
        canvas = jpeg_roundtrip(canvas, params["quality"])
    return canvas, params
