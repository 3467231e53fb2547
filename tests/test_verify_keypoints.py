"""Keypoint extraction and serialisation (provenance.verify.keypoints)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from provenance.verify.keypoints import (
    DESCRIPTOR_SIZES,
    Keypoints,
    extract_keypoints,
    extract_keypoints_with_mirror,
    spread_select,
)


def synthetic_photo(seed: int, size: tuple[int, int] = (480, 360)) -> Image.Image:
    """A deterministic, richly textured, asymmetric RGB "photo"."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack(
        [
            120 + 80 * np.sin(xx / rng.uniform(20, 60) + rng.uniform(0, 6)),
            120 + 80 * np.cos(yy / rng.uniform(20, 60) + rng.uniform(0, 6)),
            120 + 60 * np.sin((xx + yy) / rng.uniform(30, 90)),
        ],
        axis=-1,
    )
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(70):
        x0, y0 = rng.uniform(-20, w), rng.uniform(-20, h)
        x1, y1 = x0 + rng.uniform(8, w / 4), y0 + rng.uniform(8, h / 4)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = rng.integers(0, 3)
        if shape == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour, outline=(0, 0, 0))
        elif shape == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            pts = [(float(x0 + rng.uniform(0, 60)), float(y0 + rng.uniform(0, 60))) for _ in range(4)]
            draw.polygon(pts, fill=colour)
    for i in range(6):
        draw.text((float(rng.uniform(0, w - 80)), float(rng.uniform(0, h - 20))), f"TX{seed}-{i}", fill=(255, 255, 255))
    noise = rng.normal(0, 6, (h, w, 3))
    arr = np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr).filter(ImageFilter.GaussianBlur(0.6))


def test_extract_sift_basic_shapes_and_ranges():
    image = synthetic_photo(1)
    kp = extract_keypoints(image, max_keypoints=400)
    assert 200 <= len(kp) <= 400
    assert kp.xy.dtype == np.float32 and kp.xy.shape == (len(kp), 2)
    assert kp.descriptors.dtype == np.uint8 and kp.descriptors.shape == (len(kp), 128)
    assert (kp.width, kp.height, kp.method) == (480, 360, "sift")
    assert kp.xy[:, 0].min() >= -1 and kp.xy[:, 0].max() <= 480
    assert kp.xy[:, 1].min() >= -1 and kp.xy[:, 1].max() <= 360


def test_positions_are_in_original_pixels_whatever_the_working_size():
    small = synthetic_photo(2, (240, 180))
    big = small.resize((960, 720), Image.Resampling.BICUBIC)
    a = extract_keypoints(small)
    b = extract_keypoints(big)
    # Both are processed at the same working size, so positions agree after scaling.
    scaled = b.xy / 4.0
    dist = np.linalg.norm(a.xy[:, None, :] - scaled[None, :, :], axis=2).min(axis=1)
    assert np.median(dist) < 1.0


def test_small_images_are_upsampled_enough_to_find_keypoints():
    tiny = synthetic_photo(3, (96, 96))
    kp = extract_keypoints(tiny)
    assert len(kp) >= 60
    assert kp.xy.max() <= 96


def test_orb_extraction():
    kp = extract_keypoints(synthetic_photo(4), method="orb", max_keypoints=300)
    assert 100 <= len(kp) <= 300
    assert kp.descriptors.shape == (len(kp), 32)
    assert kp.method == "orb"


def test_unknown_method_rejected():
    with pytest.raises(ValueError):
        extract_keypoints(synthetic_photo(5), method="surf")


def test_flat_image_gives_no_keypoints():
    kp = extract_keypoints(Image.new("RGB", (200, 150), (128, 128, 128)))
    assert len(kp) == 0 and kp.descriptors.shape == (0, 128)
    assert Keypoints.from_bytes(kp.to_bytes()) == kp


def test_mirror_keypoints_are_in_mirrored_frame():
    image = synthetic_photo(6)
    plain, mirrored = extract_keypoints_with_mirror(image)
    direct = extract_keypoints(ImageOps.mirror(image))
    dist = np.linalg.norm(mirrored.xy[:, None, :] - direct.xy[None, :, :], axis=2).min(axis=1)
    # within a working pixel (the image pyramid samples the mirror image on another grid);
    # the wrong frame would put them hundreds of pixels apart
    assert np.median(dist) < 1.0
    assert plain == extract_keypoints(image)


