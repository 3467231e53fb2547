"""FAISS vector storage over int64 ids.

Each reference may own several vectors (whole image, regions). A vector id packs the
reference id and the region number: ``ref_id << REGION_BITS | region``, so FAISS keeps
only int64 ids and no side table is needed to map a hit back to its reference.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..errors import CorruptIndexError

REGION_BITS = 4
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
    """Exact inner-product search over unit vectors, with add/remove by id."""

    def __init__(self, dim: int, index=None):
        import faiss

        self.dim = dim
        self._index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._lock = threading.RLock()

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def describe(self) -> dict:
        """Type and parameters for the manifest."""
        return {"type": "flat-ip", "metric": "inner_product", "dim": self.dim}

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (n, {self.dim}), got {vectors.shape}")
        with self._lock:
            self._index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))

    def remove_references(self, ref_ids: list[int]) -> int:
        """Remove every vector of the given references; returns how many were removed."""
        import faiss

        if not ref_ids:
            return 0
        every_region = np.arange(MAX_REGIONS, dtype=np.int64)
        ids = (np.asarray(ref_ids, dtype=np.int64)[:, None] << REGION_BITS | every_region[None, :]).ravel()
        with self._lock:
            return int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, FAISS ids) per query, best first; missing hits have id -1."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = max(1, min(k, max(1, self.ntotal)))
        with self._lock:
            return self._index.search(queries, k)

    def save(self, path: Path) -> None:
        import faiss

        with self._lock:
            faiss.write_index(self._index, str(path))

    @classmethod
    def load(cls, path: Path, dim: int) -> "VectorIndex":
        import faiss

        try:
            index = faiss.read_index(str(path))
        except Exception as exc:
            raise CorruptIndexError(f"cannot read vector index {path}: {exc}") from None
        if index.d != dim:
            raise CorruptIndexError(f"vector index {path} has dimension {index.d}, expected {dim}")
        return cls(dim, index)
