from PIL import Image, ImageDraw, ImageOps

from provenance.regions import DEFAULT_REGIONS, content_box, crop_fraction, photo_boxes, query_views

from .conftest import synthetic_photo


def _textured(seed: int, size: tuple[int, int]) -> Image.Image:
    """A synthetic photo with sensor-like noise everywhere (real photos are never flat)."""
    import numpy as np

    array = np.asarray(synthetic_photo(seed, size=size), dtype=np.float32)
    noise = np.random.default_rng(seed).normal(0, 5, size=array.shape)
    return Image.fromarray(np.clip(array + noise, 0, 255).astype(np.uint8), "RGB")


def _padded(photo: Image.Image, pad: tuple[int, int, int, int], colour=(30, 120, 200)) -> Image.Image:
    left, top, right, bottom = pad
    canvas = Image.new("RGB", (photo.width + left + right, photo.height + top + bottom), colour)
    canvas.paste(photo, (left, top))
    return canvas


def test_content_box_strips_uniform_padding_and_letterbox():
    photo = synthetic_photo(1, size=(300, 200))
    box = content_box(_padded(photo, (40, 30, 60, 20)))
    assert box is not None
    assert abs(box[0] - 40) <= 6 and abs(box[1] - 30) <= 6 and abs(box[2] - 340) <= 6 and abs(box[3] - 230) <= 6
    letterboxed = _padded(photo, (0, 80, 0, 80), colour=(0, 0, 0))
    box = content_box(letterboxed)
    assert box is not None and abs(box[1] - 80) <= 6 and abs(box[3] - 280) <= 6


def test_content_box_leaves_borderless_photos_alone():
    assert content_box(synthetic_photo(2)) is None


def _page_with_a_photo() -> Image.Image:
    """A 600 x 800 page: a banner, lines of text and a 400 x 300 photo at (100, 150)."""
    page = Image.new("RGB", (600, 800), (245, 245, 245))
    draw = ImageDraw.Draw(page)
    draw.rectangle([0, 0, 600, 60], fill=(30, 144, 255))
    for line in range(6):
        draw.text((40, 560 + 30 * line), "@handle  1,234 likes  DM for rates", fill=(20, 20, 20))
    page.paste(_textured(3, (400, 300)), (100, 150))
    return page


def test_photo_boxes_find_a_photo_on_a_page_with_text():
    page = _page_with_a_photo()
    boxes = photo_boxes(page)
    assert boxes, "the photo was not found"
    x0, y0, x1, y1 = boxes[0]
    inter = max(0, min(x1, 500) - max(x0, 100)) * max(0, min(y1, 450) - max(y0, 150))
    union = (x1 - x0) * (y1 - y0) + 400 * 300 - inter
    assert inter / union >= 0.6
    assert all(not (y0 < 560 + 30 * line < y1 and x1 - x0 > 500) for line in range(6))


def test_query_views_include_mirrors_and_avatar_inner_square():
    page = Image.new("RGB", (500, 500), (250, 250, 250))
    page.paste(_textured(4, (200, 200)), (150, 150))
    views = query_views(page)
    names = [view.name for view in views]
    assert names[0] == "full" and "full+mirror" in names and "photo0-inner" in names
    mirrored = next(view for view in views if view.name == "full+mirror")
    assert mirrored.mirrored and mirrored.image.tobytes() == ImageOps.mirror(page).tobytes()
    assert [view.name for view in query_views(page, mirror=False, strip=False, photos=False, disc=False, circles=False)] == ["full"]


def test_crop_fraction_and_default_regions():
    photo = synthetic_photo(5, size=(200, 100))
    assert crop_fraction(photo, (0.0, 0.0, 1.0, 1.0)) is photo
    assert crop_fraction(photo, (0.25, 0.5, 0.75, 1.0)).size == (100, 50)
    assert DEFAULT_REGIONS[0] == (0.0, 0.0, 1.0, 1.0)


def _round_avatar(photo: Image.Image, size: int, fill: float, background) -> Image.Image:
    from provenance.evaluation.profile import circle_mask

    canvas = Image.new("RGB", (size, size), background) if isinstance(background, tuple) else background.resize((size, size))
    diameter = round(size * fill)
    offset = (size - diameter) // 2
    canvas.paste(photo.resize((diameter, diameter)), (offset, offset), circle_mask(diameter))
    return canvas


def test_disc_square_finds_the_photo_inside_a_round_avatar():
    from PIL import ImageFilter

    from provenance.avatars import disc_square

    photo = _textured(6, (300, 300))
    blurred = photo.filter(ImageFilter.GaussianBlur(20))
    for fill, background in ((1.0, (240, 200, 210)), (0.9, blurred), (0.7, (20, 20, 20))):
        avatar = _round_avatar(photo, 256, fill, background)
        box = disc_square(avatar)
        assert box is not None, (fill, background)
        side = box[2] - box[0]
        # the square lies inside the disc (corners within its radius) and keeps most of it
        radius = 128 * fill
        assert (side / 2) * 2**0.5 <= radius + 3 and side >= 0.55 * radius * 2**0.5, (fill, side)
    assert disc_square(photo) is None  # a plain photo has detail in its corners
    assert disc_square(_textured(7, (400, 200))) is None  # not square


