import json

import numpy as np
import pytest

from provenance.errors import CorruptIndexError, IncompatibleIndexError, IndexExistsError, IndexNotFoundError
from provenance.index.manifest import read_manifest
from provenance.index.metadata import Reference
from provenance.index.store import IndexStore
from provenance.index.vectors import VectorIndex, reference_ids, vector_ids

DESCRIPTION = {"name": "fake", "dim": 16, "fingerprint": "aaaa", "config": {}}


def _unit(rng, n, dim=16):
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_flat_search_equals_brute_force():
    rng = np.random.default_rng(0)
    data, queries = _unit(rng, 500), _unit(rng, 20)
    ids = np.arange(500, dtype=np.int64) * 7 + 3
    index = VectorIndex(16)
    index.add(ids, data)
    scores, found = index.search(queries, 10)
    brute = queries @ data.T
    expected = np.argsort(-brute, axis=1)[:, :10]
    assert np.array_equal(found, ids[expected])
    assert np.allclose(scores, np.take_along_axis(brute, expected, axis=1), atol=1e-5)


def test_flat_search_after_removals_and_memory_mapped_equals_brute_force(tmp_path):
    store = _store_with_refs(tmp_path, 300)
    data = _unit(np.random.default_rng(2), 300)  # the vectors _store_with_refs added
    removed = set(range(0, 300, 3))
    store.remove_references(sorted(removed))
    store.save()
    live = np.array([ref_id for ref_id in range(300) if ref_id not in removed])
    queries = _unit(np.random.default_rng(3), 12)
    brute = queries @ data[live].T
    order = np.argsort(-brute, axis=1)[:, :10]
    for searched in (store, IndexStore.open(tmp_path / "idx", DESCRIPTION, read_only=True)):
        scores, found = searched.vectors.search(queries, 10)
        assert np.array_equal(found, vector_ids(live[order], np.zeros_like(order)))
        assert np.allclose(scores, np.take_along_axis(brute, order, axis=1), atol=1e-5)


def test_vector_id_packing_round_trips():
    refs = np.array([0, 1, 12345, 2**40])
    regions = np.array([0, 15, 3, 7])
    assert np.array_equal(reference_ids(vector_ids(refs, regions)), refs)
    assert reference_ids(np.array([-1]))[0] == -1
    with pytest.raises(ValueError):
        vector_ids(np.array([1]), np.array([16]))


def test_remove_references_drops_every_region():
    rng = np.random.default_rng(1)
    index = VectorIndex(16)
    index.add(vector_ids(np.array([5, 5, 6]), np.array([0, 3, 0])), _unit(rng, 3))
    assert index.remove_references([5]) == 2
    assert index.ntotal == 1


def _store_with_refs(tmp_path, count):
    store = IndexStore.create(tmp_path / "idx", DESCRIPTION)
    rng = np.random.default_rng(2)
    for ref_id in range(count):
        store.metadata.insert(Reference(ref_id, f"sha{ref_id}", f"p{ref_id}.jpg", added_at=1.0))
    store.vectors.add(vector_ids(np.arange(count), np.zeros(count)), _unit(rng, count))
    store.save()
    return store


def test_save_and_reopen(tmp_path):
    store = _store_with_refs(tmp_path, 5)
    store.close()
    reopened = IndexStore.open(tmp_path / "idx", DESCRIPTION)
    assert reopened.vectors.ntotal == 5 and reopened.metadata.count() == 5
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["reference_count"] == 5 and manifest["format_version"] == 1
    assert len(list((tmp_path / "idx").glob("vectors-*.faiss"))) == 1


def test_interrupted_save_leaves_previous_index_usable(tmp_path, monkeypatch):
    store = _store_with_refs(tmp_path, 3)
    store.metadata.insert(Reference(3, "sha3", "p3.jpg", added_at=1.0))
    store.vectors.add(vector_ids(np.array([3]), np.array([0])), _unit(np.random.default_rng(3), 1))

    def crash():
        raise KeyboardInterrupt("power cut")

    # the new FAISS file is written, then the process dies before the SQLite commit
    monkeypatch.setattr(store.metadata, "commit", crash)
    with pytest.raises(KeyboardInterrupt):
        store.save()
    monkeypatch.undo()
    store.close()
    reopened = IndexStore.open(tmp_path / "idx", DESCRIPTION)
    assert reopened.metadata.count() == 3
    assert reopened.vectors.ntotal == 3


def test_mismatched_faiss_and_metadata_is_reported(tmp_path):
    store = _store_with_refs(tmp_path, 2)
    store.metadata.set_state("vector_count", "7")
    store.metadata.commit()
    store.close()
    with pytest.raises(CorruptIndexError, match="expects 7"):
        IndexStore.open(tmp_path / "idx", DESCRIPTION)


def test_incompatible_embedder_and_format_are_refused(tmp_path):
    _store_with_refs(tmp_path, 1).close()
    other = dict(DESCRIPTION, fingerprint="bbbb", name="other")
    with pytest.raises(IncompatibleIndexError, match="built with embedder 'fake'"):
        IndexStore.open(tmp_path / "idx", other)
    manifest_path = tmp_path / "idx" / "manifest.json"
    data = json.loads(manifest_path.read_text())
    data["format_version"] = 99
    manifest_path.write_text(json.dumps(data))
    with pytest.raises(IncompatibleIndexError, match="format version 99"):
        read_manifest(tmp_path / "idx")


def test_create_refuses_existing_and_open_refuses_missing(tmp_path):
    _store_with_refs(tmp_path, 1).close()
    with pytest.raises(IndexExistsError):
        IndexStore.create(tmp_path / "idx", DESCRIPTION)
    IndexStore.create(tmp_path / "idx", DESCRIPTION, overwrite=True).close()
    with pytest.raises(IndexNotFoundError):
        IndexStore.open(tmp_path / "nothing")
