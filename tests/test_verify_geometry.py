"""Geometric verification (provenance.verify.geometry) on generated images."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from provenance.verify.geometry import Thresholds, verify_pair, verify_with_mirror
from provenance.verify.keypoints import extract_keypoints, extract_keypoints_with_mirror

from .test_verify_keypoints import synthetic_photo

REF_SIZE = (480, 360)


@pytest.fixture(scope="module")
def reference():
    image = synthetic_photo(11, REF_SIZE)
    return image, extract_keypoints(image)


def _jpeg(image: Image.Image, quality: int = 75) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def _assert_box_close(box, expected, tolerance=0.03):
    """Each edge within ``tolerance`` of the reference's size."""
    limits = [REF_SIZE[0], REF_SIZE[1]] * 2
    for got, want, size in zip(box, expected, limits):
        assert abs(got - want) <= tolerance * size, (box, expected)


@pytest.mark.parametrize(
    "window, resize",
    [
        ((48, 36, 432, 324), 1.0),  # 80 % centre crop
        ((0, 0, 288, 216), 1.6),  # 60 % corner crop, upscaled
        ((150, 60, 470, 300), 0.5),  # off-centre crop, shrunk
    ],
)
def test_crop_is_verified_with_its_window(reference, window, resize):
    image, ref_kp = reference
    crop = image.crop(window)
    crop = _jpeg(crop.resize((round(crop.width * resize), round(crop.height * resize)), Image.Resampling.LANCZOS))
    result = verify_pair(extract_keypoints(crop), ref_kp)
    assert result.verified and result.model == "similarity" and not result.mirrored
    assert result.inliers >= 40
    _assert_box_close(result.box, window)
    assert result.scale == pytest.approx(resize, rel=0.05)
    assert abs(result.rotation_deg) < 1.0
    area = (window[2] - window[0]) * (window[3] - window[1]) / (REF_SIZE[0] * REF_SIZE[1])
    assert result.coverage == pytest.approx(area, abs=0.04)
    # The transform maps the query's corners onto the window's corners.
    matrix = np.array(result.transform).reshape(2, 3)
    corner = matrix @ np.array([crop.width, crop.height, 1.0])
    assert np.allclose(corner, window[2:], atol=0.03 * REF_SIZE[0])


def test_text_overlay_copy_is_verified(reference):
    image, ref_kp = reference
    meme = image.copy()
    draw = ImageDraw.Draw(meme)
    draw.rectangle((0, 0, 480, 50), fill=(255, 255, 255))
    draw.text((20, 15), "WHEN THE CODE COMPILES", fill=(0, 0, 0))
    result = verify_pair(extract_keypoints(_jpeg(meme, 60)), ref_kp)
    assert result.verified
    _assert_box_close(result.box, (0, 0, *REF_SIZE))


def test_mirrored_copy_is_found_and_reported_as_mirrored(reference):
    image, ref_kp = reference
    window = (60, 40, 400, 320)
    query = _jpeg(ImageOps.mirror(image.crop(window)))
    plain_kp, mirrored_kp = extract_keypoints_with_mirror(query)
    plain = verify_pair(plain_kp, ref_kp)
    result = verify_with_mirror(plain_kp, mirrored_kp, ref_kp)
    assert result.verified and result.mirrored
    assert result.inliers > 3 * max(plain.inliers, 1)
    _assert_box_close(result.box, window)
    # The reported transform maps the *unmirrored* query: its top-left corner lands on
    # the window's top-right corner.
    matrix = np.array(result.transform).reshape(2, 3)
    assert np.allclose(matrix @ np.array([0.0, 0.0, 1.0]), (window[2], window[1]), atol=0.03 * REF_SIZE[0])


def test_unmirrored_copy_is_not_reported_as_mirrored(reference):
    image, ref_kp = reference
    plain_kp, mirrored_kp = extract_keypoints_with_mirror(_jpeg(image))
    result = verify_with_mirror(plain_kp, mirrored_kp, ref_kp)
    assert result.verified and not result.mirrored


@pytest.mark.parametrize("angle", [12.0, -25.0, 90.0])
def test_rotation_is_measured_counter_clockwise(reference, angle):
    image, ref_kp = reference
    rotated = image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    result = verify_pair(extract_keypoints(_jpeg(rotated)), ref_kp)
    assert result.verified
    assert result.rotation_deg == pytest.approx(angle, abs=1.0)
    assert result.scale == pytest.approx(1.0, rel=0.03)
    _assert_box_close(result.box, (0, 0, *REF_SIZE))


def test_aspect_ratio_change_is_verified(reference):
    image, ref_kp = reference
    squashed = _jpeg(image.resize((480, 250), Image.Resampling.LANCZOS))
    result = verify_pair(extract_keypoints(squashed), ref_kp)
    assert result.verified and result.model in ("stretch", "affine")
    _assert_box_close(result.box, (0, 0, *REF_SIZE))


