"""Index types by size: the automatic switch, approximate search against brute force,
re-ranking rows, compaction, re-training and read-only (memory-mapped) opening."""

from __future__ import annotations

import numpy as np
import pytest

from provenance.errors import CorruptIndexError, ReadOnlyIndexError
from provenance.index import vectors as vector_module
from provenance.index.approximate import lists_for, new_codec
from provenance.index.rerank import RerankRows
from provenance.index.vectors import APPROXIMATE, APPROXIMATE_FROM_VECTORS, EXACT, VectorIndex, build_approximate


def clustered(count: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around 200 centres: neighbours are close, as with real embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((200, dim))
    points = centres[rng.integers(0, 200, count)] + 0.5 * rng.standard_normal((count, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def ids_for(count: int, start: int = 0) -> np.ndarray:
    return (np.arange(start, start + count, dtype=np.int64) << 4) | 0


def brute_force(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return ids[np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :k]]


def test_choice_switches_at_the_documented_size(tmp_path):
    dim = 8
    data = clustered(APPROXIMATE_FROM_VECTORS, dim)
    index = VectorIndex(dim)
    index.add(ids_for(APPROXIMATE_FROM_VECTORS - 1), data[:-1])
    assert index.maintained(tmp_path, "rerank-a") is index and index.kind == EXACT
    index.add(ids_for(1, APPROXIMATE_FROM_VECTORS - 1), data[-1:])
    switched = index.maintained(tmp_path, "rerank-b")
    assert switched.kind == APPROXIMATE and switched.ntotal == APPROXIMATE_FROM_VECTORS
    description = switched.describe()
    assert description["type"] == "ivf-pq" and description["trained_on"] == APPROXIMATE_FROM_VECTORS
    assert description["nlist"] == lists_for(APPROXIMATE_FROM_VECTORS)
    assert description["approximate_from_vectors"] == APPROXIMATE_FROM_VECTORS


def test_search_settings_follow_list_count_and_size():
    from provenance.index.approximate import DEPTH_GROWS_AFTER, SHARE_FALLS_AFTER, probes_for, rerank_depth_for

    assert probes_for(SHARE_FALLS_AFTER) == round(0.375 * SHARE_FALLS_AFTER)
    shares = [probes_for(nlist) / nlist for nlist in (64, 512, 2048, 8192)]
    assert shares[0] == pytest.approx(0.375, abs=0.01) and shares[1] == pytest.approx(0.375)
    assert shares[1] > shares[2] > shares[3] and probes_for(8192) > probes_for(2048)  # fewer in share, more in number
    assert rerank_depth_for(1000) == rerank_depth_for(DEPTH_GROWS_AFTER) == 1000
    assert rerank_depth_for(10 * DEPTH_GROWS_AFTER) == 2000 and rerank_depth_for(100 * DEPTH_GROWS_AFTER) == 4000


def test_approximate_search_agrees_with_brute_force(tmp_path):
    dim, count = 32, 8000
    data, ids = clustered(count, dim), ids_for(count)
    index = build_approximate(dim, tmp_path, "rerank-x", [(ids, data)], count)
    rng = np.random.default_rng(1)
    queries = data[rng.choice(count, 200, replace=False)] + 0.03 * rng.standard_normal((200, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    scores, found = index.search(queries, 10)
    truth = brute_force(data, ids, queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])
    # edited copies of stored vectors; bench_query --recall measures real query embeddings
    assert recall >= 0.99
    assert np.mean(found[:, 0] == truth[:, 0]) >= 0.995
    # re-ranked scores are exact cosines (float16 copies), best first
    expected = np.einsum("qkd,qd->qk", data[np.searchsorted(ids, found)], queries)  # found ids sit in ids
    np.testing.assert_allclose(scores, expected, atol=2e-3)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    _, exhaustive = index.exact_search(queries, 10)
    assert np.mean(exhaustive[:, 0] == truth[:, 0]) >= 0.995


def test_removal_compaction_and_regrowth(tmp_path, monkeypatch):
    dim, count = 16, 6000
    monkeypatch.setattr(vector_module, "APPROXIMATE_FROM_VECTORS", 4000)
    data, ids = clustered(count, dim), ids_for(count)
    index = build_approximate(dim, tmp_path, "rerank-1", [(ids, data)], count)
    target = data[10:11]
    assert index.search(target, 1)[1][0, 0] == ids[10]
    index.remove_references(list(range(0, 2000)))  # a third of the rows die
    assert ids[10] not in index.search(target, 10)[1]
    compacted = index.maintained(tmp_path, "rerank-2")
    assert compacted is not index and compacted.rerank.rows == 4000 and compacted.ntotal == 4000
    assert ids[10] not in compacted.search(target, 10)[1]
    assert compacted.search(data[3000:3001], 1)[1][0, 0] == ids[3000]
    # growing RETRAIN_GROWTH times past the training size re-trains
    more = clustered(20000, dim, seed=3)
    compacted.add(ids_for(20000, count), more)
    retrained = compacted.maintained(tmp_path, "rerank-3")
    assert retrained.describe()["trained_on"] == 24000 and retrained.rerank.rows == 24000
    # shrinking below half the switch size goes back to exact search
    retrained.remove_references(list(range(2000, count + 18500)))
    exact = retrained.maintained(tmp_path, "rerank-4")
    assert exact.kind == EXACT and exact.ntotal == 1500


def test_forced_retrain_rebuilds_from_the_live_vectors(tmp_path, monkeypatch):
    dim, count = 16, 6000
    monkeypatch.setattr(vector_module, "APPROXIMATE_FROM_VECTORS", 4000)
    data, ids = clustered(count, dim), ids_for(count)
    index = build_approximate(dim, tmp_path, "rerank-1", [(ids, data)], count)
    index.remove_references(list(range(0, 100)))
    assert index.maintained(tmp_path, "rerank-2") is index  # too few removals, no growth: nothing to do
    retrained = index.maintained(tmp_path, "rerank-3", force_retrain=True)
    assert retrained is not index and retrained.rerank.stem == "rerank-3"
    assert retrained.ntotal == retrained.rerank.rows == count - 100
    assert retrained.describe()["trained_on"] == count - 100
    assert retrained.describe()["factory"].endswith("fsr")  # residual codes
    queries = data[200:260]
    np.testing.assert_array_equal(retrained.search(queries, 1)[1][:, 0], ids[200:260])
    exact = VectorIndex(dim)
    exact.add(ids[:10], data[:10])
    assert exact.maintained(tmp_path, "rerank-4", force_retrain=True) is exact  # nothing to train


def test_exact_rows_are_read_back_and_truncation_is_reported(tmp_path):
    dim = 8
    rows = RerankRows(tmp_path, "rerank-r", dim, 0, writable=True)
    data = clustered(50, dim)
    rows.append(ids_for(50), data)
    wanted = np.array([[3, 3, 49], [0, 7, 12]])
    np.testing.assert_allclose(rows.exact(wanted), data[wanted], atol=1e-3)
    assert rows.exact(np.zeros((2, 0), np.int64)).shape == (2, 0, dim)
    with open(rows.vector_path, "r+b") as handle:
        handle.truncate(40 * dim * 2)
    with pytest.raises(CorruptIndexError, match="before row 45"):
        rows.exact(np.array([1, 45]))


def test_residual_codes_estimate_scores_more_finely_than_plain_codes(tmp_path):
    import faiss

    dim, count = 32, 4000
    data, ids = clustered(count, dim), ids_for(count)
    centroids = faiss.Kmeans(dim, 200, niter=10, seed=1)
    centroids.train(data)
    queries = clustered(20, dim, seed=5)
    candidates = np.random.default_rng(2).integers(0, count, (20, 300))
    truth = np.einsum("qcd,qd->qc", data[candidates], queries)
    errors = {}
    for name, cells in (("plain", None), ("residual", centroids.centroids)):
        rows = RerankRows(tmp_path, f"rerank-{name}", dim, 0, writable=True)
        rows.append(ids, data)
        rows.set_codec(new_codec(dim, data, cells), cells)
        reopened = RerankRows(tmp_path, f"rerank-{name}", dim, count, writable=False)  # codes, lists and centroids reload
        errors[name] = np.abs(reopened.approximate_scores(queries, candidates) - truth).mean()
    assert errors["residual"] < 0.8 * errors["plain"] and errors["plain"] < 0.1


def test_approximate_scores_are_each_rows_decoded_product(tmp_path):
    """Grouped, deduplicated scoring gives every (query, candidate) its own decoded product."""
    import faiss

    dim, count = 16, 1200
    data, ids = clustered(count, dim), ids_for(count)
    centroids = faiss.Kmeans(dim, 30, niter=5, seed=1)
    centroids.train(data)
    queries = clustered(19, dim, seed=6)  # more than two groups
    rng = np.random.default_rng(3)
    shared = rng.integers(0, count, 40)  # views of one image share candidates, and repeat some
    candidates = np.concatenate([np.tile(shared, (19, 1)), rng.integers(0, count, (19, 25))], axis=1)
    for name, cells in (("plain", None), ("residual", centroids.centroids)):
        rows = RerankRows(tmp_path, f"rerank-{name}", dim, 0, writable=True)
        rows.append(ids, data)
        rows.set_codec(new_codec(dim, data, cells), cells)
        decoded = rows.codec.decode(np.ascontiguousarray(rows._codes.array))
        if cells is not None:
            decoded = decoded + cells[rows._lists.array.astype(np.int64)]
        expected = np.einsum("qcd,qd->qc", decoded[candidates], queries)
        np.testing.assert_allclose(rows.approximate_scores(queries, candidates), expected, atol=1e-5)


def test_fresh_rows_ignore_a_crashed_attempts_files(tmp_path):
    dim = 8
    crashed = RerankRows(tmp_path, "rerank-c", dim, 0, writable=True)
    crashed.append(ids_for(300), clustered(300, dim))
    crashed.set_codec(new_codec(dim, clustered(300, dim)))
    fresh = RerankRows(tmp_path, "rerank-c", dim, 0, writable=True)
    assert fresh.codec is None and fresh.rows == 0 and not fresh.code_path.exists()
    fresh.append(ids_for(2), clustered(2, dim))
    assert fresh.vector_path.stat().st_size == 2 * dim * 2


def test_uncommitted_rerank_rows_are_ignored_and_cut(tmp_path):
    dim = 4
    rows = RerankRows(tmp_path, "rerank-t", dim, 0, writable=True)
    rows.append(ids_for(3), clustered(3, dim))
    rows.append(ids_for(2, 3), clustered(2, dim, seed=2))  # never committed
    reader = RerankRows(tmp_path, "rerank-t", dim, 3, writable=False)
    assert reader.rows_of(ids_for(5))[1].tolist() == [True, True, True, False, False]
    RerankRows(tmp_path, "rerank-t", dim, 3, writable=True)
    assert rows.vector_path.stat().st_size == 3 * dim * 2
    with pytest.raises(ValueError):
        reader_rows = RerankRows(tmp_path, "rerank-t", dim, 3, writable=True)
        reader_rows.append(ids_for(1), clustered(1, dim))  # ids must keep growing


def test_read_only_index_is_memory_mapped_and_refuses_changes(tmp_path):
    dim, count = 16, 3000
    data, ids = clustered(count, dim), ids_for(count)
    index = build_approximate(dim, tmp_path, "rerank-r", [(ids, data)], count)
    index.save(tmp_path / "vectors.faiss")
    reader = VectorIndex.load(tmp_path / "vectors.faiss", dim, rerank=RerankRows(tmp_path, "rerank-r", dim, count, False),
                              params=index.params, read_only=True)
    np.testing.assert_array_equal(reader.search(data[:20], 5)[1], index.search(data[:20], 5)[1])
    with pytest.raises(ReadOnlyIndexError):
        reader.add(ids_for(1, count), data[:1])
    with pytest.raises(ReadOnlyIndexError):
        reader.remove_references([1])
    exact = VectorIndex(dim)
    exact.add(ids[:500], data[:500])
    exact.save(tmp_path / "exact.faiss")
    mapped = VectorIndex.load(tmp_path / "exact.faiss", dim, read_only=True)  # IO_FLAG_MMAP_IFC
    np.testing.assert_array_equal(mapped.search(data[:20], 5)[1], exact.search(data[:20], 5)[1])
    with pytest.raises(ReadOnlyIndexError):
        mapped.add(ids_for(1, count), data[:1])  # FAISS itself would abort the process here
