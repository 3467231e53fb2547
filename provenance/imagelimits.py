"""Bounds on what loading one image may cost: bytes read, pixels, JPEG scans, frames, time.

Scrapers hand ``reindex`` whatever the web served and detectors hand ``query`` whatever a
scammer uploaded, so every check here runs before the pixels are decoded: what is not a
regular file is never opened for reading, reads stop at the byte cap, dimensions come
from the header, JPEG scans and animation frames are counted in the encoded bytes, and
the decoder reads its input through a file object that stops it at the time budget.
"""

from __future__ import annotations

import io
import os
import re
import stat
import struct
import time
from dataclasses import dataclass

from .errors import ImageLoadError

#: A 48-megapixel phone photo is 10-25 MB as JPEG and up to 100 MB as a 16-bit PNG.
DEFAULT_MAX_BYTES = 128 << 20
#: Larger than any camera photo that is not a panorama stitch (a 200 MP sensor's
#: full-resolution JPEG is the exception we refuse); decompression bombs are far larger.
DEFAULT_MAX_PIXELS = 100_000_000
#: Progressive JPEGs from libjpeg, mozjpeg and cameras use about 10 scans; thousands of
#: scans make libjpeg re-process the whole coefficient buffer thousands of times.
DEFAULT_MAX_JPEG_SCANS = 100
#: Only the first frame is decoded, but a frame count far beyond any real animation
#: marks a crafted file.
DEFAULT_MAX_FRAMES = 10_000
#: Seconds a decode may take; a 100-megapixel PNG decodes in about 2 s on one core.
DEFAULT_DECODE_SECONDS = 20.0

#: Marker segments (JPEG) or blocks (GIF) walked before a file counts as crafted: real
#: files have hundreds at most, and walking millions in Python would itself take seconds.
MAX_SEGMENTS = 100_000
#: The formats Pillow may open: photo formats only. EPS (which Pillow renders through
#: Ghostscript) and the scientific and legacy formats are never parsed.
DECODABLE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "DIB", "TIFF", "PPM", "AVIF", "HEIF", "JPEG2000",
                     "ICO", "TGA", "PSD", "QOI")

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ImageLimits:
    """What one image may cost to load; every loading path takes one (defaults above)."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_jpeg_scans: int = DEFAULT_MAX_JPEG_SCANS
    max_frames: int = DEFAULT_MAX_FRAMES
    decode_seconds: float | None = DEFAULT_DECODE_SECONDS

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pixels < 1 or self.max_jpeg_scans < 1 or self.max_frames < 1:
            raise ValueError("image limits must be positive")
        if self.decode_seconds is not None and self.decode_seconds <= 0:
            raise ValueError("decode_seconds must be positive (or None for no limit)")

    def deadline(self) -> float | None:
        """The monotonic time at which a decode started now must give up."""
        return None if self.decode_seconds is None else time.monotonic() + self.decode_seconds


DEFAULT_LIMITS = ImageLimits()


def read_file_bounded(path: str, name: str, max_bytes: int) -> bytes:
    """The bytes of the regular file at ``path``, refusing anything else or anything larger.

    Opened without blocking, so a FIFO never hangs the caller, and checked with ``fstat``
    on the opened descriptor, so a link swapped for a device after a check cannot slip through.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ImageLoadError(name, "file not found") from None
    except IsADirectoryError:
        raise ImageLoadError(name, "is a directory") from None
    except OSError as exc:
        raise ImageLoadError(name, f"cannot read file ({exc.strerror or exc})") from None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise ImageLoadError(name, f"not a regular file ({_file_kind(info.st_mode)})")
        if info.st_size > max_bytes:
            raise ImageLoadError(name, f"file of {info.st_size} bytes exceeds the limit of {max_bytes} bytes")
        with os.fdopen(descriptor, "rb", closefd=False) as handle:
            return read_stream_bounded(handle, name, max_bytes)
    except OSError as exc:
        raise ImageLoadError(name, f"cannot read file ({exc.strerror or exc})") from None
    finally:
        os.close(descriptor)


def read_stream_bounded(handle, name: str, max_bytes: int) -> bytes:
    """Read a binary stream to its end, refusing it once it passes ``max_bytes``."""
    parts, total = [], 0
    while True:
        part = handle.read(min(_CHUNK, max_bytes + 1 - total))
        if part is None:  # a non-blocking stream with nothing to give
            raise ImageLoadError(name, "the stream gave no data (a pipe or socket?)")
        if not isinstance(part, (bytes, bytearray)):
            raise ImageLoadError(name, "file object must be opened in binary mode")
        if not part:
            return b"".join(parts)
        parts.append(bytes(part))
        total += len(part)
        if total > max_bytes:
            raise ImageLoadError(name, f"more than the limit of {max_bytes} bytes")


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return kind
    return "not a plain file"