def test_small_avatar_copy_is_verified(reference):
    image, ref_kp = reference
    avatar = _jpeg(image.crop((120, 60, 420, 360)).resize((128, 128), Image.Resampling.LANCZOS), 80)
    result = verify_pair(extract_keypoints(avatar), ref_kp)
    assert result.verified
    _assert_box_close(result.box, (120, 60, 420, 360), tolerance=0.04)


def test_orb_keypoints_verify_a_crop():
    image = synthetic_photo(12, REF_SIZE)
    ref_kp = extract_keypoints(image, method="orb")
    query = _jpeg(image.crop((40, 30, 440, 330)))
    result = verify_pair(extract_keypoints(query, method="orb"), ref_kp)
    assert result.verified
    _assert_box_close(result.box, (40, 30, 440, 330))


def test_different_generated_images_never_verify():
    seeds = [21, 22, 23, 24, 25]
    keypoints = {}
    for seed in seeds:
        keypoints[seed] = extract_keypoints_with_mirror(synthetic_photo(seed, REF_SIZE))
    for a, b in itertools.permutations(seeds, 2):
        plain, mirrored = keypoints[a]
        result = verify_with_mirror(plain, mirrored, keypoints[b][0])
        assert not result.verified, (a, b, result)
        assert result.inliers < 10


def test_same_scene_with_moved_subject_is_not_a_copy():
    """Two shots of one scene: the camera panned and the (rigid) subject moved."""
    scene = synthetic_photo(31, (560, 420))
    subject = synthetic_photo(32, (200, 240))
    first = scene.crop((0, 0, 480, 360))
    first.paste(subject, (120, 60))
    second = scene.crop((30, 20, 510, 380))
    second.paste(subject.rotate(4, resample=Image.Resampling.BICUBIC), (190, 90))
    plain, mirrored = extract_keypoints_with_mirror(_jpeg(second))
    result = verify_with_mirror(plain, mirrored, extract_keypoints(first))
    assert result.inliers >= 30  # the backdrop does line up ...
    assert result.second_motion >= 15  # ... and so does the subject, elsewhere
    assert not result.verified


def test_flat_query_and_method_mismatch(reference):
    _, ref_kp = reference
    flat = extract_keypoints(Image.new("RGB", (300, 200), (10, 20, 30)))
    result = verify_pair(flat, ref_kp)
    assert not result.verified and result.model == "none" and result.box is None
    orb = extract_keypoints(synthetic_photo(13), method="orb")
    with pytest.raises(ValueError):
        verify_pair(orb, ref_kp)


def test_thresholds_are_respected(reference):
    image, ref_kp = reference
    query_kp = extract_keypoints(_jpeg(image.crop((100, 80, 380, 280))))
    default = verify_pair(query_kp, ref_kp, models=("similarity",))
    strict = verify_pair(query_kp, ref_kp, thresholds=Thresholds(min_inliers=default.inliers + 1), models=("similarity",))
    assert default.verified and not strict.verified


def test_the_inlier_bar_follows_a_reference_with_few_keypoints():
    bar = Thresholds()
    assert [bar.required_inliers(n) for n in (300, 100, 99, 80, 40, 0)] == [15, 15, 15, 12, 10, 10]
    assert Thresholds(min_inliers=5).required_inliers(40) == 5  # a looser bar is never raised
    # the fewer keypoints of the two sides set it: a 32-64 px avatar's view has few
    assert [bar.required_inliers(300, n) for n in (None, 300, 100, 80, 40)] == [15, 15, 15, 12, 10]
    assert bar.required_inliers(40, 300) == bar.required_inliers(300, 40) == 10


def test_a_crop_of_a_smooth_photo_verifies_on_its_few_keypoints(reference):
    from provenance.verify.keypoints import Keypoints

    image, ref_kp = reference
    # a smooth photo's reference: only its first 40 (spread-selected) keypoints
    smooth = Keypoints(ref_kp.xy[:40], ref_kp.descriptors[:40], ref_kp.width, ref_kp.height, ref_kp.method)
    query_kp = extract_keypoints(_jpeg(image.crop((48, 36, 432, 324))))
    result = verify_pair(query_kp, smooth)
    assert 10 <= result.inliers < 15 and result.verified
    assert not verify_pair(query_kp, smooth, thresholds=Thresholds(full_bar_keypoints=0)).verified  # the full bar
    assert not verify_pair(extract_keypoints(synthetic_photo(13)), smooth).verified


