"""Conformance tests every candidate source must pass, and the fusion rules."""

import numpy as np
import pytest

from provenance import Engine
from provenance.matching import Candidate, QueryFeatures
from provenance.regions import query_views
from provenance.search import fusion
from provenance.search.sources import SOURCES, Hit, QueryBatch, VectorSource

from .conftest import synthetic_photo


@pytest.fixture()
def engine(tmp_path, effnet, photo_folder):
    with Engine.create(tmp_path / "index", effnet) as built:
        built.reindex(photo_folder, workers=0)
        yield built


def _batch(engine, images) -> QueryBatch:
    views = [query_views(image) for image in images]
    arrays = np.stack([engine.embedder.preprocessing.to_array(view.image) for image_views in views for view in image_views])
    starts = np.cumsum([0] + [len(image_views) for image_views in views])
    return QueryBatch(engine.embedder.embed_arrays(arrays), starts, [QueryFeatures(v) for v in views])


def _ref_id(engine, photo_number: int) -> int:
    return next(ref_id for ref_id in range(20) if (ref := engine.reference(ref_id)) and ref.path.endswith(f"photo_{photo_number}.jpg"))


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_source_finds_an_exact_copy_and_answers_per_image(name, engine, photos):
    source = SOURCES[name].from_store(engine._store, depth=engine.search_depth)
    batch = _batch(engine, [photos[1], photos[4], synthetic_photo(77)])
    hits = source.search(batch)
    assert len(hits) == 3
    for image, number in ((0, 1), (1, 4)):
        assert _ref_id(engine, number) in {hit.ref_id for hit in hits[image]}, (name, number)
        assert all(hit.source == name for hit in hits[image])
        assert len({hit.ref_id for hit in hits[image]}) == len(hits[image])  # one hit per reference
    assert source.search(QueryBatch(np.zeros((0, engine.embedder.dim), np.float32), np.zeros(1, int), [])) == []


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_source_follows_removals_and_reset(name, engine, photos):
    source = SOURCES[name].from_store(engine._store, depth=engine.search_depth)
    engine.add_source(source)
    target = _ref_id(engine, 5)
    assert target in {hit.ref_id for hit in source.search(_batch(engine, [photos[5]]))[0]}
    engine.remove(ref_ids=[target])
    assert target not in {hit.ref_id for hit in source.search(_batch(engine, [photos[5]]))[0]}
    source.reset()
    assert target not in {hit.ref_id for hit in source.search(_batch(engine, [photos[5]]))[0]}
    new_id = engine.add(photos[5], "again.jpg")
    assert new_id in {hit.ref_id for hit in source.search(_batch(engine, [photos[5]]))[0]}


def test_vector_source_restricted_to_whole_image_regions(engine, photos):
    source = VectorSource.from_store(engine._store, depth=engine.search_depth, regions=frozenset({0}))
    full = VectorSource.from_store(engine._store, depth=engine.search_depth)
    batch = _batch(engine, [photos[2].crop((100, 60, 220, 180))])
    restricted = {hit.ref_id: hit.similarity for hit in source.search(batch)[0]}
    everything = {hit.ref_id: hit.similarity for hit in full.search(batch)[0]}
    assert all(everything[ref_id] >= similarity - 1e-6 for ref_id, similarity in restricted.items())


def test_fusion_keeps_the_best_evidence_of_every_source():
    fused = fusion.fuse([Hit(1, "vectors", similarity=0.5, view=2), Hit(1, "vectors", similarity=0.7, view=3),
                         Hit(1, "pdq", pdq_distance=20), Hit(1, "pdq", pdq_distance=12), Hit(2, "pdq", pdq_distance=30)])
    assert fused[1].similarity == 0.7 and fused[1].view == 3 and fused[1].pdq_distance == 12
    assert fused[2].similarity == -1.0 and fused[2].pdq_distance == 30


def test_second_round_only_when_nothing_verified_and_the_margin_is_small():
    flat = [Candidate(ref_id, similarity=0.8 - 0.01 * ref_id) for ref_id in range(20)]
    first = fusion.first_round(flat)
    assert [c.ref_id for c in first] == list(range(fusion.VERIFY_CANDIDATES))
    more = fusion.second_round(flat)
    assert [c.ref_id for c in more] == list(range(fusion.VERIFY_CANDIDATES, fusion.VERIFY_CANDIDATES + fusion.MORE_CANDIDATES))
    decisive = [Candidate(0, similarity=0.95)] + [Candidate(ref_id, similarity=0.5) for ref_id in range(1, 20)]
    assert fusion.second_round(decisive) == []
    copied = [Candidate(0, similarity=0.8, pdq_distance=0)] + flat[1:]
    assert fusion.second_round(copied) == []