def test_region_specs_round_trip_and_subject_squares_follow_the_face():
    import pytest

    from provenance.faces import Face
    from provenance.regions import PRIOR_FACE, SubjectSquare, region_images, spec_from_json, spec_to_json, subject_box

    for spec in DEFAULT_REGIONS:
        assert spec_from_json(spec_to_json(spec)) == spec
    with pytest.raises(ValueError):
        spec_from_json([0.5, 0.5, 0.4, 1.0])
    face = Face(300, 100, 400, 200)
    assert subject_box((800, 600), face, 2.0) == (250, 50, 450, 250)
    assert subject_box((800, 600), Face(0, 0, 100, 100), 2.0) == (0, 0, 150, 150)  # clipped at the edge
    cx, cy, size = PRIOR_FACE
    x0, y0, x1, y1 = subject_box((800, 600), None, 1.0)
    assert abs((x0 + x1) / 2 - cx * 800) <= 1 and abs((y0 + y1) / 2 - cy * 600) <= 1 and x1 - x0 == round(size * 600)
    crops = region_images(_textured(8, (800, 600)), [(0.0, 0.0, 1.0, 1.0), SubjectSquare(2.0)], face)
    assert crops[0].size == (800, 600) and crops[1].size == (200, 200)


def test_query_views_cut_the_disc_of_a_round_avatar():
    avatar = _round_avatar(_textured(9, (300, 300)), 300, 0.95, (250, 250, 250))
    names = [view.name for view in query_views(avatar)]
    assert "disc" in names and "disc+mirror" in names
    assert "disc" not in [view.name for view in query_views(avatar, disc=False)]


def test_round_avatars_find_the_avatar_of_a_profile_page_over_its_banner():
    from provenance.avatars import round_avatars
    from provenance.regions import QUERY_DETECT_SIDE

    page = Image.new("RGB", (480, 1000), (255, 255, 255))
    page.paste(_textured(11, (480, 170)), (0, 40))  # the banner: as textured as the photo
    avatar = _round_avatar(_textured(12, (200, 200)), 120, 1.0, (255, 255, 255))
    ImageDraw.Draw(page).ellipse((16, 144, 144, 272), fill=(255, 255, 255))  # the page-coloured ring
    page.paste(avatar, (20, 148))
    draw = ImageDraw.Draw(page)
    draw.text((20, 290), "Jane Doe  @jane", fill=(0, 0, 0))
    boxes = round_avatars(page, QUERY_DETECT_SIDE)
    assert boxes, "no circle found"
    x0, y0, x1, y1 = boxes[0]
    assert abs(x0 - 20) <= 8 and abs(y0 - 148) <= 8 and abs(x1 - 140) <= 8 and abs(y1 - 268) <= 8, boxes
    views = query_views(page)
    names = [view.name for view in views]
    assert "circle0" in names and "circle0+mirror" in names
    assert "circle0" not in [view.name for view in query_views(page, circles=False)]
    # the avatar's view is 0.85 of its diameter: a little of the page at its corners, all of its rim
    circle = views[names.index("circle0")].box
    assert abs((circle[2] - circle[0]) - 0.85 * (x1 - x0)) <= 3 and abs((circle[0] + circle[2]) / 2 - (x0 + x1) / 2) <= 2
    # ... while the embedder sees only the photo inside the disc: 0.95 of its inscribed square
    view = views[names.index("circle0")]
    inscribed = (x1 - x0) / 2 ** 0.5
    assert abs(view.embedding_image.width - 0.95 * inscribed) <= 3 and view.embedding_image.width < view.image.width
    mirrored = views[names.index("circle0+mirror")]
    assert mirrored.embedding_image.tobytes() == view.embedding_image.transpose(Image.FLIP_LEFT_RIGHT).tobytes()
    assert all(v.embedding_image is v.image for v in views if not v.name.startswith("circle"))


def test_every_candidate_is_also_verified_on_the_querys_round_avatars():
    from provenance.matching import Candidate, QueryFeatures, views_to_try
    from provenance.regions import QueryView

    blank = Image.new("RGB", (8, 8))
    views = [QueryView("full", blank, False, True, (0, 0, 400, 800)),
             QueryView("photo0", blank, False, True, (0, 40, 400, 200)),
             QueryView("circle0", blank, False, True, (20, 150, 120, 250)),
             QueryView("circle0+mirror", blank, True, True, (20, 150, 120, 250))]
    features = QueryFeatures(views)
    assert views_to_try(Candidate(1, view=1), features) == [1, 0, 2]
    assert views_to_try(Candidate(1, view=2), features) == [2, 0]
    assert views_to_try(Candidate(1, view=0, tried_views=frozenset({0, 2})), features) == []
    # found by the whole query's vector, voted for by the page's photo: verified on that photo too
    assert views_to_try(Candidate(1, view=0, similarity=0.6, votes=0.4, vote_view=1), features) == [0, 1, 2]
    # found by the votes alone: verified on the voting view first
    assert views_to_try(Candidate(1, votes=0.4, vote_view=1), features) == [1, 0, 2]


