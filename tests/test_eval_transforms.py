"""Transform families: valid RGB output, exact determinism per seed, variety across seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from provenance.evaluation.queries import Row, plan_queries
from provenance.evaluation.transforms import FAMILIES, apply_family, face_box, family_rng

REQUIRED = {
    "crop_mild", "crop_heavy", "avatar_circle", "color_filter", "grayscale", "jpeg_downscale", "mirror_crop",
    "rotate_small", "text_overlay", "emoji_stickers", "profile_post", "profile_avatar", "pad_border", "letterbox",
    "blur", "noise", "aspect_ratio", "combo",
}


def portrait(size=(250, 250), seed=0) -> Image.Image:
    """A synthetic 'portrait': textured background, a face-like ellipse near the centre."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1] // 10, size[0] // 10, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB").resize(size, Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.ellipse((w * 0.3, h * 0.2, w * 0.7, h * 0.75), fill=(224, 180, 150))
    draw.ellipse((w * 0.4, h * 0.38, w * 0.45, h * 0.43), fill=(30, 30, 30))
    draw.ellipse((w * 0.55, h * 0.38, w * 0.6, h * 0.43), fill=(30, 30, 30))
    return image


@pytest.fixture(scope="module")
def source() -> Image.Image:
    return portrait()


def run(name: str, image: Image.Image, seed: int, ref_index: int = 3):
    return apply_family(name, image, family_rng(seed, ref_index, name))


def test_registry_covers_the_required_families():
    assert REQUIRED <= set(FAMILIES)
    assert len(FAMILIES) >= 14


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_gives_valid_rgb_and_json_params(name, source):
    image, params = run(name, source, seed=0)
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    assert image.size[0] >= 16 and image.size[1] >= 16
    assert isinstance(params, dict)
    json.dumps(params)
    assert source.tobytes() == portrait().tobytes(), "the input image must not be modified"


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_is_deterministic_for_a_seed(name, source):
    first, params_a = run(name, source, seed=5)
    second, params_b = run(name, source.copy(), seed=5)
    assert first.size == second.size
    assert first.tobytes() == second.tobytes()
    assert params_a == params_b


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_varies_across_seeds(name, source):
    base, base_params = run(name, source, seed=0)
    others = [run(name, source, seed=seed) for seed in (1, 2, 3)]
    assert any(params != base_params for _, params in others)
    assert any(image.size != base.size or image.tobytes() != base.tobytes() for image, _ in others)


@pytest.mark.parametrize("size", [(250, 250), (500, 333), (240, 320), (60, 40)])
def test_families_handle_other_sizes(size):
    image = portrait(size)
    for name in FAMILIES:
        out, _ = run(name, image, seed=1)
        assert out.mode == "RGB" and min(out.size) >= 1


def test_rng_depends_on_seed_reference_and_family():
    draw = lambda *key: family_rng(*key).random()  # noqa: E731
    assert draw(0, 1, "blur") == draw(0, 1, "blur")
    assert len({draw(0, 1, "blur"), draw(1, 1, "blur"), draw(0, 2, "blur"), draw(0, 1, "noise")}) == 4


def test_face_box_stays_inside_the_image():
    assert face_box((250, 250), 0.25, 1.0, (0.5, 0.5)) == (62, 62, 187, 187)
    left, top, right, bottom = face_box((100, 80), 0.9, 1.5, (0.95, 0.05))
    assert 0 <= left < right <= 100 and 0 <= top < bottom <= 80


def test_unknown_family_is_refused(source):
    with pytest.raises(KeyError):
        apply_family("no_such_family", source, family_rng(0, 0, "x"))


def negatives(n_per_kind=5):
    kinds = ["general", "same_subject_other_photo", "unreferenced_person"]
    return [Row(f"n/{k}{i}.jpg", None, kind=k) for k in kinds for i in range(n_per_kind)]  # type: ignore[arg-type]


def test_default_plan_is_big_enough_and_reproducible():
    plan = plan_queries(2300, negatives(), list(FAMILIES), seed=0)
    positives = [spec for spec in plan if spec.positive]
    assert len(positives) >= 600
    assert len({spec.group for spec in positives}) >= 14
    assert len({spec.qid for spec in plan}) == len(plan)
    again = plan_queries(2300, negatives(), list(FAMILIES), seed=0)
    assert [s.qid for s in plan] == [s.qid for s in again]
    other = plan_queries(2300, negatives(), list(FAMILIES), seed=1)
    assert [s.qid for s in plan] != [s.qid for s in other]


def test_restricting_families_keeps_their_queries_and_limit_caps():
    full = plan_queries(500, negatives(), list(FAMILIES), seed=3)
    only = plan_queries(500, negatives(), ["blur", "combo"], seed=3)
    assert [s.qid for s in only if s.positive] == [s.qid for s in full if s.group in ("blur", "combo")]
    small = plan_queries(500, negatives(), ["blur"], seed=3, limit=2)
    assert sum(s.positive for s in small) == 2
    assert sum(not s.positive for s in small) == 6  # two per negative kind
