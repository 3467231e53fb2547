"""Caption bands: found over a photo, their letters' keypoints left out of the votes."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from provenance.verify.captions import band_edges, caption_bands, outside_bands
from provenance.verify.keypoints import extract_keypoints

from .conftest import synthetic_photo


def _captioned(photo: Image.Image, top: int, height: int, opacity: float, text: str) -> Image.Image:
    """``photo`` under a full-width band of flat colour at ``opacity``, with a line of text."""
    band = Image.new("RGB", (photo.width, height), (190, 40, 120))
    out = photo.copy()
    out.paste(Image.blend(photo.crop((0, top, photo.width, top + height)), band, opacity), (0, top))
    ImageDraw.Draw(out).text((8, top + height // 6), text, fill=(255, 255, 255), font=ImageFont.load_default(size=height * 2 // 3))
    return out


def _smooth_photo(seed: int, size=(320, 320)) -> Image.Image:
    """A photo whose detail is spread out, as a portrait's is (not a page of shapes)."""
    return synthetic_photo(seed, size=(size[0] // 2, size[1] // 2)).resize(size, Image.Resampling.BICUBIC)


def test_a_semi_transparent_caption_band_is_found_and_its_keypoints_left_out():
    photo = _smooth_photo(3)
    copy = _captioned(photo, 230, 40, 0.7, "DM me  cash app only  $$$")
    keypoints = extract_keypoints(copy)
    bands = caption_bands(copy, keypoints)
    assert len(bands) == 1, bands
    top, bottom = bands[0]
    assert 226 <= top <= 234 and 262 <= bottom <= 274, bands
    kept = outside_bands(keypoints, bands)
    assert 0 < len(kept) < len(keypoints)
    assert not np.any((kept.xy[:, 1] >= top) & (kept.xy[:, 1] < bottom))
    assert kept.width == keypoints.width and kept.descriptors.shape[1] == keypoints.descriptors.shape[1]


def test_a_band_at_the_top_is_bounded_by_the_picture_itself():
    copy = _captioned(_smooth_photo(4), 0, 36, 0.85, "Available tonight  DM")
    bands = caption_bands(copy, extract_keypoints(copy))
    assert len(bands) == 1 and bands[0][0] == 0 and 30 <= bands[0][1] <= 40, bands


def test_a_photo_without_captions_has_no_band():
    for seed in range(3):
        photo = _smooth_photo(10 + seed)
        assert caption_bands(photo, extract_keypoints(photo)) == []


def test_a_flat_banner_is_an_edge_but_not_a_caption():
    photo = _smooth_photo(5)
    ImageDraw.Draw(photo).rectangle((0, 240, 319, 279), fill=(20, 20, 20))
    assert any(abs(edge - 240) <= 2 for edge in band_edges(photo))
    assert caption_bands(photo, extract_keypoints(photo)) == []  # no letters: nothing to leave out
