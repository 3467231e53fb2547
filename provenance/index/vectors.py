"""FAISS vector storage over int64 ids, exact or approximate by collection size.

Each reference may own several vectors (whole image, regions). A vector id packs the
reference id and the region number: ``ref_id << REGION_BITS | region``, so FAISS keeps
only int64 ids and no side table is needed to map a hit back to its reference.

Index choice (recorded in the manifest's ``vector_index``), decided at every save:

* below :data:`APPROXIMATE_FROM_VECTORS` vectors: exact inner-product search (flat);
* from there on: IVF-PQ trained on the collection's own vectors, with exact re-ranking
  from float16 copies on disk (:mod:`.approximate`);
* the IVF-PQ index is re-trained when the collection has grown :data:`RETRAIN_GROWTH`
  times past the size it was trained on, and goes back to exact search when removals
  shrink it below half the switch size;
* removed vectors leave float16 rows behind; once they are :data:`COMPACT_DEAD_FRACTION`
  of the rows, the rows are rewritten without them (also on demand: ``compact``).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from ..errors import CorruptIndexError, ReadOnlyIndexError
from ..topk import top_dots
from . import approximate
from .rerank import RerankRows

REGION_BITS = 4
#: Collections of at least this many vectors (3 per reference) get an approximate index.
APPROXIMATE_FROM_VECTORS = 100_000
#: Re-train the approximate index once the collection is this many times its training size.
RETRAIN_GROWTH = 4.0
#: Rewrite the re-ranking rows once removed vectors make up this share of them.
COMPACT_DEAD_FRACTION = 0.25
EXACT = "flat-ip"
APPROXIMATE = "ivf-pq"
MAX_REGIONS = 1 << REGION_BITS


def vector_ids(ref_ids: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Pack reference ids and region numbers into FAISS ids."""
    regions = np.asarray(regions, dtype=np.int64)
    if regions.size and (regions.min() < 0 or regions.max() >= MAX_REGIONS):
        raise ValueError(f"region numbers must lie in [0, {MAX_REGIONS})")
    return (np.asarray(ref_ids, dtype=np.int64) << REGION_BITS) | regions


def reference_ids(ids: np.ndarray) -> np.ndarray:
    """The reference id of each FAISS id (-1 stays -1)."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.where(ids < 0, -1, ids >> REGION_BITS)


def region_numbers(ids: np.ndarray) -> np.ndarray:
    """The region number of each FAISS id (-1 for a missing hit)."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.where(ids < 0, -1, ids & (MAX_REGIONS - 1))


