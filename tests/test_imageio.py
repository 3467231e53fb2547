import io

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from provenance.errors import ImageLoadError
from provenance.imageio import describe_source, is_image_path, load_image
from provenance.imagelimits import ImageLimits

from .conftest import synthetic_photo


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_sources_path_bytes_fileobj_pil_agree(tmp_path):
    photo = synthetic_photo(1)
    path = tmp_path / "a.png"
    photo.save(path)
    from_path = load_image(str(path))
    from_bytes = load_image(path.read_bytes())
    with open(path, "rb") as handle:
        from_file = load_image(handle)
    from_pil = load_image(photo)
    for loaded in (from_path, from_bytes, from_file, from_pil):
        assert loaded.image.mode == "RGB"
        assert np.array_equal(np.asarray(loaded.image), np.asarray(photo))
    assert from_path.sha256 == from_bytes.sha256 == from_file.sha256
    assert from_pil.sha256 is None


def test_rgba_is_composited_onto_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    loaded = load_image(_encode(rgba, "PNG")).image
    assert loaded.getpixel((1, 1)) == (255, 255, 255)
    assert loaded.getpixel((0, 0)) == (0, 0, 255)


def test_la_and_palette_with_transparency():
    la = Image.new("LA", (3, 3), (10, 0))
    assert load_image(_encode(la, "PNG")).image.getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (3, 3), 1)
    palette.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    assert load_image(_encode(palette, "PNG")).image.getpixel((1, 1)) == (200, 10, 10)
    palette.info["transparency"] = 1
    assert load_image(_encode(palette, "PNG", transparency=1)).image.getpixel((1, 1)) == (255, 255, 255)


def test_cmyk_sixteen_bit_and_bilevel():
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))
    red = load_image(_encode(cmyk, "JPEG", quality=95)).image.getpixel((1, 1))
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    sixteen = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).convert("I;16")
    assert load_image(_encode(sixteen, "PNG")).image.getpixel((0, 0)) == (255, 255, 255)
    half = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16)).convert("I;16")
    assert 120 <= load_image(_encode(half, "PNG")).image.getpixel((0, 0))[0] <= 135
    bilevel = Image.new("1", (4, 4), 1)
    assert load_image(_encode(bilevel, "PNG")).image.getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    photo = Image.new("RGB", (40, 20), (0, 0, 0))
    photo.paste((255, 0, 0), (0, 0, 10, 20))  # red strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: viewer must rotate 90 degrees clockwise
    loaded = load_image(_encode(photo, "JPEG", exif=exif, quality=95))
    assert loaded.image.size == (20, 40)
    assert loaded.original_size == (20, 40)
    top_left = loaded.image.getpixel((10, 2))
    assert top_left[0] > 200  # the left strip is now on top


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_gives_the_upright_pixels(orientation):
    upright = synthetic_photo(6, size=(48, 32))
    # what a camera stores for each tag: the inverse of the transform the viewer applies
    stored_for = {
        1: lambda im: im,
        2: lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        3: lambda im: im.transpose(Image.Transpose.ROTATE_180),
        4: lambda im: im.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
        5: lambda im: im.transpose(Image.Transpose.TRANSPOSE),
        6: lambda im: im.transpose(Image.Transpose.ROTATE_90),
        7: lambda im: im.transpose(Image.Transpose.TRANSVERSE),
        8: lambda im: im.transpose(Image.Transpose.ROTATE_270),
    }
    exif = Image.Exif()
    exif[0x0112] = orientation
    encoded = _encode(stored_for[orientation](upright), "PNG", exif=exif)
    loaded = load_image(encoded)
    assert loaded.image.size == upright.size
    assert np.array_equal(np.asarray(loaded.image), np.asarray(upright))


def test_first_frame_of_animation():
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    pixel = load_image(buffer.getvalue()).image.getpixel((4, 4))
    assert pixel[0] > 200 and pixel[2] < 50


def test_refuses_bombs_and_non_images(tmp_path):
    big = _encode(Image.new("RGB", (300, 300)), "PNG")
    with pytest.raises(ImageLoadError, match="pixels"):
        load_image(big, limits=ImageLimits(max_pixels=10_000))
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    with pytest.raises(ImageLoadError) as caught:
        load_image(str(text))
    assert caught.value.source == str(text) and "not an image" in caught.value.reason
    with pytest.raises(ImageLoadError, match="file not found"):
        load_image(str(tmp_path / "missing.jpg"))
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(b"")
    with pytest.raises(ImageLoadError, match="URL"):
        load_image("https://example.com/a.jpg")
    truncated = _encode(synthetic_photo(2), "JPEG")[:200]
    with pytest.raises(ImageLoadError):
        load_image(truncated)


def test_draft_decodes_large_jpeg_at_reduced_size():
    photo = synthetic_photo(3, size=(1600, 1200))
    loaded = load_image(_encode(photo, "JPEG", quality=90), target_size=224)
    assert 224 <= min(loaded.image.size) < 1200
    assert loaded.original_size == (1600, 1200)


def test_helpers():
    assert is_image_path("A.JPEG") and is_image_path("x/y.webp") and not is_image_path("a.txt")
    assert describe_source(b"abc") == "<3 bytes>"


@settings(max_examples=25, deadline=None)
@given(
    width=st.integers(1, 40),
    height=st.integers(1, 40),
    seed=st.integers(0, 2**16),
    fmt=st.sampled_from(["PNG", "BMP", "TIFF", "WEBP"]),
)
def test_lossless_round_trip(width, height, seed, fmt):
    array = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    encoded = _encode(Image.fromarray(array, "RGB"), fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    loaded = load_image(encoded)
    assert loaded.image.size == (width, height)
    assert np.array_equal(np.asarray(loaded.image), array)
