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
def engine(tmp_path, effnet, photo_folder, monkeypatch):
    import provenance.index.codecs as codecs

    monkeypatch.setattr(codecs, "MIN_TRAIN_REFERENCES", 4)  # six photos train the codecs (and the words)
    with Engine.create(tmp_path / "index", effnet) as built:
        built.reindex(photo_folder, workers=0)
        yield built


def _batch(engine, images) -> QueryBatch:
    views = [query_views(image) for image in images]
    arrays = np.stack([engine.embedder.preprocessing.to_array(view.embedding_image) for image_views in views for view in image_views])
    starts = np.cumsum([0] + [len(image_views) for image_views in views])
    return QueryBatch(engine.embedder.embed_arrays(arrays), starts, [QueryFeatures(v) for v in views])


def _copy_for(name: str, photo):
    """What each source is for: a copy of ``photo`` as given, or, for the thumbnail source
    (small avatars), its centre square at 120 px."""
    if name != "thumbnails":
        return photo
    side = min(photo.size)
    left, top = (photo.size[0] - side) // 2, (photo.size[1] - side) // 2
    return photo.crop((left, top, left + side, top + side)).resize((120, 120))


def _ref_id(engine, photo_number: int) -> int:
    return next(ref_id for ref_id in range(20) if (ref := engine.reference(ref_id)) and ref.path.endswith(f"photo_{photo_number}.jpg"))


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_source_finds_an_exact_copy_and_answers_per_image(name, engine, photos):
    source = SOURCES[name].from_store(engine._store, depth=engine.search_depth)
    batch = _batch(engine, [_copy_for(name, photos[1]), _copy_for(name, photos[4]), _copy_for(name, synthetic_photo(77))])
    hits = source.search(batch)
    assert len(hits) == 3
    for image, number in ((0, 1), (1, 4)):
        assert _ref_id(engine, number) in {hit.ref_id for hit in hits[image]}, (name, number)
        assert all(hit.source == name for hit in hits[image])
        assert len({hit.ref_id for hit in hits[image]}) == len(hits[image])  # one hit per reference
    assert source.search(QueryBatch(np.zeros((0, engine.embedder.dim), np.float32), np.zeros(1, int), [])) == []


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_source_follows_removals_and_additions(name, engine, photos):
    source = SOURCES[name].from_store(engine._store, depth=engine.search_depth)
    target, query = _ref_id(engine, 5), _copy_for(name, photos[5])
    assert target in {hit.ref_id for hit in source.search(_batch(engine, [query]))[0]}
    engine.remove(ref_ids=[target])
    assert target not in {hit.ref_id for hit in source.search(_batch(engine, [query]))[0]}
    engine.compact()  # the tombstone goes with a merge: still not found
    assert target not in {hit.ref_id for hit in source.search(_batch(engine, [query]))[0]}
    new_id = engine.add(photos[5], "again.jpg")
    assert new_id in {hit.ref_id for hit in source.search(_batch(engine, [query]))[0]}


def test_vector_source_restricted_to_whole_image_regions(engine, photos):
    source = VectorSource.from_store(engine._store, depth=engine.search_depth, regions=frozenset({0}))
    full = VectorSource.from_store(engine._store, depth=engine.search_depth)
    batch = _batch(engine, [photos[2].crop((100, 60, 220, 180))])
    restricted = {hit.ref_id: hit.similarity for hit in source.search(batch)[0]}
    everything = {hit.ref_id: hit.similarity for hit in full.search(batch)[0]}
    assert all(everything[ref_id] >= similarity - 1e-6 for ref_id, similarity in restricted.items())


def test_visual_words_are_stored_once_the_codecs_are_trained(engine):
    from provenance.verify.keypoints import DEFAULT_MAX_KEYPOINTS

    snapshot = engine._store.snapshot
    assert snapshot.codecs is not None and snapshot.codecs.word_codebook.shape == (2, 256, 64)
    (segment,) = snapshot.segments
    words, rows = segment.word_pairs()
    per_reference = np.bincount(rows, minlength=len(segment))
    assert len(segment) == 6 and np.all((per_reference > 0) & (per_reference <= DEFAULT_MAX_KEYPOINTS))
    assert snapshot.document_frequency.sum() == len(words)


