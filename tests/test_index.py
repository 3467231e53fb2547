"""The segment store: search against brute force through commits, removals, merges, codec training
and reopening; crash safety of a commit; refusals of damaged, foreign and earlier-format indexes."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provenance.errors import CorruptIndexError, IncompatibleIndexError, IndexExistsError, IndexNotFoundError
from provenance.features import KEYPOINTS_BLOB, PDQ_BLOB, THUMB_BLOB
from provenance.index import store as store_module
from provenance.index.manifest import read_manifest
from provenance.index.metadata import Reference
from provenance.index.store import IndexStore
from provenance.index.vectors import reference_ids, vector_ids
from provenance.verify.keypoints import Keypoints

DIM = 16
DESCRIPTION = {"name": "fake", "dim": DIM, "fingerprint": "aaaa", "config": {}}


def _unit(rng, n, dim=DIM):
    vectors = np.abs(rng.normal(size=(n, dim))).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _blobs(rng, keypoints=120):
    xy = rng.uniform(0, 200, size=(keypoints, 2)).astype(np.float32)
    descriptors = rng.integers(0, 60, size=(keypoints, 128), dtype=np.uint8)
    pdq = rng.integers(0, 256, 32, dtype=np.uint8).tobytes() + bytes([100])
    return {KEYPOINTS_BLOB: Keypoints(xy, descriptors, 200, 200, "sift").to_bytes(), PDQ_BLOB: pdq,
            THUMB_BLOB: b"thumb-%d" % int(rng.integers(1 << 30))}


def _clustered(rng, n, centres=np.random.default_rng(99).normal(size=(20, DIM))):
    """Unit vectors near one of 20 centres: neighbours share inverted lists, as real embeddings do."""
    points = np.abs(centres[rng.integers(0, len(centres), n)] + 0.3 * rng.normal(size=(n, DIM))).astype(np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def _add(store, first, count, seed, regions=2, draw=_unit):
    rng = np.random.default_rng(seed)
    vectors = {}
    for ref_id in range(first, first + count):
        store.metadata.insert(Reference(ref_id, f"sha{ref_id}", f"p{ref_id}.jpg", added_at=1.0))
        block = draw(rng, regions)
        store.stage(ref_id, vector_ids(np.full(regions, ref_id), np.arange(regions)), block, _blobs(rng))
        for region in range(regions):
            vectors[int(vector_ids(np.array([ref_id]), np.array([region]))[0])] = block[region]
    return vectors


def _store(tmp_path, count=5, seed=2):
    store = IndexStore.create(tmp_path / "idx", DESCRIPTION)
    vectors = _add(store, 0, count, seed)
    store.save()
    return store, vectors


def _brute_force(store, queries, k):
    """Exhaustive top-k over the live vectors as stored (decoded from their codes)."""
    ids, vectors = store.snapshot.vectors()
    scores = queries @ vectors.T
    order = np.lexsort((np.broadcast_to(ids, scores.shape), -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), ids[order]


@pytest.fixture()
def small_training(monkeypatch):
    import provenance.index.codecs as codecs

    monkeypatch.setattr(codecs, "MIN_TRAIN_REFERENCES", 30)


def test_search_over_segments_equals_brute_force_through_removals_merges_and_reopening(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "MERGE_FACTOR", 3)
    store = IndexStore.create(tmp_path / "idx", DESCRIPTION)
    for batch in range(5):  # five commits: tiers merge as they fill
        _add(store, batch * 8, 8, seed=batch)
        store.save()
    store.remove_references(list(range(0, 40, 3)))
    store.save()
    queries = _unit(np.random.default_rng(9), 10)
    expected_scores, expected_ids = _brute_force(store, queries, 12)
    assert not np.isin(reference_ids(expected_ids), np.arange(0, 40, 3)).any()
    reader = IndexStore.open(tmp_path / "idx", DESCRIPTION, read_only=True)
    for searched in (store, reader):
        scores, ids = searched.snapshot.search_vectors(queries, 12)
        assert np.array_equal(ids, expected_ids)
        np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
    store.save(force_merge=True)
    assert len(store.snapshot.segments) == 1 and not len(store.snapshot.removed)  # tombstones gone with the merge
    assert reader.refresh()
    for searched in (store, reader):
        scores, ids = searched.snapshot.search_vectors(queries, 12)
        assert np.array_equal(ids, expected_ids)
    assert store.snapshot.vector_count == reader.snapshot.vector_count == (40 - 14) * 2


def test_raw_vectors_are_float16_close(tmp_path):
    store, vectors = _store(tmp_path, 6)
    ids, stored = store.snapshot.vectors()
    np.testing.assert_allclose(stored, np.stack([vectors[int(i)] for i in ids]), atol=1e-3)


def test_codecs_are_trained_once_and_rewrite_the_raw_segments(tmp_path, small_training, monkeypatch):
    import provenance.index.writing as writing

    monkeypatch.setattr(writing, "CODED_TOGETHER", 4)  # the staged references' keypoints coded four at a time
    store = IndexStore.create(tmp_path / "idx", DESCRIPTION)
    staged, stage = {}, store.stage
    monkeypatch.setattr(store, "stage", lambda ref_id, *args: (staged.setdefault(ref_id, args[-1]), stage(ref_id, *args)))
    originals = _add(store, 0, 10, seed=1)
    store.save()
    assert store.snapshot.codecs is None and store.snapshot.segments[0].info["codec"] == "raw"
    store.remove_references([3])
    originals.update(_add(store, 10, 25, seed=2))
    store.save()  # 34 live references: past the (patched) training size
    snapshot = store.snapshot
    assert snapshot.codecs is not None and len(snapshot.segments) == 1
    assert snapshot.segments[0].info["codec"] == snapshot.codecs.version and not len(snapshot.removed)
    ids, stored = snapshot.vectors()
    assert 3 not in set(reference_ids(ids).tolist()) and len(ids) == 34 * 2
    # 4-bit codes (FAISS truncates to 15 steps and decodes to their middle): within a step
    error = np.abs(stored - np.stack([originals[int(i)] for i in ids]))
    assert np.all(error <= snapshot.codecs.vector_ranges[1] / 15 + 1e-3)
    assert snapshot.document_frequency.sum() > 0  # words stored once a codebook exists
    features = snapshot.local_features(5)
    assert len(features) == 120 and features.root_sift.shape == (120, 128)
    np.testing.assert_allclose(np.linalg.norm(features.root_sift, axis=1), 1.0, atol=1e-5)
    for ref_id in (0, 5, 17, 33):  # each record holds its own reference's descriptors, coded
        own = Keypoints.from_bytes(staged[ref_id][KEYPOINTS_BLOB]).root_sift
        other = Keypoints.from_bytes(staged[ref_id + 1][KEYPOINTS_BLOB]).root_sift
        decoded = snapshot.local_features(ref_id).root_sift
        assert np.mean(np.sum(own * decoded, axis=1)) > np.mean(np.sum(other * decoded, axis=1)) + 0.02
    reopened = IndexStore.open(tmp_path / "idx", DESCRIPTION, read_only=True)
    assert reopened.snapshot.codecs.version == snapshot.codecs.version


def test_removed_references_are_hidden_from_every_reader(tmp_path):
    store, _ = _store(tmp_path, 6)
    pdq = store.snapshot.pdq(2)
    codes = np.frombuffer(pdq[:32], np.uint8)[None]
    assert store.snapshot.search_pdq(codes, 4, 31)[0] == (0, 2)
    store.remove_references([2])
    store.save()
    snapshot = store.snapshot
    assert snapshot.search_pdq(codes, 4, 31) == [] and snapshot.locate(2) is None and snapshot.thumbnail(2) is None
    assert 2 not in [ref_id for ref_id, _ in snapshot.pdq_hashes()]


def test_a_reader_keeps_its_snapshot_while_the_writer_merges(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "MERGE_FACTOR", 2)
    store, _ = _store(tmp_path, 4)
    reader = IndexStore.open(tmp_path / "idx", DESCRIPTION, read_only=True)
    before = reader.snapshot
    queries = _unit(np.random.default_rng(5), 3)
    expected = before.search_vectors(queries, 4)
    records = [before.reference_data(ref_id) for ref_id in range(4)]
    _add(store, 4, 4, seed=7)
    store.save()  # the second segment of the tier: merged, and the first one's files deleted
    assert len(store.snapshot.segments) == 1
    assert not (tmp_path / "idx" / "segments" / f"{before.segments[0].name}.dat").exists()
    again = before.search_vectors(queries, 4)  # the deleted files stay mapped, and open
    assert np.array_equal(again[1], expected[1])
    assert [before.reference_data(ref_id) for ref_id in range(4)] == records
    segment = before.segments[0]
    assert np.array_equal(segment._read_codes(np.arange(len(segment.vector_ids))), segment.vector_codes())
    assert reader.refresh() and reader.snapshot.references == 8


def test_save_and_reopen(tmp_path):
    store, _ = _store(tmp_path, 5)
    store.close()
    reopened = IndexStore.open(tmp_path / "idx", DESCRIPTION)
    assert reopened.snapshot.vector_count == 10 and reopened.metadata.count() == 5
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["reference_count"] == 5 and manifest["format_version"] == 2
    assert {path.suffix for path in (tmp_path / "idx" / "segments").iterdir()} == {".dat", ".vec", ".pdq"}


def test_interrupted_save_leaves_previous_index_usable(tmp_path, monkeypatch):
    store, _ = _store(tmp_path, 3)
    _add(store, 3, 2, seed=4)

    def crash():
        raise KeyboardInterrupt("power cut")

    # the new segment is written, then the process dies before the SQLite commit
    monkeypatch.setattr(store.metadata, "commit", crash)
    with pytest.raises(KeyboardInterrupt):
        store.save()
    monkeypatch.undo()
    files = {path.name for path in (tmp_path / "idx" / "segments").iterdir()}
    assert len(files) == 6  # the committed segment and the orphan
    store.close()
    reopened = IndexStore.open(tmp_path / "idx", DESCRIPTION)
    assert reopened.metadata.count() == 3 and reopened.snapshot.vector_count == 6
    reopened.save()  # the next writer's commit deletes the orphan
    assert len(list((tmp_path / "idx" / "segments").iterdir())) == 3


def test_segments_that_disagree_with_the_catalogue_are_reported(tmp_path):
    store, _ = _store(tmp_path, 2)
    store.metadata.insert(Reference(7, "sha7", "p7.jpg", added_at=1.0))  # a row with no data
    store.metadata.commit()
    store.close()
    with pytest.raises(CorruptIndexError, match="segments hold 2 live references, its catalogue 3"):
        IndexStore.open(tmp_path / "idx", DESCRIPTION)


def test_incompatible_embedder_and_format_are_refused(tmp_path):
    _store(tmp_path, 1)[0].close()
    other = dict(DESCRIPTION, fingerprint="bbbb", name="other")
    with pytest.raises(IncompatibleIndexError, match="built with embedder 'fake'"):
        IndexStore.open(tmp_path / "idx", other)
    manifest_path = tmp_path / "idx" / "manifest.json"
    data = json.loads(manifest_path.read_text())
    data["format_version"] = 99
    manifest_path.write_text(json.dumps(data))
    with pytest.raises(IncompatibleIndexError, match="format version 99"):
        read_manifest(tmp_path / "idx")
    data["format_version"] = 1
    manifest_path.write_text(json.dumps(data))
    with pytest.raises(IncompatibleIndexError, match="earlier provenance.*--rebuild"):
        read_manifest(tmp_path / "idx")


def test_create_refuses_existing_and_open_refuses_missing(tmp_path):
    _store(tmp_path, 1)[0].close()
    with pytest.raises(IndexExistsError):
        IndexStore.create(tmp_path / "idx", DESCRIPTION)
    IndexStore.create(tmp_path / "idx", DESCRIPTION, overwrite=True).close()
    with pytest.raises(IndexNotFoundError):
        IndexStore.open(tmp_path / "nothing")


def test_vector_id_packing_round_trips():
    refs = np.array([0, 1, 12345, 2**40])
    regions = np.array([0, 15, 3, 7])
    assert np.array_equal(reference_ids(vector_ids(refs, regions)), refs)
    assert reference_ids(np.array([-1]))[0] == -1
    with pytest.raises(ValueError):
        vector_ids(np.array([1]), np.array([16]))


def test_large_segments_are_searched_through_their_ivf_companions(tmp_path, small_training, monkeypatch):
    import provenance.index.writing as writing

    monkeypatch.setattr(writing, "IVF_FROM_VECTORS", 1000)
    monkeypatch.setattr(writing, "SEGMENT_IVF_FROM", 500)
    store = IndexStore.create(tmp_path / "idx", DESCRIPTION)
    for batch in range(3):  # 300 references (600 vectors) per segment
        _add(store, batch * 300, 300, seed=batch, draw=_clustered)
        store.save()
    snapshot = store.snapshot
    assert snapshot.ivf is not None and sum(segment.approximate for segment in snapshot.segments) == 3
    # a companion file leaves the coarse centroids out; every companion searches with the codec's one
    import faiss

    (written, *_) = sorted((tmp_path / "idx" / "segments").glob("*.ivf"))
    assert faiss.read_index(str(written), faiss.IO_FLAG_SKIP_PRECOMPUTE_TABLE).quantizer.ntotal == 0
    assert {int(segment._ivf[0].quantizer.this) for segment in snapshot.segments} == {int(snapshot.ivf.quantizer.this)}
    assert store.describe_vectors()["ivf"]["factory"].startswith("IVF")
    queries = _clustered(np.random.default_rng(11), 20)
    expected_scores, expected_ids = _brute_force(store, queries, 10)
    for searched in (store, IndexStore.open(tmp_path / "idx", DESCRIPTION, read_only=True)):
        scores, ids = searched.snapshot.search_vectors(queries, 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, expected_ids)])
        assert recall >= 0.98 and np.array_equal(ids[:, 0], expected_ids[:, 0])
        # the candidates are re-scored from the stored codes: the scores are the exhaustive ones
        found = ids == expected_ids
        np.testing.assert_allclose(scores[found], expected_scores[found], atol=1e-5)
    store.remove_references(list(range(0, 900, 2)))
    store.save(force_merge=True)  # one merged segment: its companion is built with the merge
    (merged,) = store.snapshot.segments
    assert merged.approximate and len(merged) == 450
    companions = list((tmp_path / "idx" / "segments").glob("*.ivf"))
    assert [path.name.split(".")[0] for path in companions] == [merged.name]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.25]) | st.floats(0, 10, width=32), max_size=60),
       st.integers(0, 70))
def test_best_vote_rows_are_a_stable_sort_of_the_positive_scores(values, count):
    """The votes' top rows equal the brute-force answer: a stable sort of every row, zeros dropped (ties abound)."""
    from provenance.index.snapshot import _best_rows

    scores = np.array(values, dtype=np.float64)
    expected = [row for row in np.argsort(-scores, kind="stable")[:count] if scores[row] > 0]
    assert _best_rows(scores, count).tolist() == expected


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.sampled_from([1, 2, 3, 16]))
def test_postings_keep_every_word_of_every_row_whatever_the_row_blocks(tmp_path_factory, seed, count, row_bits):
    """Postings store a row's low bits and its block in the key: a segment with small blocks
    (many per segment) must give back each reference's words and the scores of a brute-force count."""
    from provenance.index.segment_writer import SegmentInput, SegmentWriter
    from provenance.index.segments import Segment

    rng = np.random.default_rng(seed)
    directory = tmp_path_factory.mktemp("seg")
    words = [np.unique(rng.choice([3, 70, 700, 65_535, *rng.integers(0, 65_536, 5)], size=int(rng.integers(0, 8))))
             .astype(np.uint16) for _ in range(count)]
    items = [SegmentInput(ref_id, vector_ids(np.array([ref_id]), np.array([0])), _unit(rng, 1), b"\0" * 33,
                          b"features", words[ref_id], b"thumb") for ref_id in range(count)]
    writer = SegmentWriter(directory, "seg-1", DIM, None)
    writer.row_bits = row_bits
    info = writer.write(items, None, np.ones(65_536, np.int64), count, norms=np.ones(count, np.float32))
    segment = Segment(directory, info, None)
    pair_words, pair_rows = segment.word_pairs()
    got = sorted(zip(pair_rows.tolist(), pair_words.tolist()))
    assert got == sorted((row, int(word)) for row, held in enumerate(words) for word in held.tolist())
    weights = rng.random(65_536)
    query = np.unique(rng.choice([3, 70, 700, 65_535, *rng.integers(0, 65_536, 3)], size=5)).astype(np.uint16)
    expected = [sum(weights[word] for word in set(query.tolist()) & set(held.tolist())) for held in words]
    assert np.allclose(segment.word_scores(query, weights), expected, rtol=1e-12)
    frequency = np.bincount(np.concatenate(words).astype(np.int64), minlength=65_536) if count else 0
    assert np.array_equal(segment.document_frequency, frequency)
    segment.close()