def test_storage_size_is_compact():
    kp = extract_keypoints(synthetic_photo(7, (800, 600)), max_keypoints=500)
    assert len(kp) >= 150
    # 8 bytes of position + 128 of descriptor, before compression: 500 keypoints <= 70 KB.
    assert len(kp.to_bytes()) <= 20 + 136 * len(kp)


def test_spread_select_gives_every_cell_a_share():
    rng = np.random.default_rng(0)
    busy = rng.uniform(0, 100, (400, 2))  # one strong, busy corner cell
    quiet = rng.uniform(300, 400, (40, 2))  # a weak, quiet opposite corner
    xy = np.vstack([busy, quiet]).astype(np.float32)
    response = np.concatenate([rng.uniform(1, 2, 400), rng.uniform(0, 0.5, 40)])
    chosen = spread_select(xy, response, 400, 400, 64)
    assert len(chosen) == 64 and len(set(chosen.tolist())) == 64
    assert (chosen >= 400).sum() >= 16  # quiet cell gets its quota despite weak points
    assert spread_select(xy[:10], response[:10], 400, 400, 64).tolist() == list(np.argsort(-response[:10]))


@st.composite
def keypoint_sets(draw):
    method = draw(st.sampled_from(["sift", "orb"]))
    n = draw(st.integers(0, 40))
    dim = DESCRIPTOR_SIZES[method]
    coords = draw(st.lists(st.floats(-10, 5000, width=32), min_size=2 * n, max_size=2 * n))
    desc = draw(st.binary(min_size=n * dim, max_size=n * dim))
    width = draw(st.integers(1, 2**31))
    height = draw(st.integers(1, 2**31))
    xy = np.array(coords, dtype=np.float32).reshape(n, 2)
    return Keypoints(xy, np.frombuffer(desc, np.uint8).reshape(n, dim), width, height, method)


@settings(max_examples=60, deadline=None)
@given(keypoint_sets())
def test_serialisation_round_trip(kp):
    blob = kp.to_bytes()
    back = Keypoints.from_bytes(blob)
    assert back == kp
    assert back.xy.dtype == np.float32 and back.descriptors.dtype == np.uint8


@pytest.mark.parametrize("blob", [b"", b"PVKP", b"XXXX" + bytes(40), b"PVKP\x01\x01\x80\x00" + bytes(12) + b"junk"])
def test_from_bytes_rejects_garbage(blob):
    with pytest.raises(ValueError):
        Keypoints.from_bytes(blob)


def test_from_bytes_rejects_truncated_payload():
    blob = extract_keypoints(synthetic_photo(8)).to_bytes()
    with pytest.raises(ValueError):
        Keypoints.from_bytes(blob[:-10])


def test_mirrored_sift_descriptors_match_a_fresh_detection_on_the_mirror_image():
    """Permuted descriptors stand in for detecting again on the mirrored picture."""
    from provenance.verify.keypoints import mirror_keypoints

    image = synthetic_photo(5)
    plain = extract_keypoints(image)
    derived = mirror_keypoints(plain)
    unpermuted = Keypoints(derived.xy, plain.descriptors, plain.width, plain.height, "sift")
    detected = extract_keypoints(ImageOps.mirror(image))
    assert derived.xy[:, 0].max() <= image.width - 1 + 1e-3
    assert _nearest_descriptor_agreement(derived, detected) > 0.6
    assert _nearest_descriptor_agreement(unpermuted, detected) < 0.3
    with pytest.raises(ValueError):
        mirror_keypoints(Keypoints(derived.xy, np.zeros((len(derived), 32), np.uint8), 10, 10, "orb"))


def _nearest_descriptor_agreement(candidate: Keypoints, detected: Keypoints) -> float:
    """Share of co-located keypoints (within a pixel) whose nearest descriptor in ``candidate``
    sits on the same spot."""
    agree = total = 0
    for point, descriptor in zip(detected.xy, detected.descriptors.astype(np.float32)):
        distance = np.linalg.norm(candidate.xy - point, axis=1)
        if distance.min() > 1.0:
            continue
        total += 1
        closest = np.argmin(np.linalg.norm(candidate.descriptors.astype(np.float32) - descriptor, axis=1))
        agree += int(distance[closest] <= 1.0)
    assert total > 50
    return agree / total
