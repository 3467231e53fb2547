"""Bounded input: what is refused before decoding, and odd but valid images that are read."""

import io
import os
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from provenance.errors import ImageLoadError
from provenance.imageio import load_image
from provenance.imagelimits import ImageLimits, count_gif_frames, count_jpeg_scans

from .conftest import synthetic_photo


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def repeat_last_scan(jpeg: bytes, copies: int) -> bytes:
    """A progressive JPEG whose last scan is repeated: libjpeg warns and decodes every copy."""
    last_sos = jpeg.rfind(b"\xff\xda")
    body = jpeg[last_sos:-2]  # the last scan's header and entropy data, up to EOI
    return jpeg[:-2] + body * copies + b"\xff\xd9"


def test_a_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageLoadError, match="not a regular file \\(a FIFO\\)"):
        load_image(fifo)


def test_a_link_to_a_device_is_refused_without_reading(tmp_path):
    link = tmp_path / "zero.jpg"
    link.symlink_to("/dev/zero")
    with pytest.raises(ImageLoadError, match="character device"):
        load_image(link)


def test_files_over_the_byte_cap_are_refused_from_every_source(tmp_path):
    data = _encoded(synthetic_photo(1), "JPEG")
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    limits = ImageLimits(max_bytes=len(data) - 1)
    for source in (path, data, io.BytesIO(data)):
        with pytest.raises(ImageLoadError, match="limit of"):
            load_image(source, limits=limits)
    assert load_image(path, limits=ImageLimits(max_bytes=len(data))).image.size == (320, 240)


def test_a_jpeg_with_thousands_of_scans_is_refused_before_decoding():
    progressive = _encoded(synthetic_photo(2), "JPEG", progressive=True, quality=90)
    scans = count_jpeg_scans(progressive, 1000)
    assert 2 <= scans <= 20
    assert count_jpeg_scans(_encoded(synthetic_photo(2), "JPEG"), 1000) == 1
    assert load_image(progressive).image.size == (320, 240)
    bomb = repeat_last_scan(progressive, 5000)
    assert count_jpeg_scans(bomb, 100) == 101  # counting stops past the limit
    with pytest.raises(ImageLoadError, match="scans"):
        load_image(bomb)


