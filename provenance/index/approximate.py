"""Approximate search for large collections: IVF-PQ candidates, exact re-ranking.

An exact flat index keeps every float32 vector in RAM (5 KB per 1280-d vector) and scans
all of them per query. Beyond :data:`~provenance.index.vectors.APPROXIMATE_FROM_VECTORS`
the store switches to this index:

* a FAISS ``IVF<nlist>,PQ<dim/4>x4fs`` index (product quantisation with 4-bit codes per
  4 dimensions, scanned with SIMD "fast scan"; 160 bytes for 1280-d), trained on the
  collection's own vectors, holds the codes and int64 ids and proposes candidates;
* :class:`RerankRows`, an append-only float16 copy of every vector on disk
  (memory-mapped, so only the rows a query touches are read), re-scores the candidates
  exactly. Results are therefore exact cosines, and recall against exact search depends
  only on whether the true neighbours are among the ``rerank_depth`` candidates.

Ids in :class:`RerankRows` only ever grow (reference ids are never reused), so the id file
stays sorted and a binary search maps a FAISS id to its row. Removed vectors leave their
rows behind until compaction rewrites the files.
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import CorruptIndexError

#: Dimensions per 4-bit PQ sub-quantiser.
DIMS_PER_SUBQUANTISER = 4
#: Share of the inverted lists probed per query vector. Query embeddings of edited
#: copies and of unrelated photos lie far from every reference (cosine 0.7-0.85), so
#: their neighbours are spread over many cells; on the bench, 1/8 of the lists gave
#: recall@10 0.976 and 3/8 gave 0.99 (docs/benchmarks.md).
PROBE_SHARE = 0.375
#: Candidates re-scored exactly per query vector (at least; more when ``k`` is larger).
DEFAULT_RERANK_DEPTH = 1000
#: Coarse centroids get about this many training vectors each (FAISS warns below 39).
TRAINING_PER_LIST = 40
_RERANK_CHUNK = 65536


def lists_for(count: int) -> int:
    """Inverted lists for ``count`` vectors: a power of two near ``sqrt(count)``, with
    enough vectors to train each list's centroid."""
    target = min(math.sqrt(max(count, 1)), max(count, 1) / TRAINING_PER_LIST)
    return int(min(8192, max(16, 2 ** math.floor(math.log2(max(target, 1)) + 0.5))))


def probes_for(nlist: int) -> int:
    """Lists probed per query vector (:data:`PROBE_SHARE` of them)."""
    return max(1, round(nlist * PROBE_SHARE))