class DeadlineReader(io.BytesIO):
    """In-memory bytes whose reads fail once the deadline has passed.

    Pillow's decoders pull their input in blocks from Python, so a decode that runs past
    its budget stops at its next read instead of running on.
    """

    def __init__(self, data: bytes, name: str, deadline: float | None):
        super().__init__(data)
        self._name = name
        self._deadline = deadline

    def check(self) -> None:
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise ImageLoadError(self._name, "decoding took longer than the time limit")

    def read(self, size: int | None = -1) -> bytes:
        self.check()
        return super().read(size)

    def readinto(self, buffer) -> int:
        self.check()
        return super().readinto(buffer)


def check_encoded(data: bytes, name: str, limits: ImageLimits) -> None:
    """Refuse crafted structure visible in the encoded bytes, before any decoding."""
    if data[:3] == b"\xff\xd8\xff":
        scans = count_jpeg_scans(data, limits.max_jpeg_scans)
        if scans > limits.max_jpeg_scans:
            raise ImageLoadError(name, f"JPEG with more than {limits.max_jpeg_scans} scans or {MAX_SEGMENTS} segments "
                                       "(a decoding-time bomb)")
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        _check_png_header(data, name, limits)
    elif data[:6] in (b"GIF87a", b"GIF89a"):
        frames = count_gif_frames(data, limits.max_frames)
        if frames > limits.max_frames:
            raise ImageLoadError(name, f"GIF with more than {limits.max_frames} frames or {MAX_SEGMENTS} blocks")


_ENTROPY_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def count_jpeg_scans(data: bytes, stop_after: int) -> int:
    """Start-of-scan markers of the first JPEG in ``data`` (counting stops past ``stop_after``;
    a file of more than :data:`MAX_SEGMENTS` segments counts as past it).

    Walks the marker segments by their lengths, so bytes inside EXIF thumbnails or ICC
    profiles are never mistaken for markers; entropy-coded data ends at the first 0xFF
    that is neither stuffing nor a restart marker.
    """
    position, scans, segments, size = 2, 0, 0, len(data)
    while position + 1 < size and scans <= stop_after:
        segments += 1
        if segments > MAX_SEGMENTS:
            return stop_after + 1
        if data[position] != 0xFF:
            found = _ENTROPY_END.search(data, position)
            if found is None:
                break
            position = found.start()
            continue
        marker = data[position + 1]
        if marker == 0xFF or marker == 0x00 or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            position += 1 if marker == 0xFF else 2
            continue
        if marker == 0xD9 or position + 4 > size:  # end of image
            break
        if marker == 0xDA:
            scans += 1
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return scans


_PNG_DEPTHS = {0: {1, 2, 4, 8, 16}, 2: {8, 16}, 3: {1, 2, 4, 8}, 4: {8, 16}, 6: {8, 16}}


def _check_png_header(data: bytes, name: str, limits: ImageLimits) -> None:
    # Pillow's PNG reader trusts some IHDR fields (an interlace method of 2 decodes as
    # if it were 0), so a header the PNG specification forbids is refused here.
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ImageLoadError(name, "invalid PNG: no IHDR chunk first")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if width == 0 or height == 0 or width > 2**31 - 1 or height > 2**31 - 1:
        raise ImageLoadError(name, f"invalid PNG header: size {width}x{height}")
    if depth not in _PNG_DEPTHS.get(colour, set()):
        raise ImageLoadError(name, f"invalid PNG header: colour type {colour} with bit depth {depth}")
    if compression != 0 or filtering != 0 or interlace not in (0, 1):
        raise ImageLoadError(name, "invalid PNG header: unknown compression, filter or interlace method")
    actl = data.find(b"acTL", 33)
    idat = data.find(b"IDAT", 33)
    if actl != -1 and (idat == -1 or actl < idat) and actl + 8 <= len(data):
        frames = int.from_bytes(data[actl + 4 : actl + 8], "big")
        if frames > limits.max_frames:
            raise ImageLoadError(name, f"animated PNG declaring {frames} frames (limit {limits.max_frames})")


def count_gif_frames(data: bytes, stop_after: int) -> int:
    """Image descriptors in a GIF, walking its blocks (counting stops past ``stop_after``;
    a file of more than :data:`MAX_SEGMENTS` blocks counts as past it)."""
    size = len(data)
    if size < 13:
        return 0
    flags = data[10]
    position = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    frames = blocks = 0
    while position < size and frames <= stop_after:
        blocks += 1
        if blocks > MAX_SEGMENTS:
            return stop_after + 1
        introducer = data[position]
        if introducer == 0x3B:  # trailer
            break
        if introducer == 0x21:  # extension: label, then sub-blocks
            position = _skip_sub_blocks(data, position + 2)
        elif introducer == 0x2C:  # image descriptor, optional local table, LZW size, sub-blocks
            frames += 1
            if position + 10 > size:
                break
            local = data[position + 9]
            position += 10 + (3 * 2 ** ((local & 7) + 1) if local & 0x80 else 0)
            position = _skip_sub_blocks(data, position + 1)
        else:
            break
    return frames


def _skip_sub_blocks(data: bytes, position: int) -> int:
    size = len(data)
    while position < size:
        length = data[position]
        position += 1 + length
        if length == 0:
            break
    return position