def test_an_index_trains_its_codecs_once_it_holds_enough_references(tmp_path, effnet, photo_folder, monkeypatch):
    import provenance.index.codecs as codecs

    with Engine.create(tmp_path / "small", effnet) as small:  # fewer references than the training needs
        small.reindex(photo_folder, workers=0)
        assert small._store.snapshot.codecs is None
        before = small.query(photos_copy := synthetic_photo(3)).to_dict()["matches"]
        monkeypatch.setattr(codecs, "MIN_TRAIN_REFERENCES", 4)
        small.compact()  # any save trains them now
    with Engine.open(tmp_path / "small", read_only=True) as reopened:
        assert reopened._store.snapshot.codecs is not None
        after = reopened.query(photos_copy).to_dict()["matches"]
        # the same copy (its inliers differ: coded descriptors); 4-bit codes may reorder the unrelated runners-up
        assert (after[0]["ref_id"], after[0]["verdict"]) == (before[0]["ref_id"], before[0]["verdict"]) == (4, "copy")
        assert {m["ref_id"] for m in after} == {m["ref_id"] for m in before}


def test_keypoint_votes_find_a_copy_under_stickers(engine, photos):
    from provenance.search.local import KeypointVoteSource

    copy = photos[2].copy()
    for number, xy in enumerate(((10, 10), (200, 120), (120, 60))):
        copy.paste(synthetic_photo(40 + number, size=(70, 70)), xy)
    hits = KeypointVoteSource.from_store(engine._store).search(_batch(engine, [copy]))[0]
    assert hits and hits[0].ref_id == _ref_id(engine, 2) and hits[0].votes > 0
    assert all(hit.votes >= later.votes for hit, later in zip(hits, hits[1:]))


def test_every_voting_view_has_a_list_and_its_first_reaches_verification(engine, photos):
    """A small avatar on a page votes on its own list: the first of every view's list gets
    more than fusion.FIRST_OF_A_LIST, and the avatar's list puts its reference first."""
    from PIL import Image

    from provenance.search.local import KeypointVoteSource, _voting_views
    from provenance.regions import small_views

    from provenance.regions import QueryView, whole_view

    page = Image.new("RGB", (640, 260), (245, 245, 245))
    page.paste(synthetic_photo(90, size=(330, 220)), (290, 20))  # a large photo that is in no reference
    box = (40, 60, 160, 180)
    page.paste(photos[2].crop((60, 20, 260, 220)).resize((120, 120)), box[:2])  # the avatar
    views = [whole_view(page), QueryView("photo0", page.crop(box), False, True, box)]  # as photo_boxes would cut it
    vectors = engine.embedder.embed([view.embedding_image for view in views])
    batch = QueryBatch(vectors, np.array([0, len(views)]), [QueryFeatures(views)])
    features = batch.features[0]
    assert small_views(features.views) == [1]  # the avatar is a small view, and it votes
    source = KeypointVoteSource.from_store(engine._store)
    hits = {hit.ref_id: hit for hit in source.search(batch)[0]}
    firsts = [source._view_votes(engine._store.snapshot, features, view)[0][0] for view in _voting_views(features)]
    assert len(_voting_views(features)) >= 2 and all(hits[ref_id].votes > fusion.FIRST_OF_A_LIST for ref_id in firsts)
    avatar = _ref_id(engine, 2)
    assert avatar in firsts and hits[avatar].votes > fusion.FIRST_OF_A_LIST


def test_first_round_verifies_the_first_two_of_every_vote_list():
    ranked = [Candidate(ref_id, similarity=0.9 - 0.01 * ref_id) for ref_id in range(10)]
    lists = fusion.VOTE_CANDIDATES + 2  # more lists than the budget, each a fraction of a place behind
    behind = [0.5 + 0.45 * number / lists for number in range(lists)]  # the caption case's lead included
    heads = [1.0 / (1.0 + rank + b) for rank in range(fusion.VOTE_LIST_DEPTH) for b in behind]
    nexts = [1.0 / (1.0 + fusion.VOTE_LIST_DEPTH + b) for b in behind]
    ranked += [Candidate(60 + number, votes=votes) for number, votes in enumerate(heads + nexts)]
    chosen = [c.ref_id for c in fusion.first_round(ranked)]
    assert chosen[fusion.VERIFY_CANDIDATES:] == [60 + number for number in range(len(heads))]


def test_fusion_keeps_the_view_that_voted():
    fused = fusion.fuse([Hit(1, "vectors", similarity=0.7, view=0), Hit(1, "keypoints", view=3, votes=0.4),
                         Hit(1, "keypoints", view=2, votes=0.9), Hit(1, "keypoints", view=4, votes=0.3)])
    assert fused[1].view == 0 and fused[1].votes == 0.9 and fused[1].vote_view == 2


