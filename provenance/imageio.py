"""Loading images from paths, bytes, file objects or PIL images into RGB.

Never fetches URLs. Applies EXIF orientation, flattens every mode to RGB (alpha onto
white, 16-bit scaled, CMYK converted), takes the first frame of animations, and refuses
non-images, invalid headers and anything past the :class:`~provenance.imagelimits.ImageLimits`
(bytes, pixels, JPEG scans, frames, decode time) with :class:`~provenance.errors.ImageLoadError`.
HEIC/HEIF photos are read through pillow-heif, AVIF through Pillow's own plugin.
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
from .imagelimits import DECODABLE_FORMATS, DEFAULT_LIMITS, DeadlineReader, ImageLimits, check_encoded
from .imagelimits import read_file_bounded, read_stream_bounded

ImageSource = Union[str, os.PathLike, bytes, bytearray, BinaryIO, Image.Image]

#: Above this many pixels an image decoded for a known target size is reduced right after
#: decoding (as JPEG's draft mode does while decoding), so conversions and crops of a huge
#: PNG never hold several full-size copies. Ordinary photos and screenshots stay full size.
REDUCE_ABOVE_PIXELS = 24_000_000

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm",
     ".heic", ".heif", ".avif"}
)
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")


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


def read_source_bytes(source: ImageSource, max_bytes: int = DEFAULT_LIMITS.max_bytes) -> bytes:
    """The encoded bytes of a path, bytes or file-object source, at most ``max_bytes``.

    A path must name a regular file: FIFOs, devices and sockets are refused unopened for
    reading, so they can neither hang the caller nor fill its memory. ``SHARD.tar#MEMBER``
    names an image inside a tar shard (img2dataset's webdataset output).
    """
    name = describe_source(source)
    if isinstance(source, (bytes, bytearray)):
        if len(source) > max_bytes:
            raise ImageLoadError(name, f"more than the limit of {max_bytes} bytes")
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if isinstance(text, bytes):
            text = os.fsdecode(text)
        if "://" in text:
            raise ImageLoadError(name, "URLs are not fetched; download the image first")
        if "#" in text and not os.path.exists(text):
            from .img2dataset import is_member_name, read_member

            if is_member_name(text):  # SHARD.tar#MEMBER: an image inside a webdataset shard
                return read_member(text, max_bytes)
        return read_file_bounded(text, name, max_bytes)
    if hasattr(source, "read"):
        return read_stream_bounded(source, name, max_bytes)
    raise ImageLoadError(name, f"unsupported image source type {type(source).__name__}")


def load_image(
    source: ImageSource,
    *,
    limits: ImageLimits = DEFAULT_LIMITS,
    target_size: int | None = None,
) -> LoadedImage:
    """Load ``source`` as an upright RGB image within ``limits``.

    ``target_size`` lets decoding stop at a reduced scale (never below ``target_size`` on
    the short side): JPEG's ``draft()`` while decoding, a plain reduction right after it
    for other formats past :data:`REDUCE_ABOVE_PIXELS`.
    """
    name = describe_source(source)
    if isinstance(source, Image.Image):
        size = _oriented_size(source)
        return LoadedImage(_to_upright_rgb(source, name, None, None), None, size)
    data = read_source_bytes(source, limits.max_bytes)
    digest = hashlib.sha256(data).hexdigest()
    reader = DeadlineReader(data, name, limits.deadline())
    image = _open_checked(reader, data, name, limits)
    size = _oriented_size(image)
    if target_size and image.format == "JPEG":
        image.draft("RGB", _draft_request(image.size, target_size))
    return LoadedImage(_to_upright_rgb(image, name, target_size, reader), digest, size)


def _open_checked(reader: DeadlineReader, data: bytes, name: str, limits: ImageLimits) -> Image.Image:
    if not data:
        raise ImageLoadError(name, "file is empty")
    check_encoded(data, name, limits)
    if _is_heif(data):
        _register_heif()
    try:
        with warnings.catch_warnings():
            # the pixel budget below is the one that counts; Pillow's own is only a warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.init()  # registers every plugin (idempotent); OPEN lists the registered formats
            image = Image.open(reader, formats=[name for name in DECODABLE_FORMATS if name in Image.OPEN])
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(name, "not an image in a supported format") from None
    except Image.DecompressionBombError:
        raise ImageLoadError(name, "too many pixels (possible decompression bomb)") from None
    except Exception as exc:  # Pillow raises many types for broken headers
        raise ImageLoadError(name, f"cannot decode image ({_one_line(exc)})") from None
    width, height = image.size
    if width * height > limits.max_pixels:
        raise ImageLoadError(
            name, f"{width}x{height} exceeds the limit of {limits.max_pixels} pixels (possible decompression bomb)"
        )
    if width == 0 or height == 0:
        raise ImageLoadError(name, "image has no pixels")
    # (GIF and APNG frames were counted in the encoded bytes; these formats declare theirs)
    frames = getattr(image, "n_frames", 1) if image.format in ("WEBP", "AVIF", "HEIF") else 1
    if frames > limits.max_frames:
        raise ImageLoadError(name, f"{frames} frames exceed the limit of {limits.max_frames}")
    return image


def _is_heif(data: bytes) -> bool:
    return data[4:8] == b"ftyp" and (data[8:12] in _HEIF_BRANDS or any(
        brand in data[16:64] for brand in _HEIF_BRANDS[:4]))


def _register_heif() -> None:
    try:
        import pillow_heif
    except ImportError:
        return  # then Pillow says it cannot identify the file
    pillow_heif.register_heif_opener()


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


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


def _to_upright_rgb(image: Image.Image, name: str, target_size: int | None,
                     reader: DeadlineReader | None) -> Image.Image:
    try:
        try:
            animated = getattr(image, "is_animated", False)  # GIF looks at the second frame
        except Exception:
            animated = True  # a broken later frame: the first one is still the picture
        if animated:
            image.seek(0)
        image.load()
        if reader is not None:
            reader.check()  # decoders that read all at once are checked when they return
        image = _reduced(image, target_size)
        try:
            image = ImageOps.exif_transpose(image)
        except Exception:
            pass  # a broken EXIF block must not make the pixels unusable
        return _flatten_to_rgb(image)
    except ImageLoadError:
        raise
    except MemoryError:
        raise ImageLoadError(name, "not enough memory to decode it") from None
    except Exception as exc:
        raise ImageLoadError(name, f"cannot decode image ({_one_line(exc)})") from None


def _reduced(image: Image.Image, target_size: int | None) -> Image.Image:
    width, height = image.size
    if not target_size or width * height <= REDUCE_ABOVE_PIXELS:
        return image
    factor = min(width, height) // target_size
    if factor < 2:
        return image
    exif = image.getexif()
    if image.mode.startswith("I;16"):
        image = _deep_grey_to_l(image)
    elif image.mode in ("P", "1"):  # Pillow cannot reduce these modes
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    reduced = image.reduce(factor)
    if exif:
        reduced.info["exif"] = exif.tobytes()  # orientation still applies to the reduced pixels
    return reduced


def _flatten_to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        return _deep_grey_to_l(image).convert("RGB")
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


def _deep_grey_to_l(image: Image.Image) -> Image.Image:
    """16/32-bit greyscale scaled to 8 bits (not clipped at 255), in place in float32."""
    import numpy as np

    array = np.asarray(image, dtype=np.float32)
    peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
    array *= 255.0 / peak
    array += 0.5
    np.clip(array, 0, 255, out=array)
    return Image.fromarray(array.astype("uint8"), "L")


def thumbnail_jpeg(image: Image.Image, side: int, quality: int = 80) -> bytes:
    """``image`` shrunk to fit ``side`` (same aspect ratio), as JPEG bytes: about 9 KB at 256 px."""
    small = image.convert("RGB")
    small.thumbnail((side, side))
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()
