from pathlib import Path

import pytest
from PIL import Image

from provenance.faces import detect_faces, detector_available
from provenance.regions import SubjectSquare, query_views, reference_face

from .conftest import synthetic_photo

ASTRONAUT = Path(__file__).resolve().parents[1] / "examples" / "sample" / "astronaut.jpg"

needs_detector = pytest.mark.skipif(not detector_available(), reason="this OpenCV ships no Haar cascade")


def test_the_pinned_opencv_ships_the_face_cascade():
    # pyproject pins opencv-python-headless < 5 for it; without it faces fall back to the prior
    assert detector_available()


@needs_detector
def test_finds_the_face_in_a_portrait_at_any_size():
    image = Image.open(ASTRONAUT).convert("RGB")  # Eileen Collins, face around (166, 86) of 384 x 384
    for size in (384, 160):
        scaled = image.resize((size, size))
        faces = detect_faces(scaled)
        assert faces, size
        cx, cy = faces[0].centre
        assert abs(cx / size - 0.43) < 0.08 and abs(cy / size - 0.22) < 0.08, (size, faces[0])
        assert 0.1 < faces[0].size / size < 0.4


@needs_detector
def test_no_face_in_a_texture_and_query_views_follow_the_face():
    assert detect_faces(synthetic_photo(3, size=(300, 300))) == []
    assert reference_face(synthetic_photo(3), [(0.0, 0.0, 1.0, 1.0)]) is None  # no subject square, no detection
    image = Image.open(ASTRONAUT).convert("RGB")
    names = [view.name for view in query_views(image, face_scales=(0.8, 1.2))]
    assert "face0.8" in names and "face1.2+mirror" in names
    assert reference_face(image, [SubjectSquare(1.0)]) is not None


def test_banner_shaped_and_tiny_images_never_break_the_detectors():
    import numpy as np

    rng = np.random.default_rng(0)
    # a tall then a wide strip: blown up to a 320 px short side, OpenCV's cascade kept
    # buffers sized by the first and asked for 59 GB on the second
    for size in [(3, 500), (500, 3), (10, 10), (4000, 8), (8, 4000), (100, 9000), (9000, 100), (1, 1)]:
        image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
        views = query_views(image, face_scales=(0.8, 1.2))
        assert views[0].name == "full"
        assert isinstance(detect_faces(image, side=320), list)
