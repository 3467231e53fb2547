"""Loading images from paths, bytes, file objects or PIL images into RGB.

Never fetches URLs. Applies EXIF orientation, flattens every mode to RGB (alpha onto
white), takes the first frame of animations, and refuses decompression bombs and
non-images with :class:`~provenance.errors.ImageLoadError`.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Union

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageLoadError

ImageSource = Union[str, os.PathLike, bytes, bytearray, BinaryIO, Image.Image]

#: Images with more pixels than this are refused (a 16k x 16k photo is already absurd
#: for a profile picture; bombs are far larger).
DEFAULT_MAX_PIXELS = 100_000_000

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}
)


@dataclass(frozen=True)
class LoadedImage:
    """An RGB image with what was learnt while loading it."""

    image: Image.Image
    sha256: str | None  # of the encoded bytes; None when handed a PIL image
    original_size: tuple[int, int]  # (width, height) after EXIF orientation


def describe_source(source: ImageSource) -> str:
    """A short human name for an image source, for error messages."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    if isinstance(source, Image.Image):
        return f"<PIL image {source.mode} {source.size[0]}x{source.size[1]}>"
    return getattr(source, "name", None) or "<file object>"


def is_image_path(path: str | os.PathLike) -> bool:
    """True when the file name has a common image extension (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def read_source_bytes(source: ImageSource) -> bytes:
    """The encoded bytes of a path, bytes or file-object source."""
    name = describe_source(source)
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if "://" in str(text):
            raise ImageLoadError(name, "URLs are not fetched; download the image first")
        try:
            with open(text, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            raise ImageLoadError(name, "file not found") from None
        except IsADirectoryError:
            raise ImageLoadError(name, "is a directory") from None
        except OSError as exc:
            raise ImageLoadError(name, f"cannot read file ({exc.strerror or exc})") from None
    if hasattr(source, "read"):
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise ImageLoadError(name, "file object must be opened in binary mode")
        return bytes(data)
    raise ImageLoadError(name, f"unsupported image source type {type(source).__name__}")


def load_image(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    target_size: int | None = None,
) -> LoadedImage:
    """Load ``source`` as an upright RGB image.

    ``target_size`` lets JPEG decoding use ``draft()`` to decode at a reduced scale
    (never below ``target_size`` on the short side), which is several times faster
    for large photos when only a small version is needed.
    """
    name = describe_source(source)
    if isinstance(source, Image.Image):
        size = _oriented_size(source)
        return LoadedImage(_to_upright_rgb(source, name), None, size)
    data = read_source_bytes(source)
    digest = hashlib.sha256(data).hexdigest()
    image = _open_checked(data, name, max_pixels)
    size = _oriented_size(image)
    if target_size and image.format == "JPEG":
        image.draft("RGB", _draft_request(image.size, target_size))
    return LoadedImage(_to_upright_rgb(image, name), digest, size)


def _open_checked(data: bytes, name: str, max_pixels: int) -> Image.Image:
    if not data:
        raise ImageLoadError(name, "file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageLoadError(name, "not an image (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageLoadError(name, "too many pixels (possible decompression bomb)") from None
    except Exception as exc:  # Pillow raises many types for broken headers
        raise ImageLoadError(name, f"cannot decode image ({exc})") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageLoadError(
            name, f"{width}x{height} exceeds the limit of {max_pixels} pixels (possible decompression bomb)"
        )
    if width == 0 or height == 0:
        raise ImageLoadError(name, "image has no pixels")
    return image


def _draft_request(size: tuple[int, int], target: int) -> tuple[int, int]:
    # draft() picks the largest scale whose result is >= the requested size, so asking
    # for a box scaled to target on the short side keeps enough resolution.
    width, height = size
    scale = target / max(1, min(width, height))
    return (max(1, int(width * scale)), max(1, int(height * scale)))


def _oriented_size(image: Image.Image) -> tuple[int, int]:
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:
        orientation = 1
    width, height = image.size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _to_upright_rgb(image: Image.Image, name: str) -> Image.Image:
    try:
        if getattr(image, "is_animated", False):
            image.seek(0)
        image.load()
        try:
            image = ImageOps.exif_transpose(image)
        except Exception:
            pass  # a broken EXIF block must not make the pixels unusable
        return _flatten_to_rgb(image)
    except ImageLoadError:
        raise
    except Exception as exc:
        raise ImageLoadError(name, f"cannot decode image ({exc})") from None


def _flatten_to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of clipping at 255
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
        array = np.clip(array / peak * 255.0 + 0.5, 0, 255).astype("uint8")
        return Image.fromarray(array, "L").convert("RGB")
    if mode == "F":
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        array = (array - low) / (high - low or 1.0) * 255.0
        return Image.fromarray(array.astype("uint8"), "L").convert("RGB")
    if mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        background.alpha_composite(rgba)
        return background.convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
