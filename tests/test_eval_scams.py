"""The issue-#23 families (tiny avatars, screen photos, beauty filters, stories) keep their threat model's ranges."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from provenance.evaluation.families import FAMILIES, apply_family, family_rng
from provenance.evaluation.queries import plan_queries, relabel, Row
from provenance.evaluation.scams import _projected_corners

from tests.test_eval_transforms import portrait

NEW = ("avatar_tiny", "screen_photo", "beauty_filter", "story_post")
SEEDS = range(12)


def run(name: str, seed: int, size=(250, 250)):
    return apply_family(name, portrait(size, seed), family_rng(seed, 7, name))


def test_new_families_are_registered_beside_the_old():
    assert set(NEW) <= set(FAMILIES)
    assert {"avatar_small", "combo_caption", "profile_screenshot"} <= set(FAMILIES)


@pytest.mark.parametrize("seed", SEEDS)
def test_tiny_avatar_is_served_small_and_upscaled_by_the_screenshot(seed):
    image, params = run("avatar_tiny", seed)
    assert 32 <= params["served"] <= 64
    assert 1.5 <= params["scale"] <= 3.0
    assert params["shown"] == max(8, round(params["served"] * params["scale"]))
    assert image.size[1] > params["shown"] and image.size[0] >= 4 * params["shown"] - 1  # a row, not the avatar alone
    x, y = params["avatar_xy"]
    avatar = np.asarray(image.crop((x, y, x + params["shown"], y + params["shown"])), np.float32)
    # upscaled from a tiny image: neighbouring pixels are strongly correlated
    rows = avatar[:, :-1].ravel() - avatar[:, 1:].ravel()
    assert np.abs(rows).mean() < 12


@pytest.mark.parametrize("seed", SEEDS)
def test_screen_photo_is_a_tilted_view_with_background(seed):
    image, params = run("screen_photo", seed)
    assert 5 <= abs(params["yaw"]) <= 20 and abs(params["pitch"]) <= 12 and abs(params["roll"]) <= 5
    assert 480 <= max(image.size) <= 1024
    assert 0.08 <= params["margin"] <= 0.3
    assert 60 <= params["quality"] <= 90


def test_projected_corners_foreshorten_the_far_side():
    corners = _projected_corners(400, 300, yaw=20, pitch=0, roll=0)
    left = corners[3, 1] - corners[0, 1]
    right = corners[2, 1] - corners[1, 1]
    # the edge turned towards the camera (2x the width away) looks taller by the ratio of distances
    offset = 200 * np.sin(np.radians(20))
    assert right / left == pytest.approx((800 + offset) / (800 - offset), rel=1e-9)
    flat = _projected_corners(400, 300, yaw=0, pitch=0, roll=0)
    np.testing.assert_allclose(flat, [[-200, -150], [200, -150], [200, 150], [-200, 150]], atol=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_beauty_filter_smooths_brightens_and_keeps_the_frame(seed):
    source = portrait((250, 250), seed)
    image, params = apply_family("beauty_filter", source, family_rng(seed, 7, "beauty_filter"))
    assert image.size == source.size
    assert 0.02 <= params["slim"] <= 0.06 and 0.04 <= params["eye_scale"] <= 0.1
    centre = (slice(100, 150), slice(100, 150))
    before = np.asarray(source.convert("L"), np.float32)[centre]
    after = np.asarray(image.convert("L"), np.float32)[centre]
    assert after.mean() > before.mean()  # brighter where the face is (the vignette darkens the corners)


@pytest.mark.parametrize("seed", SEEDS)
def test_story_is_nine_by_sixteen_or_a_four_by_five_feed_post(seed):
    image, params = run("story_post", seed)
    width, height = image.size
    if params["layout"] == "story":
        assert abs(height / width - 16 / 9) < 0.01
        assert params["fit"] in ("letterbox", "fill")
    else:
        assert params["layout"] == "feed" and height > width * 5 / 4


def test_same_shoot_kind_relabels_and_is_planned_as_its_own_kind(tmp_path):
    negatives = [Row(f"n{i}.jpg", tmp_path / f"n{i}.jpg", kind="same_subject_other_photo") for i in range(4)]
    relabelled = relabel(negatives, [Row("n1.jpg", tmp_path / "n1.jpg", kind="same_shoot")])
    plan = plan_queries(10, relabelled, ["story_post"], seed=0, per_family=2)
    kinds = sorted(spec.group for spec in plan if not spec.positive)
    assert kinds == ["same_shoot", "same_subject_other_photo", "same_subject_other_photo", "same_subject_other_photo"]
    with pytest.raises(Exception):
        relabel(negatives, [Row("missing.jpg", tmp_path / "missing.jpg", kind="same_shoot")])


def test_shipped_same_shoot_pairs_name_one_subject():
    import csv
    from pathlib import Path

    with open(Path(__file__).parents[1] / "scripts" / "data" / "same_shoot.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) >= 20
    for row in rows:
        assert row["kind"] == "same_shoot" and row["path"].startswith("negatives/")
        assert Path(row["ref"]).stem.rsplit("_", 1)[0] == row["subject"].replace(" ", "_")
