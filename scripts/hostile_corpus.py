"""Write a corpus of hostile and odd files for `scripts/hostile_run.py` (issue: hostile input).

    python scripts/hostile_corpus.py OUT_DIR [--seed 0] [--variants 12]

Every case of the hostile-input issue is covered: empty, truncated and bit-flipped files,
decompression bombs (PNG, GIF, JPEG, TIFF, BMP headers), JPEGs with thousands of scans,
animated bombs, wrong extensions, polyglots, 16-bit, CMYK and other modes, EXIF
orientations, HEIC/AVIF/WebP, FIFOs, links to devices, and names such as ``-``,
``--help.jpg`` and ``$(touch pwned).jpg``. ``OUT_DIR/expected.csv`` says for each file
whether it is a valid image (``answer``: it must be read) or not (``refuse``: a one-line
refusal); damaged files whose damage a decoder may legitimately survive are ``either``.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def photo(seed: int, size=(480, 360)) -> Image.Image:
    """A photo-like picture: gradients, shapes and noise."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([np.sin(x / rng.uniform(9, 50) + rng.uniform(0, 6)) * np.cos(y / rng.uniform(9, 50))
                     for _ in range(3)], axis=-1)
    image = Image.fromarray(((base * 0.5 + 0.5) * 220).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(20):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = [x0, y0, x0 + int(rng.integers(2, max(3, width // 2))), y0 + int(rng.integers(2, max(3, height // 2)))]
        draw.ellipse(box, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    noisy = np.asarray(image, np.float32) + rng.normal(0, 5, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side: int) -> bytes:
    """A valid greyscale PNG of side x side zero pixels, compressed ~1000:1, streamed."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    parts = [compressor.compress(row) for _ in range(side)]
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", b"".join(parts)) + png_chunk(b"IEND", b"")


def png_with_header(width: int, height: int, depth=8, colour=2, interlace=0, body: bytes | None = None) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    data = body if body is not None else zlib.compress(b"\x00" * (min(width, 64) * 3 + 1) * min(height, 64))
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def apng_declaring(frames: int) -> bytes:
    small = encode(photo(3, (32, 24)), "PNG")
    actl = png_chunk(b"acTL", struct.pack(">II", frames, 0))
    return small[:33] + actl + small[33:]


def jpeg_with_size(width: int, height: int) -> bytes:
    """A tiny JPEG whose SOF claims another size (a header bomb)."""
    data = bytearray(encode(photo(4, (16, 16)), "JPEG"))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def jpeg_scans_bomb(copies: int) -> bytes:
    """A progressive JPEG whose last (18-byte) scan repeats: libjpeg re-processes the whole
    coefficient buffer for each copy (1,000 copies: 4.4 s to decode on the dev machine)."""
    jpeg = encode(Image.new("RGB", (2048, 2048), (120, 130, 140)), "JPEG", progressive=True, quality=85)
    last = jpeg.rfind(b"\xff\xda")
    return jpeg[:-2] + jpeg[last:-2] * copies + b"\xff\xd9"


def gif_bomb(width: int, height: int, frames: int) -> bytes:
    """A GIF with a huge logical screen and/or many 1x1 frames."""
    header = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x21\xf9\x04\x00\x01\x00\x00\x00" + b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    loop = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    return header + loop + frame * frames + b"\x3b"


def tiff_with_size(width: int, height: int) -> bytes:
    data = bytearray(encode(photo(6, (16, 16)), "TIFF"))
    # patch ImageWidth (256) and ImageLength (257) entries of the first IFD (little endian)
    ifd = struct.unpack_from("<I", data, 4)[0]
    for index in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * index
        tag, kind = struct.unpack_from("<HH", data, entry)
        if tag in (256, 257):
            value = width if tag == 256 else height
            struct.pack_into("<HHII", data, entry, tag, 4, 1, value)
    return bytes(data)


def bmp_with_size(width: int, height: int) -> bytes:
    data = bytearray(encode(photo(7, (16, 16)), "BMP"))
    struct.pack_into("<ii", data, 18, width, height)
    return bytes(data)


def flipped(data: bytes, rng: np.random.Generator, flips: int) -> bytes:
    out = bytearray(data)
    for position in rng.integers(0, len(out), flips):
        out[int(position)] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def oriented(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(photo(20 + orientation), "JPEG", exif=exif.tobytes(), quality=90)


def modes() -> dict[str, tuple[bytes, str]]:
    """Valid images in every mode a scraper meets, each (bytes, expect)."""
    base = photo(30)
    grey = np.asarray(base.convert("L"), dtype=np.uint16) * 257
    rgb16 = (np.asarray(base, dtype=np.uint16) * 257).astype(">u2")
    cases = {
        "grey16.png": (encode(Image.fromarray(grey), "PNG"), "answer"),
        "grey16.tif": (encode(Image.fromarray(grey), "TIFF"), "answer"),
        "cmyk.jpg": (encode(base.convert("CMYK"), "JPEG", quality=90), "answer"),
        "cmyk.tif": (encode(base.convert("CMYK"), "TIFF"), "answer"),
        "lab.tif": (encode(base.convert("LAB"), "TIFF"), "answer"),
        "palette_transparent.png": (encode(base.convert("P"), "PNG", transparency=0), "answer"),
        "la.png": (encode(base.convert("LA"), "PNG"), "answer"),
        "rgba.png": (encode(base.convert("RGBA"), "PNG"), "answer"),
        "bilevel.png": (encode(base.convert("1"), "PNG"), "answer"),
        "int32.tif": (encode(Image.fromarray(grey.astype(np.int32)), "TIFF"), "answer"),
        "float.tif": (encode(Image.fromarray(grey.astype(np.float32) / 65535), "TIFF"), "answer"),
        "ycbcr.jpg": (encode(base, "JPEG", subsampling=2), "answer"),
        "grey.jpg": (encode(base.convert("L"), "JPEG"), "answer"),
        "webp.webp": (encode(base, "WEBP"), "answer"),
        "progressive.jpg": (encode(base, "JPEG", progressive=True), "answer"),
        "gif.gif": (encode(base.convert("P"), "GIF"), "answer"),
        "bmp.bmp": (encode(base, "BMP"), "answer"),
        "ppm.ppm": (encode(base, "PPM"), "answer"),
        "animated.gif": (encode(photo(31), "GIF", save_all=True, append_images=[photo(32), photo(33)]), "answer"),
        "animated.webp": (encode(photo(34), "WEBP", save_all=True, append_images=[photo(35)]), "answer"),
        "animated.png": (encode(photo(36), "PNG", save_all=True, append_images=[photo(37)]), "answer"),
        "huge_valid_grey.png": (encode(Image.new("L", (9000, 9000), 128), "PNG"), "answer"),
        "camera_48mp.jpg": (encode(photo(38).resize((8000, 6000)), "JPEG", quality=85), "answer"),
    }
    rgb16_png = png_with_header(base.width, base.height, depth=16, colour=2, body=zlib.compress(
        b"".join(b"\x00" + row.tobytes() for row in rgb16)))
    cases["rgb48.png"] = (rgb16_png, "answer")
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        cases["iphone.heic"] = (encode(base, "HEIF", quality=85), "answer")
        cases["iphone_named.HEIF"] = (encode(photo(39), "HEIF"), "answer")
    except ImportError:
        print("pillow-heif missing: no HEIC files", file=sys.stderr)
    cases["photo.avif"] = (encode(base, "AVIF", quality=80), "answer")
    return cases


def build(out: Path, seed: int, variants: int) -> list[tuple[str, str, str]]:
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, str, str]] = []

    def put(name: str, data: bytes, kind: str, expect: str) -> None:
        (out / name).write_bytes(data)
        rows.append((name, kind, expect))

    jpeg, png = encode(photo(1), "JPEG", quality=90), encode(photo(2), "PNG")
    put("valid.jpg", jpeg, "valid", "answer")
    put("valid.png", png, "valid", "answer")
    put("empty.jpg", b"", "empty", "refuse")
    put("one_byte.jpg", b"\xff", "empty", "refuse")
    for number in range(variants):  # damage: truncation and bit flips, judged by the decoder
        for stem, data in (("jpg", jpeg), ("png", png)):
            cut = int(rng.integers(8, len(data) - 8))
            put(f"truncated_{number:02d}.{stem}", data[:cut], "truncated", "refuse" if stem == "png" else "either")
            put(f"flipped_{number:02d}.{stem}", flipped(data, rng, int(rng.integers(1, 40))), "bit-flipped", "either")
    put("bomb_png_30k.png", png_bomb(30000), "decompression bomb", "refuse")
    put("bomb_png_header.png", png_with_header(60000, 60000), "decompression bomb", "refuse")
    put("bomb_jpeg_header.jpg", jpeg_with_size(65000, 65000), "decompression bomb", "refuse")
    put("bomb_gif_screen.gif", gif_bomb(65535, 65535, 1), "decompression bomb", "refuse")
    put("bomb_tiff_header.tif", tiff_with_size(200000, 200000), "decompression bomb", "refuse")
    put("bomb_bmp_header.bmp", bmp_with_size(100000, 100000), "decompression bomb", "refuse")
    put("bomb_11k_just_over.png", png_with_header(10500, 10000), "decompression bomb", "refuse")
    put("scans_12000.jpg", jpeg_scans_bomb(12000), "JPEG scans bomb", "refuse")
    put("scans_500.jpg", jpeg_scans_bomb(500), "JPEG scans bomb", "refuse")
    put("animated_bomb_frames.gif", gif_bomb(64, 64, 200000), "animated bomb", "refuse")
    put("animated_bomb_screen.gif", gif_bomb(40000, 40000, 50), "animated bomb", "refuse")
    put("animated_bomb_actl.png", apng_declaring(5_000_000), "animated bomb", "refuse")
    put("png_interlace_2.png", png_with_header(64, 64, interlace=2), "invalid header", "refuse")
    put("png_depth_3.png", png_with_header(64, 64, depth=3), "invalid header", "refuse")
    bad_crc = bytearray(png)
    bad_crc[29] ^= 0xFF
    put("png_bad_crc.png", bytes(bad_crc), "invalid header", "refuse")
    put("png_named.jpg", png, "wrong extension", "answer")
    put("jpeg_named.png", jpeg, "wrong extension", "answer")
    put("webp_named.gif", encode(photo(8), "WEBP"), "wrong extension", "answer")
    put("text_named.jpg", b"this is not an image\n" * 20, "wrong extension", "refuse")
    put("html_named.png", b"<html><script>alert(1)</script></html>", "wrong extension", "refuse")
    put("pdf_named.jpg", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", "wrong extension", "refuse")
    put("zip_named.jpg", b"PK\x03\x04" + bytes(200), "wrong extension", "refuse")
    put("polyglot_jpeg_zip.jpg", jpeg + b"PK\x03\x04" + bytes(100) + b"PK\x05\x06" + bytes(18), "polyglot", "answer")
    put("polyglot_png_html.png", png + b"<script>alert(1)</script>", "polyglot", "answer")
    put("polyglot_gif_js.gif", b"GIF89a/*" + encode(photo(9).convert("P"), "GIF")[8:] + b"*/=1;alert(1);", "polyglot", "either")
    for name, (data, expect) in modes().items():
        put(name, data, "mode or format", expect)
    for orientation in range(0, 9):
        put(f"exif_orientation_{orientation}.jpg", oriented(orientation), "EXIF orientation", "answer")
    for name in ("-", "--help.jpg", "$(touch pwned).jpg", "`touch pwned2`.jpg", "; rm -rf ~ ;.jpg",
                 "name with spaces.jpg", "ünïcödé-фото-照片.jpg", "new\nline.jpg", " leading space.jpg",
                 "-rf.png", "*.jpg", "a" * 240 + ".jpg", os.fsdecode(b"not-utf8-\xff\xfe.jpg")):
        put(name, encode(photo(40 + len(rows)), "JPEG"), "odd name", "answer")
    _special_files(out, rows)
    return rows


def _special_files(out: Path, rows: list) -> None:
    os.mkfifo(out / "fifo.jpg")
    rows.append(("fifo.jpg", "FIFO", "refuse"))
    for name, target in (("dev_zero.jpg", "/dev/zero"), ("dev_urandom.jpg", "/dev/urandom"),
                         ("dev_null.png", "/dev/null"), ("dangling.jpg", "no-such-target.jpg"),
                         ("loop.jpg", "loop.jpg")):
        (out / name).symlink_to(target)
        rows.append((name, "link to a device or nowhere", "refuse"))
    (out / "directory.jpg").mkdir()
    rows.append(("directory.jpg", "directory", "refuse"))
    (out / "linked_valid.jpg").symlink_to("valid.jpg")
    rows.append(("linked_valid.jpg", "link to a valid image", "answer"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", type=int, default=12, help="Truncated and bit-flipped copies per format.")
    args = parser.parse_args()
    files = args.out / "files"
    files.mkdir(parents=True, exist_ok=False)
    rows = build(files, args.seed, args.variants)
    with open(args.out / "expected.csv", "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "kind", "expect"])
        writer.writerows(rows)
    print(f"{len(rows)} files in {files}")


if __name__ == "__main__":
    main()