class RerankRows:
    """Append-only float16 vectors and their sorted int64 ids, in two files.

    ``<stem>.f16`` holds ``rows x dim`` float16 values and ``<stem>.ids`` the ids. Rows past
    the committed count (a save cut short) are ignored by readers and cut off by writers.
    """

    def __init__(self, directory: Path, stem: str, dim: int, rows: int, writable: bool):
        self.directory, self.stem, self.dim, self.writable = Path(directory), stem, dim, writable
        self._rows = rows
        self._lock = threading.RLock()
        self._mapped: tuple[int, np.ndarray, np.ndarray] | None = None
        sizes = (self.vector_path.stat().st_size if self.vector_path.exists() else 0,
                 self.id_path.stat().st_size if self.id_path.exists() else 0)
        if sizes[0] < rows * dim * 2 or sizes[1] < rows * 8:
            raise CorruptIndexError(f"{self.vector_path} holds fewer rows than the {rows} committed")
        if writable:  # drop rows of a save that never reached its commit point
            for path, width in ((self.vector_path, dim * 2), (self.id_path, 8)):
                with open(path, "ab") as handle:
                    handle.truncate(rows * width)

    @property
    def vector_path(self) -> Path:
        return self.directory / f"{self.stem}.f16"

    @property
    def id_path(self) -> Path:
        return self.directory / f"{self.stem}.ids"

    @property
    def rows(self) -> int:
        return self._rows

    def append(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Append rows; ``ids`` must be ascending and above every stored id."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if not len(ids):
            return
        with self._lock:
            last = self._last_id()
            if np.any(np.diff(ids) <= 0) or (last is not None and ids[0] <= last):
                raise ValueError("rerank rows need ascending ids above every stored id")
            with open(self.vector_path, "ab") as handle:
                handle.write(np.ascontiguousarray(vectors, dtype=np.float16).tobytes())
            with open(self.id_path, "ab") as handle:
                handle.write(ids.tobytes())
            self._rows += len(ids)

    def flush(self) -> None:
        """fsync both files (before the commit point names their row count)."""
        for path in (self.vector_path, self.id_path):
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())

    def _maps(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            if self._mapped is None or self._mapped[0] != self._rows:
                if self._rows == 0:
                    self._mapped = (0, np.zeros(0, np.int64), np.zeros((0, self.dim), np.float16))
                else:
                    ids = np.memmap(self.id_path, dtype=np.int64, mode="r", shape=(self._rows,))
                    vectors = np.memmap(self.vector_path, dtype=np.float16, mode="r", shape=(self._rows, self.dim))
                    self._mapped = (self._rows, ids, vectors)
            return self._mapped[1], self._mapped[2]

    def _last_id(self) -> int | None:
        ids, _ = self._maps()
        return int(ids[-1]) if len(ids) else None

    def gather(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(float32 vectors, found mask)`` for FAISS ids (missing ones give zero vectors)."""
        stored_ids, vectors = self._maps()
        flat = np.asarray(ids, dtype=np.int64).ravel()
        rows = np.searchsorted(stored_ids, flat, side="left") if len(stored_ids) else np.zeros(len(flat), np.int64)
        rows = np.minimum(rows, max(len(stored_ids) - 1, 0))
        found = (flat >= 0) & (len(stored_ids) > 0)
        if len(stored_ids):
            found &= stored_ids[rows] == flat
        out = np.zeros((len(flat), self.dim), np.float32)
        if found.any():
            wanted = rows[found]
            order = np.argsort(wanted)  # sorted reads keep page faults sequential
            out[np.flatnonzero(found)[order]] = vectors[wanted[order]].astype(np.float32)
        return out.reshape(*np.shape(ids), self.dim), found.reshape(np.shape(ids))

    def chunks(self, keep: np.ndarray | None = None, size: int = _RERANK_CHUNK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(ids, float32 vectors)`` in row order, optionally only rows whose id is in ``keep``."""
        stored_ids, vectors = self._maps()
        for start in range(0, len(stored_ids), size):
            ids = np.array(stored_ids[start : start + size])
            block = np.array(vectors[start : start + size], dtype=np.float32)
            if keep is not None:
                mask = np.isin(ids, keep)
                ids, block = ids[mask], block[mask]
            if len(ids):
                yield ids, block

    def sample(self, count: int, seed: int = 0) -> np.ndarray:
        """Up to ``count`` rows drawn uniformly (float32), for training."""
        _, vectors = self._maps()
        if len(vectors) <= count:
            return np.array(vectors, dtype=np.float32)
        rows = np.sort(np.random.default_rng(seed).choice(len(vectors), size=count, replace=False))
        return np.asarray(vectors[rows], dtype=np.float32)

    def remove_files(self) -> None:
        self._mapped = None
        self.vector_path.unlink(missing_ok=True)
        self.id_path.unlink(missing_ok=True)


def new_ivf_pq(dim: int, training: np.ndarray, nlist: int | None = None):
    """A trained, empty FAISS IVF-PQ fast-scan index for inner product over ``training``."""
    import faiss

    nlist = nlist or lists_for(len(training))
    subquantisers = _subquantisers(dim)
    index = faiss.index_factory(dim, f"IVF{nlist},PQ{subquantisers}x4fs", faiss.METRIC_INNER_PRODUCT)
    faiss.extract_index_ivf(index).cp.niter = 12
    index.train(np.ascontiguousarray(training, dtype=np.float32))
    return index


def _subquantisers(dim: int) -> int:
    wanted = max(2, dim // DIMS_PER_SUBQUANTISER)
    return next(m for m in range(wanted - wanted % 2, 0, -2) if dim % m == 0) if dim % 2 == 0 else dim


def live_ids(index) -> np.ndarray:
    """Every id stored in a FAISS IVF index, sorted."""
    import faiss

    invlists = faiss.extract_index_ivf(index).invlists
    parts = [faiss.rev_swig_ptr(invlists.get_ids(number), invlists.list_size(number)).copy()
             for number in range(invlists.nlist) if invlists.list_size(number)]
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def search_and_rerank(index, rerank: RerankRows, queries: np.ndarray, k: int, nprobe: int, depth: int):
    """Top-``k`` exact inner products among the IVF-PQ index's ``max(depth, k)`` candidates."""
    import faiss

    faiss.extract_index_ivf(index).nprobe = nprobe
    _, candidates = index.search(queries, max(depth, k))
    vectors, found = rerank.gather(candidates)
    scores = np.einsum("qcd,qd->qc", vectors, queries)
    scores[~found] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top_scores = np.take_along_axis(scores, order, axis=1)
    top_ids = np.take_along_axis(np.where(found, candidates, -1), order, axis=1)
    missing = ~np.isfinite(top_scores)
    top_scores[missing], top_ids[missing] = -np.inf, -1
    return top_scores.astype(np.float32), top_ids.astype(np.int64)


def factory_string(index) -> str:
    """The ``index_factory`` string that describes ``index`` (for the manifest)."""
    import faiss

    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    return f"IVF{ivf.nlist},PQ{ivf.pq.M}x{ivf.pq.nbits}fs"