def test_fusion_keeps_the_best_evidence_of_every_source():
    fused = fusion.fuse([Hit(1, "vectors", similarity=0.5, view=2), Hit(1, "vectors", similarity=0.7, view=3),
                         Hit(1, "pdq", pdq_distance=20), Hit(1, "pdq", pdq_distance=12), Hit(2, "pdq", pdq_distance=30)])
    assert fused[1].similarity == 0.7 and fused[1].view == 3 and fused[1].pdq_distance == 12
    assert fused[2].similarity == -1.0 and fused[2].pdq_distance == 30


def test_first_round_adds_the_best_voted_references():
    ranked = [Candidate(ref_id, similarity=0.9 - 0.01 * ref_id) for ref_id in range(10)]
    ranked.append(Candidate(50, votes=9.0))
    ranked.append(Candidate(51, votes=1.0))
    ranked[0].votes = 20.0  # already verified for its similarity
    chosen = [c.ref_id for c in fusion.first_round(ranked)]
    assert chosen[:fusion.VERIFY_CANDIDATES] == list(range(fusion.VERIFY_CANDIDATES))
    assert chosen[fusion.VERIFY_CANDIDATES:] == [50, 51]


def test_second_round_only_when_nothing_verified_and_the_margin_is_small():
    flat = [Candidate(ref_id, similarity=0.8 - 0.02 * ref_id) for ref_id in range(20)]
    first = fusion.first_round(flat)
    assert [c.ref_id for c in first] == list(range(fusion.VERIFY_CANDIDATES))
    more = fusion.second_round(flat)
    assert [c.ref_id for c in more] == list(range(fusion.VERIFY_CANDIDATES, fusion.VERIFY_CANDIDATES + fusion.MORE_CANDIDATES))
    decisive = [Candidate(0, similarity=0.95)] + [Candidate(ref_id, similarity=0.5) for ref_id in range(1, 20)]
    assert fusion.second_round(decisive) == []
    copied = [Candidate(0, similarity=0.8, pdq_distance=0)] + flat[1:]
    assert fusion.second_round(copied) == []


def test_second_round_takes_the_candidates_tied_with_its_last_within_the_codes_precision():
    last = fusion.VERIFY_CANDIDATES + fusion.MORE_CANDIDATES
    ranked = [Candidate(ref_id, similarity=0.8 - 0.001 * ref_id) for ref_id in range(last)]
    ranked += [Candidate(100, similarity=ranked[-1].similarity - fusion.QUANTISATION_SLACK / 2),
               Candidate(101, similarity=ranked[-1].similarity - 2 * fusion.QUANTISATION_SLACK)]
    chosen = [c.ref_id for c in fusion.second_round(ranked)]
    assert chosen == list(range(fusion.VERIFY_CANDIDATES, last)) + [100]


def test_flat_references_leave_the_codecs_untrained_and_reindex_goes_on(tmp_path, effnet, monkeypatch):
    from PIL import Image

    import provenance.index.codecs as codecs

    monkeypatch.setattr(codecs, "MIN_TRAIN_REFERENCES", 2)
    folder = tmp_path / "flat"
    folder.mkdir()
    for number in range(3):
        Image.new("RGB", (64, 64), (40 * number, 90, 200)).save(folder / f"flat_{number}.png")
    with Engine.create(tmp_path / "index", effnet) as engine:
        summary = engine.reindex(folder, workers=0)
        assert summary.added == 3 and summary.failed == 0
        assert engine._store.snapshot.codecs is None
        assert engine.query(folder / "flat_1.png").best is not None


def test_votes_equal_a_brute_force_count_of_shared_words(engine):
    """Snapshot.vote against the definition: per reference, the best word set's idf-weighted
    overlap over the reference's norm; best first, ties by id, the earlier set on a tie."""
    snapshot = engine._store.snapshot
    weights = snapshot.word_weights
    postings: dict[int, tuple[set, float]] = {}
    for segment in snapshot.segments:
        words, rows = segment.word_pairs()
        for row, ref_id in enumerate(segment.refs.tolist()):
            postings[ref_id] = (set(words[rows == row].tolist()), float(segment.norms()[row]))
    held = sorted({word for words, _ in postings.values() for word in words})
    rng = np.random.default_rng(0)
    for trial in range(20):
        sets = [np.unique(rng.choice(held, size=rng.integers(1, len(held)), replace=True)).astype(np.int32)
                for _ in range(rng.integers(1, 4))]
        expected = []
        for ref_id, (words, norm) in postings.items():
            scores = [sum(float(weights[word]) for word in set(query.tolist()) & words) / norm for query in sets]
            if max(scores) > 0:
                expected.append((ref_id, max(scores), int(np.argmax(scores))))
        expected.sort(key=lambda item: (-item[1], item[0]))
        got = snapshot.vote(sets, candidates=4)
        assert [(ref_id, which) for ref_id, _, which in got] == [(ref_id, which) for ref_id, _, which in expected[:4]], trial
        assert np.allclose([score for _, score, _ in got], [score for _, score, _ in expected[:4]], rtol=1e-9)