def test_a_small_view_with_few_keypoints_verifies_on_them(reference):
    from provenance.verify.keypoints import Keypoints

    image, ref_kp = reference
    crop = extract_keypoints(_jpeg(image.crop((48, 36, 432, 324))))
    # a tiny avatar's view: only its first 40 (spread-selected) keypoints
    tiny = Keypoints(crop.xy[:40], crop.descriptors[:40], crop.width, crop.height, crop.method)
    result = verify_pair(tiny, ref_kp, small_query=True)
    assert 10 <= result.inliers < 15 and result.verified and result.inlier_ratio >= Thresholds().clean_ratio
    assert 0 < result.inlier_spread <= Thresholds().max_small_spread
    # a larger picture with few keypoints (a smooth one, a face alone) keeps the full bar
    assert not verify_pair(tiny, ref_kp).verified
    assert not verify_pair(tiny, ref_kp, small_query=True, thresholds=Thresholds(full_bar_keypoints=0)).verified
    other = extract_keypoints(synthetic_photo(13))
    few = Keypoints(other.xy[:40], other.descriptors[:40], other.width, other.height, other.method)
    assert not verify_pair(few, ref_kp, small_query=True).verified


def test_below_the_references_bar_only_a_clean_match_passes():
    from provenance.verify.geometry import _passes

    bar = Thresholds()
    stats = dict(inliers=12, near_misses=1, hull_fraction=0.3, second_motion=0)
    # another photo of the same face as a round avatar: 10-13 landmarks, mostly at ratios
    # 0.67-0.80, spread over the tolerance
    assert not _passes(bar, "similarity", 10, 15, inlier_ratio=0.75, inlier_spread=0.3, **stats)
    assert not _passes(bar, "similarity", 10, 15, inlier_ratio=0.9, inlier_spread=0.55, **stats)
    assert _passes(bar, "similarity", 10, 15, inlier_ratio=0.9, inlier_spread=0.3, **stats)
    # a reference with few keypoints lowers the bar by itself
    assert _passes(bar, "similarity", 10, 10, inlier_ratio=0.75, inlier_spread=0.55, **stats)


def test_a_shared_logo_on_two_different_photos_is_not_a_copy():
    from provenance.verify.geometry import verify_with_mirror
    from provenance.verify.keypoints import extract_keypoints, extract_keypoints_with_mirror

    from .conftest import synthetic_photo

    logo = synthetic_photo(50, size=(70, 50))
    for size in ((320, 240), (250, 250)):
        reference, other = synthetic_photo(1, size=size), synthetic_photo(2, size=size)
        reference.paste(logo, (20, 20))
        other.paste(logo, (150, 120))
        plain, mirrored = extract_keypoints_with_mirror(other)
        outcome = verify_with_mirror(plain, mirrored, extract_keypoints(reference))
        assert outcome.inliers >= 15  # the logo itself matches...
        assert not outcome.verified  # ...but it is not the photo


def test_a_copy_under_stickers_and_a_caption_band_still_verifies():
    from PIL import ImageDraw

    from provenance.verify.geometry import verify_with_mirror
    from provenance.verify.keypoints import extract_keypoints, extract_keypoints_with_mirror

    from .conftest import synthetic_photo

    reference = synthetic_photo(3, size=(320, 320))
    copy = reference.crop((30, 20, 300, 300)).resize((400, 415))
    for number, xy in enumerate(((40, 60), (250, 200), (150, 300))):
        copy.paste(synthetic_photo(60 + number, size=(90, 90)), xy)
    ImageDraw.Draw(copy).rectangle((0, 340, 400, 400), fill=(220, 40, 90))
    plain, mirrored = extract_keypoints_with_mirror(copy)
    outcome = verify_with_mirror(plain, mirrored, extract_keypoints(reference))
    assert outcome.verified and outcome.box is not None


def test_query_inside_is_the_share_of_the_query_that_lands_in_the_reference():
    from .conftest import synthetic_photo as photo

    source = photo(21, size=(480, 320))
    reference = source.crop((0, 0, 300, 320))
    inside = source.crop((20, 20, 280, 300))  # a crop of the reference
    straddling = source.crop((150, 20, 450, 300))  # half of it is outside the reference
    r = extract_keypoints(reference)
    crop = verify_with_mirror(*extract_keypoints_with_mirror(inside), r)
    other = verify_with_mirror(*extract_keypoints_with_mirror(straddling), r)
    assert crop.verified and other.verified
    assert crop.query_inside > 0.95
    assert 0.35 < other.query_inside < 0.65