def test_scan_counting_ignores_marker_bytes_inside_an_exif_thumbnail():
    thumbnail = _encoded(synthetic_photo(3, (64, 48)), "JPEG", progressive=True)
    exif = Image.Exif()
    exif[0x010E] = "x"
    photo = _encoded(synthetic_photo(4), "JPEG", exif=exif.tobytes() + thumbnail)
    assert count_jpeg_scans(photo, 1000) == 1


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=400))
def test_the_structure_checks_never_fail_on_garbage(tail):
    for head in (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a"):
        try:
            load_image(head + tail)
        except ImageLoadError:
            pass
    assert count_jpeg_scans(b"\xff\xd8" + tail, 10) >= 0 and count_gif_frames(b"GIF89a" + tail, 10) >= 0


def _png_with_interlace(method: int) -> bytes:
    data = bytearray(_encoded(synthetic_photo(5, (32, 24)), "PNG"))
    data[28] = method  # IHDR's last byte
    crc = zlib.crc32(bytes(data[12:29]))
    data[29:33] = struct.pack(">I", crc)
    return bytes(data)


def test_a_png_header_the_specification_forbids_is_refused():
    assert load_image(_png_with_interlace(0)).image.size == (32, 24)
    with pytest.raises(ImageLoadError, match="invalid PNG header"):
        load_image(_png_with_interlace(2))


def test_animation_frames_are_capped():
    frames = [synthetic_photo(seed, (40, 30)) for seed in range(5)]
    gif = _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    apng = _encoded(frames[0], "PNG", save_all=True, append_images=frames[1:])
    assert count_gif_frames(gif, 100) == 5
    for data in (gif, apng):
        assert load_image(data).image.size == (40, 30)
        with pytest.raises(ImageLoadError, match="frames"):
            load_image(data, limits=ImageLimits(max_frames=3))


def test_the_decode_time_budget_stops_a_decode():
    data = _encoded(synthetic_photo(6, (2000, 1500)), "PNG")
    with pytest.raises(ImageLoadError, match="time limit"):
        load_image(data, limits=ImageLimits(decode_seconds=1e-6))
    assert load_image(data).image.size == (2000, 1500)


def test_the_pixel_budget_is_checked_from_the_header():
    data = _encoded(Image.new("L", (4000, 3000)), "PNG")
    with pytest.raises(ImageLoadError, match="exceeds the limit of 10000000 pixels"):
        load_image(data, limits=ImageLimits(max_pixels=10_000_000))


def test_a_huge_image_decoded_for_a_target_is_reduced_and_keeps_its_orientation():
    image = Image.new("RGB", (7000, 4000), (200, 30, 30))
    image.paste((20, 20, 220), (0, 0, 3500, 4000))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    data = _encoded(image, "PNG", exif=exif.tobytes())
    loaded = load_image(data, target_size=512)
    assert loaded.original_size == (4000, 7000)
    width, height = loaded.image.size
    assert 512 <= width < 4000 and height > width
    top = np.asarray(loaded.image)[5, width // 2]
    assert top[2] > 150 and top[0] < 100  # the blue left half is now on top


def test_sixteen_bit_and_cmyk_images_are_converted_not_clipped():
    ramp = (np.arange(256 * 64, dtype=np.uint32).reshape(64, 256) * 4).astype(np.uint16)
    grey16 = _encoded(Image.fromarray(ramp), "PNG")
    pixels = np.asarray(load_image(grey16).image)[..., 0]
    assert pixels.max() >= 250 and pixels.min() <= 2 and len(np.unique(pixels)) > 200
    cmyk = Image.new("CMYK", (40, 30), (0, 255, 255, 0))  # pure red in print colours
    for fmt in ("JPEG", "TIFF"):
        red = np.asarray(load_image(_encoded(cmyk, fmt)).image).reshape(-1, 3).mean(axis=0)
        assert red[0] > 200 and red[1] < 60 and red[2] < 60, fmt


def test_heic_and_avif_photos_are_read():
    pytest.importorskip("pillow_heif")
    import pillow_heif

    pillow_heif.register_heif_opener()
    photo = synthetic_photo(7, (64, 48))
    for fmt in ("HEIF", "AVIF"):
        loaded = load_image(_encoded(photo, fmt, quality=90))
        assert loaded.image.size == (64, 48)
        difference = np.abs(np.asarray(loaded.image, dtype=float) - np.asarray(photo, dtype=float)).mean()
        assert difference < 20, fmt


def test_odd_file_names_are_read_as_names(tmp_path):
    data = _encoded(synthetic_photo(8), "JPEG")
    for name in ("-", "--help.jpg", "$(touch pwned).jpg", "a\nb.jpg"):
        (tmp_path / name).write_bytes(data)
        assert load_image(tmp_path / name).image.size == (320, 240)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("mode", ["I;16", "P", "1", "CMYK", "LA"])
def test_every_mode_of_a_huge_image_is_reduced_and_converted(mode):
    from provenance.imageio import REDUCE_ABOVE_PIXELS

    side = int(REDUCE_ABOVE_PIXELS**0.5) + 200
    if mode == "I;16":
        image = Image.fromarray(np.full((side, side), 40000, dtype=np.uint16))
        data = _encoded(image, "PNG", compress_level=1)
    else:
        image = Image.new("RGB", (side, side), (200, 40, 40)).convert(mode)
        data = _encoded(image, "TIFF" if mode == "CMYK" else "PNG", **({} if mode == "CMYK" else {"compress_level": 1}))
    loaded = load_image(data, target_size=512)
    assert 512 <= loaded.image.size[0] < side and loaded.image.mode == "RGB"
    if mode == "I;16":
        assert abs(int(np.asarray(loaded.image)[3, 3, 0]) - round(40000 / 257)) <= 1


def test_postscript_and_exotic_formats_are_never_parsed():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n0 0 moveto 10 10 lineto stroke\n%%EOF\n"
    fits = b"SIMPLE  =                    T" + b" " * 2850
    for data in (eps, fits):
        with pytest.raises(ImageLoadError, match="not an image in a supported format"):
            load_image(data)


def test_files_of_millions_of_tiny_segments_are_refused_quickly():
    import time

    from provenance.imagelimits import MAX_SEGMENTS

    jpeg = _encoded(synthetic_photo(9, (32, 24)), "JPEG")
    comments = b"\xff\xfe\x00\x02" * (MAX_SEGMENTS + 10)  # empty COM segments before the image
    gif = _encoded(synthetic_photo(9, (32, 24)).convert("P"), "GIF")
    blocks = b"\x21\xfe\x00" * (MAX_SEGMENTS + 10)  # empty comment extensions
    started = time.perf_counter()
    for data in (jpeg[:2] + comments + jpeg[2:], gif[:-1] + blocks + gif[-1:]):
        with pytest.raises(ImageLoadError, match="segments|blocks"):
            load_image(data)
    assert time.perf_counter() - started < 5