def test_a_centred_crop_that_a_face_square_covers_is_not_indexed():
    from provenance.embedders.base import Preprocessing
    from provenance.faces import Face
    from provenance.ingest import Preparer
    from provenance.regions import COVERED_IOU, box_iou, covered_regions, region_box

    size = (250, 250)
    # a portrait's face, 1.2 face sizes = the 55 % centred crop (region 2), nearly the same pixels
    face = Face(68, 68, 182, 182)
    assert box_iou(region_box(size, DEFAULT_REGIONS[2], face), region_box(size, DEFAULT_REGIONS[4], face)) >= COVERED_IOU
    assert covered_regions(size, DEFAULT_REGIONS, face) == {2}
    # a face off-centre or small covers no centred crop; nor does the prior on a square picture
    assert covered_regions(size, DEFAULT_REGIONS, Face(10, 10, 60, 60)) == frozenset()
    assert covered_regions(size, DEFAULT_REGIONS, None) == frozenset()
    # the whole image is never left out, even where a face square is the whole picture
    assert 0 not in covered_regions(size, DEFAULT_REGIONS, Face(0, 0, 250, 250))
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0 and box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0

    preparer = Preparer(Preprocessing(size=32), regions=DEFAULT_REGIONS)
    image = _textured(10, size)
    assert sorted(preparer.region_arrays(image, face)) == [0, 1, 3, 4]
    assert sorted(preparer.region_arrays(image, None)) == [0, 1, 2, 3, 4]


def test_faces_are_detected_finer_on_a_page_than_on_a_photo():
    from provenance.regions import QUERY_DETECT_SIDE, REFERENCE_DETECT_SIDE, face_detect_side

    page = _page_with_a_photo()
    assert face_detect_side(query_views(page)) == QUERY_DETECT_SIDE
    # a photo as given: its face is as large as in the reference it may copy, or larger
    assert face_detect_side(query_views(_textured(4, (300, 300)))) == REFERENCE_DETECT_SIDE
    assert REFERENCE_DETECT_SIDE < QUERY_DETECT_SIDE


def test_circles_and_photo_areas_smaller_than_an_evidence_view_give_no_view(monkeypatch):
    import provenance.regions as regions

    image = _textured(13, (300, 300))
    monkeypatch.setattr(regions, "round_avatars", lambda image, side: [(5, 5, 30, 30), (100, 100, 170, 170)])
    monkeypatch.setattr(regions, "photo_boxes", lambda image: [(200, 200, 225, 290), (10, 200, 70, 260)])
    views = {view.name: view for view in query_views(image, mirror=False, strip=False, disc=False)}
    # the 25 px circle and the 25 px wide area are texture: the others keep their numbers from 0
    assert views["circle0"].box[0] > 100 and "circle1" not in views
    assert views["photo0"].box == (10, 200, 70, 260) and "photo1" not in views
    assert all(min(view.image.size) >= regions.MIN_VIEW_SIDE for view in views.values())


def test_circles_are_sought_on_pages_only(monkeypatch):
    import provenance.regions as regions

    image = _textured(14, (300, 300))
    found = []
    monkeypatch.setattr(regions, "round_avatars", lambda image, side: found.append(side) or [(100, 100, 170, 170)])
    monkeypatch.setattr(regions, "photo_boxes", lambda image: [])
    # a photo: its circles are texture, and the Hough transform is not even run
    assert not [view for view in query_views(image, mirror=False) if view.name.startswith("circle")] and not found
    monkeypatch.setattr(regions, "photo_boxes", lambda image: [(10, 200, 70, 260)])
    for photos in (True, False):  # a page is a page whether or not its areas are searched
        names = [view.name for view in query_views(image, mirror=False, photos=photos)]
        assert "circle0" in names and ("photo0" in names) == photos


def test_a_photo_area_that_is_most_of_the_query_is_its_own_photo(monkeypatch):
    import provenance.regions as regions
    from provenance.regions import on_a_page, small_views

    image = _textured(15, (300, 300))
    monkeypatch.setattr(regions, "round_avatars", lambda image, side: [(100, 100, 170, 170)])
    monkeypatch.setattr(regions, "photo_boxes", lambda image: [(20, 20, 280, 280)])  # a figure before a plain backdrop
    views = query_views(image, mirror=False, strip=False, disc=False)
    names = [view.name for view in views]
    assert "photo0" in names and "photo0-inner" in names  # still searched as views
    assert max(views[names.index("photo0-inner")].image.size) <= regions.SMALL_VIEW_SIDE
    assert not on_a_page(views) and small_views(views) == [] and not any(name.startswith("circle") for name in names)
    monkeypatch.setattr(regions, "photo_boxes", lambda image: [(20, 20, 280, 280), (10, 200, 70, 260)])
    views = query_views(image, mirror=False, strip=False, disc=False)
    names = [view.name for view in views]
    assert on_a_page(views) and "circle0" in names
    assert [names[number] for number in small_views(views)] == ["circle0", "photo1", "photo1-inner"]