def _seen_at_an_angle(image: Image.Image, squeeze: float) -> tuple[Image.Image, np.ndarray]:
    """``image`` as a camera sees it turned about its vertical axis: the right edge
    ``squeeze`` of the left one's height, on a grey background; also the 3x3 matrix
    mapping the result's pixels back onto ``image``'s."""
    import cv2

    w, h = image.size
    margin = 40
    shrink = (1 - squeeze) * h / 2
    target = np.float32([[margin, margin], [margin + w * 0.8, margin + shrink],
                         [margin + w * 0.8, margin + h - shrink], [margin, margin + h]])
    source = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    forward = cv2.getPerspectiveTransform(source, target)
    size = (round(margin * 2 + w * 0.8), h + 2 * margin)
    warped = cv2.warpPerspective(np.asarray(image), forward, size, borderValue=(128, 128, 128))
    return Image.fromarray(warped), np.linalg.inv(forward)


def test_a_photo_of_a_screen_is_verified_by_a_bounded_perspective(reference):
    image, ref_kp = reference
    query, back = _seen_at_an_angle(image, 0.7)
    query_kp = extract_keypoints(_jpeg(query, 85))
    affine_only = verify_pair(query_kp, ref_kp, models=("similarity", "stretch", "affine"))
    result = verify_pair(query_kp, ref_kp)
    assert not affine_only.verified
    assert result.verified and result.model == "perspective" and result.inlier_ratio >= 0.85
    # the box is where the query's frame lands: the whole reference (the margin falls outside it)
    _assert_box_close(result.box, (0, 0, *REF_SIZE), tolerance=0.02)
    # the reported local affine map agrees with the true one at the query's centre
    from provenance.verify.perspective import local_affine

    truth = local_affine(back, (query.width / 2, query.height / 2))
    np.testing.assert_allclose(np.reshape(result.transform, (2, 3)), truth, rtol=0.08, atol=4.0)


def test_perspective_fits_must_look_like_a_plane():
    from provenance.verify.perspective import fit_perspective, jacobian, local_affine, project

    rng = np.random.default_rng(3)
    src = rng.uniform(0, 500, size=(60, 2)).astype(np.float32)
    tilt = np.array([[1.0, 0.05, 10.0], [0.02, 0.9, 5.0], [4e-4, 1e-4, 1.0]])
    dst = project(tilt, src).astype(np.float32)
    fitted = fit_perspective(src, dst, 2.0, 2000, 0.995, lambda linear: True)
    assert fitted is not None and fitted[1].all()
    np.testing.assert_allclose(project(fitted[0], src), dst, atol=0.05)
    # the same points seen so steeply that the far side's scale is 1/5 of the near one's
    steep = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [3e-3, 0.0, 1.0]])
    assert fit_perspective(src, project(steep, src).astype(np.float32), 2.0, 2000, 0.995, lambda linear: True) is None
    # an affine matrix is its own local affine map, and its Jacobian its linear part
    affine = np.array([[1.2, 0.1, 3.0], [-0.1, 0.8, 7.0]])
    np.testing.assert_allclose(local_affine(affine, (100.0, 50.0)), affine, atol=1e-12)
    np.testing.assert_allclose(jacobian(affine, (10.0, 20.0)), affine[:, :2], atol=1e-12)


def _logo(size: tuple[int, int], seed: int = 5) -> Image.Image:
    """A busy, non-periodic badge: dots and squares on white."""
    rng = np.random.default_rng(seed)
    logo = Image.new("RGB", size, (250, 250, 250))
    draw = ImageDraw.Draw(logo)
    for _ in range(40):
        x, y, r = int(rng.integers(0, size[0])), int(rng.integers(0, size[1])), int(rng.integers(2, 8))
        colour = tuple(int(v) for v in rng.integers(0, 160, 3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)((x - r, y - r, x + r, y + r), fill=colour)
    return logo


def test_a_shared_logo_alone_is_not_a_copy():
    """Two different photos that share only a sticker-sized badge (a cap's logo): the
    keypoints on it agree, but the evidence spans a sliver of both pictures."""
    from provenance.verify.geometry import REFUSED_COMPACT

    badge = _logo((70, 56))  # 2.3 % of the picture
    photo = synthetic_photo(11, REF_SIZE)
    photo.paste(badge, (300, 80))
    other = synthetic_photo(29, REF_SIZE)
    other.paste(badge, (60, 220))
    ref_kp, query_kp = extract_keypoints(photo), extract_keypoints(_jpeg(other, 90))
    permissive = verify_pair(query_kp, ref_kp, thresholds=Thresholds(min_support=0.0))
    assert permissive.verified and permissive.refusal is None, "the badge alone must pass the other rules for this test to mean anything"
    result = verify_pair(query_kp, ref_kp)
    assert not result.verified and result.refusal == REFUSED_COMPACT
    assert result.support < 0.025 and result.inliers == permissive.inliers
    # a tight crop around the badge of the photo itself is a copy: it spans most of the query
    crop = verify_pair(extract_keypoints(_jpeg(photo.crop((260, 50, 410, 170)).resize((300, 240)), 90)), ref_kp)
    assert crop.verified and crop.support > 0.3 and crop.refusal is None