class VectorIndex:
    """Inner-product search over unit vectors with add/remove by id (see the module docstring).

    ``read_only`` indexes refuse every change (exact ones are memory-mapped): FAISS aborts
    the process (SIGABRT) when asked to add to a memory-mapped index, so the check must
    happen here.
    """

    def __init__(self, dim: int, index=None, *, rerank: "RerankRows | None" = None,
                 params: dict | None = None, read_only: bool = False):
        import faiss

        self.dim = dim
        self._index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.rerank = rerank
        self.params = dict(params or {})
        self.read_only = read_only
        self._lock = threading.RLock()

    @property
    def kind(self) -> str:
        return EXACT if self.rerank is None else APPROXIMATE

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def describe(self) -> dict:
        """Type and parameters for the manifest (search settings as this version uses them)."""
        base = {"type": self.kind, "metric": "inner_product", "dim": self.dim,
                "approximate_from_vectors": APPROXIMATE_FROM_VECTORS}
        return {**base, **self.params, **self.search_settings()}

    def search_settings(self) -> dict:
        """Probes and candidate depths of an approximate index, from its list count and
        current size (search-time choices: an index built by an older version gets this
        version's, and the depth follows the collection's growth)."""
        if self.rerank is None:
            return {}
        return {"nprobe": approximate.probes_for(int(self.params["nlist"])),
                "rerank_depth": approximate.rerank_depth_for(self.ntotal),
                "exact_depth": approximate.DEFAULT_EXACT_DEPTH}

    def check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyIndexError("this index was opened read-only; open it for writing to change it")

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (n, {self.dim}), got {vectors.shape}")
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        self.check_writable()
        with self._lock:
            if self.rerank is not None:
                order = np.argsort(ids, kind="stable")
                self.rerank.append(ids[order], vectors[order])
            self._index.add_with_ids(vectors, ids)

    def remove_references(self, ref_ids: list[int]) -> int:
        """Remove every vector of the given references; returns how many were removed."""
        import faiss

        if not ref_ids:
            return 0
        self.check_writable()
        every_region = np.arange(MAX_REGIONS, dtype=np.int64)
        ids = (np.asarray(ref_ids, dtype=np.int64)[:, None] << REGION_BITS | every_region[None, :]).ravel()
        with self._lock:
            return int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, FAISS ids) per query, best first; missing hits have id -1."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = max(1, min(k, max(1, self.ntotal)))
        with self._lock:
            if self.rerank is None:
                return self._flat_search(queries, k)
            settings = self.search_settings()
            return approximate.search_and_rerank(self._index, self.rerank, queries, k, settings["nprobe"],
                                                 settings["rerank_depth"], settings["exact_depth"])

    def _flat_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # one matrix product over the stored (or memory-mapped) vectors: about 2 ms for 7
        # queries against 6,900 vectors, where IndexFlatIP.search took 5-10 ms
        import faiss

        flat = faiss.downcast_index(self._index.index)
        count = flat.ntotal
        if count == 0 or not isinstance(flat, faiss.IndexFlat) or flat.metric_type != faiss.METRIC_INNER_PRODUCT:
            return self._index.search(queries, k)
        stored = faiss.rev_swig_ptr(flat.get_xb(), count * self.dim).reshape(count, self.dim)
        ids = faiss.rev_swig_ptr(self._index.id_map.data(), count)
        top_scores, top_rows = top_dots(queries, stored, k)
        return top_scores, ids[top_rows].astype(np.int64)

    def exact_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exhaustive top-``k`` over the stored vectors (the reference for recall figures)."""
        if self.rerank is None:
            return self.search(queries, k)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        best_scores = np.full((len(queries), k), -np.inf, np.float32)
        best_ids = np.full((len(queries), k), -1, np.int64)
        for ids, vectors in self.rerank.chunks(keep=approximate.live_ids(self._index)):
            scores = queries @ vectors.T
            merged_scores = np.concatenate([best_scores, scores], axis=1)
            merged_ids = np.concatenate([best_ids, np.broadcast_to(ids, scores.shape)], axis=1)
            order = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
            best_scores = np.take_along_axis(merged_scores, order, axis=1)
            best_ids = np.take_along_axis(merged_ids, order, axis=1)
        return best_scores, best_ids

    def save(self, path: Path) -> None:
        import faiss

        self.check_writable()
        with self._lock:
            faiss.write_index(self._index, str(path))
            if self.rerank is not None:
                self.rerank.flush()

    @classmethod
    def load(cls, path: Path, dim: int, *, rerank: "RerankRows | None" = None,
             params: dict | None = None, read_only: bool = False) -> "VectorIndex":
        import faiss

        # Read-only exact indexes are memory-mapped without a copy. FAISS copies an IVF
        # fast-scan index's block lists into RAM even under IO_FLAG_MMAP_IFC and keeps the
        # file mapped as well (twice the resident memory), so approximate ones are read.
        mapped = read_only and rerank is None
        try:
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC if mapped else 0)
        except Exception as exc:
            raise CorruptIndexError(f"cannot read vector index {path}: {exc}") from None
        if index.d != dim:
            raise CorruptIndexError(f"vector index {path} has dimension {index.d}, expected {dim}")
        return cls(dim, index, rerank=rerank, params=params, read_only=read_only)

    # -- choosing and maintaining the index type ------------------------------------------
    def maintained(self, directory: Path, stem: str, force_compact: bool = False,
                   force_retrain: bool = False) -> "VectorIndex":
        """This index, or its replacement when size, growth or removals call for one.

        ``force_compact`` rewrites the re-ranking rows without removed vectors now;
        ``force_retrain`` re-trains an approximate index now (an exact one has nothing to
        train), e.g. to give an index built by an older version the current parameters.
        A replacement writes its re-ranking rows to new files named ``stem``; the caller
        commits them and then deletes the old ones.
        """
        self.check_writable()
        with self._lock:
            count = self.ntotal
            if self.rerank is None:
                if count < APPROXIMATE_FROM_VECTORS:
                    return self
                ids, vectors = self.contents()
                return build_approximate(self.dim, directory, stem, [(ids, vectors)], count)
            trained_on = int(self.params.get("trained_on", count))
            if count < APPROXIMATE_FROM_VECTORS // 2:
                return _exact_from(self.dim, self.rerank.chunks(keep=approximate.live_ids(self._index)))
            if force_retrain or count >= RETRAIN_GROWTH * trained_on:
                live = approximate.live_ids(self._index)
                return build_approximate(self.dim, directory, stem, self.rerank.chunks(keep=live), count)
            dead = self.rerank.rows - count
            if dead and (force_compact or dead >= COMPACT_DEAD_FRACTION * self.rerank.rows):
                rows = RerankRows(directory, stem, self.dim, 0, writable=True)
                rows.set_codec(self.rerank.codec, self.rerank.centroids)
                for ids, vectors in self.rerank.chunks(keep=approximate.live_ids(self._index)):
                    rows.append(ids, vectors)
                return VectorIndex(self.dim, self._index, rerank=rows, params=self.params)
            return self

    def contents(self) -> tuple[np.ndarray, np.ndarray]:
        """Every stored ``(id, vector)``, by ascending id (exact indexes only)."""
        import faiss

        if self.rerank is not None:
            raise ValueError("an approximate index keeps only codes; read its re-ranking rows instead")
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        vectors = self._index.index.reconstruct_n(0, self.ntotal) if self.ntotal else np.zeros((0, self.dim), np.float32)
        order = np.argsort(ids, kind="stable")
        return ids[order], vectors[order]


def _exact_from(dim: int, chunks) -> VectorIndex:
    index = VectorIndex(dim)
    for ids, vectors in chunks:
        index.add(ids, vectors)
    return index


def build_approximate(dim: int, directory: Path, stem: str, chunks, count: int) -> VectorIndex:
    """An approximate index over ``chunks`` of ``(ascending ids, vectors)``.

    The vectors are copied into new re-ranking rows ``stem`` in ``directory``, IVF-PQ is
    trained on a sample of them, and all are added. ``count`` is recorded as the training size.
    """
    rows = RerankRows(directory, stem, dim, 0, writable=True)
    for ids, vectors in chunks:
        rows.append(ids, vectors)
    nlist = approximate.lists_for(rows.rows)
    training = rows.sample(nlist * approximate.TRAINING_PER_LIST)
    started = time.perf_counter()
    index = approximate.new_ivf_pq(dim, training, nlist)
    centroids = approximate.coarse_centroids(index)
    rows.set_codec(approximate.new_codec(dim, training, centroids), centroids)
    for ids, vectors in rows.chunks():
        index.add_with_ids(np.ascontiguousarray(vectors), ids)
    params = {"factory": approximate.factory_string(index), "nlist": nlist,
              "rerank": f"residual PQ{rows.code_size}x8 in RAM, then float16 on disk", "trained_on": count,
              "training_vectors": len(training), "trained_at": time.time(),
              "build_seconds": round(time.perf_counter() - started, 1)}
    return VectorIndex(dim, index, rerank=rows, params=params)
