"""Query transform families: a registry of ``name -> function(image, rng) -> (image, params)``.

Every family is a pure function of the RGB input image and a seeded
:class:`numpy.random.Generator`; ``params`` records every random choice (JSON-ready,
rounded *before* use so the record is exact). :func:`family_rng` derives the generator
from ``(seed, reference index, family name)``, so a query does not change when other
families or references are added to a run.

The standard families lean on AugLy (``perspective_transform`` and ``meme_format`` are
avoided: they break with Pillow >= 12); the profile-photo-theft families (avatars,
fake profile pages, handle/price text, stickers) live in :mod:`.profile`.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from .families import FAMILIES, Params, apply_family, choice, face_box, face_crop, family_rng, jpeg_roundtrip  # noqa: F401
from .families import random_colour, register, uniform

#: Families that a ``combo`` query may chain (cheap, each keeps most of the photo).
COMBO_STEPS = (
    "crop_mild", "mirror_crop", "color_filter", "text_overlay", "emoji_stickers",
    "jpeg_downscale", "pad_border", "blur", "rotate_small", "grayscale",
)



def _augly():
    import augly.image as imaugs  # deferred: only evaluation needs AugLy

    return imaugs


# --- standard families ---------------------------------------------------------------


@register("crop_mild")
def crop_mild(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """Keep 55-85% of the area, roughly centred on the face."""
    return face_crop(image, rng, 0.55, 0.85)


@register("crop_heavy")
def crop_heavy(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """Keep only 25-45% of the area around the face region."""
    return face_crop(image, rng, 0.25, 0.45)


@register("mirror_crop")
def mirror_crop(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """Horizontal flip, then a 55-90% crop around the face."""
    flipped = _augly().hflip(image)
    out, params = face_crop(flipped, rng, 0.55, 0.9)
    return out, {"hflip": True, **params}


@register("rotate_small")
def rotate_small(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """Rotate by 2-10 degrees either way (AugLy crops to the largest upright rectangle)."""
    degrees = uniform(rng, 2.0, 10.0, 2) * choice(rng, (-1, 1))
    return _augly().rotate(image, degrees=degrees), {"degrees": degrees}


@register("color_filter")
def color_filter(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """An Instagram-like filter: colour tint, then brightness, contrast and saturation."""
    tint = random_colour(rng)
    alpha = uniform(rng, 0.08, 0.35)
    brightness = uniform(rng, 0.7, 1.3)
    contrast = uniform(rng, 0.7, 1.45)
    saturation = uniform(rng, 0.2, 1.9)
    tinted = Image.blend(image, Image.new("RGB", image.size, tuple(tint)), alpha)
    out = _augly().color_jitter(
        tinted, brightness_factor=brightness, contrast_factor=contrast, saturation_factor=saturation
    )
    params = {"tint": tint, "tint_alpha": alpha, "brightness": brightness, "contrast": contrast,
              "saturation": saturation}
    return out, params


@register("grayscale")
def grayscale(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """Grayscale (luminosity or average) with a mild contrast change."""
    mode = choice(rng, ("luminosity", "average"))
    contrast = uniform(rng, 0.85, 1.25)
    out = ImageEnhance.Contrast(_augly().grayscale(image, mode=mode)).enhance(contrast)
    return out, {"mode": mode, "contrast": contrast}


@register("jpeg_downscale")
def jpeg_downscale(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """Downscale to 30-60%, then a heavy JPEG (quality 8-25)."""
    factor = uniform(rng, 0.3, 0.6)
    quality = int(rng.integers(8, 26))
    small = _augly().scale(image, factor=factor)
    return jpeg_roundtrip(small, quality), {"scale": factor, "quality": quality}


@register("blur")
def blur(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """Gaussian blur, radius 1-3.5 px."""
    radius = uniform(rng, 1.0, 3.5, 2)
    return _augly().blur(image, radius=radius), {"radius": radius}


@register("noise")
def noise(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """Gaussian pixel noise (AugLy random_noise, variance 0.005-0.04, seeded)."""
    var = uniform(rng, 0.005, 0.04, 4)
    noise_seed = int(rng.integers(0, 2**31 - 1))
    return _augly().random_noise(image, var=var, seed=noise_seed), {"var": var, "noise_seed": noise_seed}


@register("aspect_ratio")
def aspect_ratio(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """Squash or stretch: aspect ratio times 1.25-1.9 or divided by it."""
    magnitude = uniform(rng, math.log(1.25), math.log(1.9), 4)
    ratio = round(math.exp(magnitude * choice(rng, (-1, 1))), 3)
    width, height = image.size
    return _augly().change_aspect_ratio(image, ratio=ratio * width / height), {"ratio": ratio}


@register("pad_border")
def pad_border(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """A solid border: 5-30% of the width and of the height on each side."""
    w_factor = uniform(rng, 0.05, 0.3)
    h_factor = uniform(rng, 0.05, 0.3)
    colour = random_colour(rng)
    out = _augly().pad(image, w_factor=w_factor, h_factor=h_factor, color=tuple(colour))
    return out, {"w_factor": w_factor, "h_factor": h_factor, "colour": colour}


@register("letterbox")
def letterbox(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """Fit into a 16:9, 9:16, 4:5 or 1.91:1 frame with black, white or blurred bars."""
    frame = choice(rng, ("16:9", "9:16", "4:5", "1.91:1"))
    bars = choice(rng, ("black", "white", "blurred"))
    fw, fh = (float(x) for x in frame.split(":"))
    width, height = image.size
    canvas_w = max(width, round(height * fw / fh))
    canvas_h = max(height, round(width * fh / fw))
    if bars == "blurred":
        canvas = image.resize((canvas_w, canvas_h), Image.Resampling.BILINEAR)
        canvas = canvas.filter(ImageFilter.GaussianBlur(max(4, canvas_w // 25)))
    else:
        canvas = Image.new("RGB", (canvas_w, canvas_h), (0, 0, 0) if bars == "black" else (255, 255, 255))
    canvas.paste(image, ((canvas_w - width) // 2, (canvas_h - height) // 2))
    return canvas, {"frame": frame, "bars": bars, "size": [canvas_w, canvas_h]}


@register("augly_screenshot")
def augly_screenshot(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """AugLy's own screenshot overlay (web or mobile template)."""
    from augly.utils import SCREENSHOT_TEMPLATES_DIR

    template = choice(rng, ("web.png", "mobile.png"))
    crop_to_fit = bool(choice(rng, (False, True)))
    out = _augly().overlay_onto_screenshot(
        image, template_filepath=f"{SCREENSHOT_TEMPLATES_DIR}/{template}", crop_src_to_fit=crop_to_fit
    )
    return out, {"template": template, "crop_src_to_fit": crop_to_fit}


@register("combo")
def combo(image: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, Params]:
    """Two or three different light families chained in random order."""
    count = int(rng.integers(2, 4))
    picks = rng.choice(len(COMBO_STEPS), size=count, replace=False)
    steps = []
    out = image
    for pick in picks:
        name = COMBO_STEPS[int(pick)]
        out, params = apply_family(name, out, rng)
        steps.append({"family": name, "params": params})
    return out, {"steps": steps}

