from provenance.matching import Candidate, VERDICT_COPY, VERDICT_NO_MATCH, VERDICT_SIMILAR
from provenance.verify.geometry import Verification


def _verification(verified: bool, inliers: int) -> Verification:
    return Verification(verified, inliers, inliers + 5, (0, 0, 10, 10), 1.0, 0.0, False, 1.0, "similarity")


def test_copies_outrank_every_unverified_candidate():
    weak_copy = Candidate(1, similarity=0.2, verification=_verification(True, 15))
    strong_copy = Candidate(2, similarity=0.3, verification=_verification(True, 300))
    near_identical = Candidate(3, similarity=0.999, verification=_verification(False, 12))
    assert strong_copy.score() > weak_copy.score() > 1.0 >= near_identical.score()
    assert weak_copy.verdict(0.8) == VERDICT_COPY
    assert near_identical.verdict(0.8) == VERDICT_SIMILAR
    assert Candidate(4, similarity=0.5).verdict(0.8) == VERDICT_NO_MATCH


def test_near_exact_pdq_is_a_copy_and_far_pdq_is_not():
    assert Candidate(1, similarity=0.4, pdq_distance=0).is_copy
    assert Candidate(1, similarity=0.4, pdq_distance=0).score() > Candidate(1, similarity=0.4, pdq_distance=30).score() > 1
    assert not Candidate(1, similarity=0.4, pdq_distance=60).is_copy


def test_threshold_for_fpr_edge_cases():
    import numpy as np

    from provenance.calibration import threshold_for_fpr

    scores = np.array([0.1, 0.5, 0.9, 0.9, 0.3])
    strict = threshold_for_fpr(scores, 0.0, floor=-1.0)
    assert strict > 0.9 and (scores >= strict).sum() == 0
    # 40% allowed -> two scores may stay above, but the tie at 0.9 must not split
    loose = threshold_for_fpr(scores, 0.4, floor=-1.0)
    assert 0.5 < loose <= 0.9 and (scores >= loose).sum() == 2
    assert threshold_for_fpr(np.array([0.0, 0.0]), 0.001, floor=1.0) == 1.0


def test_calibrate_stores_thresholds(tmp_path, effnet, photo_folder):
    from provenance import Engine
    from provenance.calibration import calibrate

    from .conftest import synthetic_photo

    negatives = tmp_path / "negatives"
    negatives.mkdir()
    for seed in range(40, 46):
        synthetic_photo(seed).save(negatives / f"n{seed}.jpg")
    with Engine.create(tmp_path / "index", effnet) as engine:
        engine.reindex(photo_folder, workers=0)
        report = calibrate(engine, negatives, target_fpr=0.0)
        assert report.negatives == 6 and report.thresholds["copy"] >= 1.0
        assert engine.similar_threshold == report.thresholds["similar"]
        for path in negatives.iterdir():  # nothing above a zero-FPR threshold
            assert engine.query(path).verdict == "no_match"
    with Engine.open(tmp_path / "index") as reopened:
        assert reopened.similar_threshold == report.thresholds["similar"]


def test_prefetched_keypoints_equal_lazily_extracted_ones():
    from concurrent.futures import ThreadPoolExecutor

    from provenance.matching import QueryFeatures
    from provenance.regions import query_views

    from .conftest import synthetic_photo

    views = query_views(synthetic_photo(3, size=(240, 200)))
    lazy = QueryFeatures(views)
    with ThreadPoolExecutor(2) as pool:
        prefetched = QueryFeatures(views)
        prefetched.prefetch(list(range(len(views))), pool)
        for view in range(len(views)):
            assert prefetched.keypoints(view) == lazy.keypoints(view)


def test_face_square_candidates_are_verified_on_the_frames_that_hold_the_face():
    from PIL import Image

    from provenance.matching import QueryFeatures
    from provenance.regions import QueryView

    blank = Image.new("RGB", (8, 8))
    views = [QueryView("full", blank, False, True, (0, 0, 400, 800)),
             QueryView("stripped", blank, False, True, (0, 50, 400, 800)),
             QueryView("circle0", blank, False, True, (20, 150, 120, 250)),
             QueryView("circle1", blank, False, True, (300, 600, 350, 650)),  # elsewhere on the page
             QueryView("face0.8", blank, False, False, (40, 170, 100, 230)),
             QueryView("face0.8+mirror", blank, True, False, (40, 170, 100, 230)),
             QueryView("circle0+mirror", blank, True, True, (20, 150, 120, 250))]
    features = QueryFeatures(views)
    assert features.evidence_views(4) == [2, 1, 0]
    assert features.evidence_views(5) == [2, 1, 0]  # the mirrored face square: the same frames
    assert features.evidence_views(6) == [2, 0]  # an evidence view is judged on itself
    assert features.evidence_views(0) == [0]