def test_keypoint_votes_leave_a_caption_bands_letters_out(engine, photos):
    """A caption band's letters vote for any reference with text-like words; the band-free
    keypoints vote too, each list's votes as shares of its best, one hit per reference."""
    from PIL import ImageDraw, ImageFont

    from provenance.search.local import KeypointVoteSource
    from provenance.verify.captions import caption_bands
    from provenance.verify.keypoints import extract_keypoints

    copy = photos[4].copy()
    width, height = copy.size
    ImageDraw.Draw(copy).rectangle((0, height - 60, width, height), fill=(200, 30, 110))
    for line in range(2):
        ImageDraw.Draw(copy).text((6, height - 58 + 28 * line), "DM me now  cash app only  100% real", fill=(255, 255, 255),
                                  font=ImageFont.load_default(size=22))
    assert caption_bands(copy, extract_keypoints(copy))  # the band is found
    hits = KeypointVoteSource.from_store(engine._store).search(_batch(engine, [copy]))[0]
    assert _ref_id(engine, 4) in [hit.ref_id for hit in hits[:3]]
    assert len({hit.ref_id for hit in hits}) == len(hits)
    assert hits[0].votes == 1.0 and all(0 < hit.votes <= 1.0 for hit in hits)
    assert all(hit.votes >= later.votes for hit, later in zip(hits, hits[1:]))


def test_sources_search_side_by_side_and_answer_in_their_order():
    import threading

    from provenance.search.pipeline import _search_sources

    class Meeting:
        """A source that waits (bounded) for every other one to have started."""

        def __init__(self, name, started, count):
            self.name, self.started, self.count = name, started, count

        def search(self, batch):
            self.started.append(self.name)
            for _ in range(200):  # up to 2 s: one after the other, the first never meets the rest
                if len(self.started) == self.count:
                    return [[self.name, True]]
                threading.Event().wait(0.01)
            return [[self.name, False]]

    started: list[str] = []
    sources = [Meeting(name, started, 3) for name in ("vectors", "pdq", "keypoints")]
    answers = _search_sources(sources, batch=None)
    assert answers == [[["vectors", True]], [["pdq", True]], [["keypoints", True]]]


def _counting_rows(engine, monkeypatch) -> list[int]:
    """The number of views each forward pass of ``engine``'s embedder embeds, call by call."""
    rows: list[int] = []
    embed = engine.embedder.embed_arrays

    def counted(arrays):
        rows.append(len(arrays))
        return embed(arrays)

    monkeypatch.setattr(engine.embedder, "embed_arrays", counted)
    return rows


def test_a_copy_the_whole_query_proves_is_answered_before_its_other_views(engine, photos, monkeypatch):
    from PIL import ImageOps

    padded = ImageOps.expand(photos[2], border=60, fill=(20, 20, 20))  # the border gives a second view
    rows = _counting_rows(engine, monkeypatch)
    staged = engine.query(padded)
    assert staged.verdict == "copy" and staged.matches[0].ref_id == _ref_id(engine, 2)
    assert rows == [1]  # the whole query alone, proven in the first round
    rows.clear()
    everything = engine.query(padded, options=engine.query_options(cascade=False))
    assert everything.verdict == "copy" and everything.matches[0].ref_id == _ref_id(engine, 2)
    assert rows[0] >= 2  # without the cascade every cheap view is embedded at once


def test_a_query_the_whole_view_does_not_prove_gets_its_other_views(engine, monkeypatch):
    rows = _counting_rows(engine, monkeypatch)
    result = engine.query(synthetic_photo(91))  # no reference's copy
    assert result.verdict != "copy"
    assert rows[0] == 1 and len(rows) >= 2  # the whole query first, then the views it leaves open
