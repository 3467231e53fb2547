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
