"""PDQ and pHash brute-force baselines."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from provenance.evaluation.baselines import hamming_to_all, make_baseline, top_k

from .test_eval_transforms import portrait


def test_hamming_takes_the_minimum_over_query_variants():
    refs = np.array([[0b00000000], [0b11111111], [0b00001111]], dtype=np.uint8)
    queries = np.array([[0b00000001], [0b11111110]], dtype=np.uint8)
    assert hamming_to_all(queries, refs).tolist() == [1, 1, 3]


def test_top_k_breaks_ties_by_lower_index():
    indices, scores = top_k(np.array([3.0, 5.0, 5.0, 1.0]), 3)
    assert indices.tolist() == [1, 2, 0]
    assert scores.tolist() == [5.0, 5.0, 3.0]


@pytest.mark.parametrize("name,bits", [("pdq", 256), ("phash", 64)])
def test_baseline_finds_the_source_of_a_light_edit(name, bits):
    refs = [portrait(seed=seed) for seed in range(6)]
    baseline = make_baseline(name)
    baseline.add_all(refs)
    assert len(baseline) == 6
    indices, scores = baseline.query(refs[4], k=3)
    assert indices[0] == 4 and scores[0] == bits
    edited = refs[2].resize((200, 200)).point(lambda v: min(255, v + 10))
    indices, _ = baseline.query(edited, k=3)
    assert indices[0] == 2


def test_pdq_query_is_flip_invariant_via_dihedral_variants():
    refs = [portrait(seed=seed) for seed in range(4)]
    baseline = make_baseline("pdq")
    baseline.add_all(refs)
    indices, scores = baseline.query(ImageOps.mirror(refs[1]), k=1)
    assert indices[0] == 1 and scores[0] >= 256 - 32  # a plain PDQ of the mirror is ~128 bits away


def test_unknown_baseline_and_empty_index():
    with pytest.raises(ValueError):
        make_baseline("ahash")
    indices, scores = make_baseline("phash").query(Image.new("RGB", (32, 32)), k=5)
    assert indices.size == 0 and scores.size == 0
