"""Re-ranking rows of the approximate index: float16 copies, finer PQ codes, ids.

Ids in :class:`RerankRows` only ever grow (reference ids are never reused), so the id file
stays sorted and a binary search maps a FAISS id to its row. Removed vectors leave their
rows behind until compaction rewrites the files. :mod:`.approximate` builds and searches
the index these rows re-rank.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import CorruptIndexError

_RERANK_CHUNK = 65536
#: Query vectors whose candidates are decoded together in the middle stage: the views of
#: one image (up to 7) share about two thirds of theirs; more queries only grow the product.
SCORE_GROUP = 8
#: Files of one set of re-ranking rows (``<stem><suffix>``): rows, ids, codes, codec,
#: centroids and each row's centroid.
FILE_SUFFIXES = (".f16", ".ids", ".pq", ".codec", ".centroids", ".lists")


def nearest_centroids(centroids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Index (uint16) of the L2-nearest centroid of each vector: the smallest residual."""
    import faiss

    assigner = faiss.IndexFlatL2(centroids.shape[1])
    assigner.add(np.ascontiguousarray(centroids, dtype=np.float32))
    _, nearest = assigner.search(np.ascontiguousarray(vectors, dtype=np.float32), 1)
    return nearest[:, 0].astype(np.uint16)


class _Growing:
    """A 2-D array in RAM that grows by appending rows (capacity doubles)."""

    def __init__(self, initial: np.ndarray):
        self._data, self._size = initial, len(initial)

    def append(self, block: np.ndarray) -> None:
        needed = self._size + len(block)
        if needed > len(self._data):
            grown = np.empty((max(needed, 2 * len(self._data), 1024), *self._data.shape[1:]), self._data.dtype)
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size : needed] = block
        self._size = needed

    @property
    def array(self) -> np.ndarray:
        return self._data[: self._size]


class RerankRows:
    """Append-only copies of every vector for re-ranking, with their ascending ids.

    Files ``<stem>.f16`` (``rows x dim`` float16 on disk: queries read only the rows they
    re-score; maintenance maps it to read it through), ``<stem>.ids`` (int64, in RAM), ``<stem>.pq`` (8-bit product
    quantiser codes, ``dim / 4`` bytes per row, in RAM), ``<stem>.codec`` (that
    quantiser) and, for residual codes, ``<stem>.centroids`` (float32) with
    ``<stem>.lists`` (uint16 per row, in RAM): each row's code then quantises its
    difference from its nearest centroid, about half the vector's energy, so the same
    bytes estimate scores about twice as finely. Rows past the committed count (a save cut
    short) are ignored by readers and cut off by writers.
    """

    def __init__(self, directory: Path, stem: str, dim: int, rows: int, writable: bool):
        self.directory, self.stem, self.dim, self.writable = Path(directory), stem, dim, writable
        self._rows = rows
        self._lock = threading.RLock()
        self._mapped: tuple[int, np.ndarray] | None = None
        if writable and not rows:  # a fresh start: files of this stem are a crashed attempt's
            for path in self.files():
                path.unlink(missing_ok=True)
        self.codec = None
        self.centroids: np.ndarray | None = None
        if self.codec_path.exists():
            import faiss

            self.codec = faiss.read_ProductQuantizer(str(self.codec_path))
        if self.centroid_path.exists():
            self.centroids = np.fromfile(self.centroid_path, dtype=np.float32).reshape(-1, dim)
        widths = {self.vector_path: dim * 2, self.id_path: 8, self.code_path: self.code_size,
                  self.list_path: 2 if self.centroids is not None else 0}
        for path, width in widths.items():
            if not width and not path.exists():
                continue
            if (path.stat().st_size if path.exists() else 0) < rows * width:
                raise CorruptIndexError(f"{path} holds fewer rows than the {rows} committed")
            if writable:  # drop rows of a save that never reached its commit point
                with open(path, "ab") as handle:
                    handle.truncate(rows * width)
        self._ids = _Growing(np.fromfile(self.id_path, dtype=np.int64, count=rows) if rows else np.zeros(0, np.int64))
        self._codes = _Growing(
            np.fromfile(self.code_path, dtype=np.uint8, count=rows * self.code_size).reshape(rows, self.code_size)
            if rows and self.code_size else np.zeros((0, self.code_size), np.uint8))
        self._lists = _Growing(np.fromfile(self.list_path, dtype=np.uint16, count=rows)
                               if rows and self.centroids is not None else np.zeros(0, np.uint16))

    def files(self) -> list[Path]:
        """Every file of these rows (:data:`FILE_SUFFIXES`), present or not."""
        return [self._file(suffix) for suffix in FILE_SUFFIXES]

    def _file(self, suffix: str) -> Path:
        return self.directory / f"{self.stem}{suffix}"

    @property
    def vector_path(self) -> Path:
        return self._file(".f16")

    @property
    def id_path(self) -> Path:
        return self._file(".ids")

    @property
    def code_path(self) -> Path:
        return self._file(".pq")

    @property
    def codec_path(self) -> Path:
        return self._file(".codec")

    @property
    def centroid_path(self) -> Path:
        return self._file(".centroids")

    @property
    def list_path(self) -> Path:
        return self._file(".lists")

    @property
    def code_size(self) -> int:
        return int(self.codec.code_size) if self.codec is not None else 0

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def ids(self) -> np.ndarray:
        return self._ids.array

    def append(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Append rows; ``ids`` must be ascending and above every stored id."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if not len(ids):
            return
        with self._lock:
            if np.any(np.diff(ids) <= 0) or (self._rows and ids[0] <= self._ids.array[-1]):
                raise ValueError("rerank rows need ascending ids above every stored id")
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            with open(self.vector_path, "ab") as handle:
                handle.write(vectors.astype(np.float16).tobytes())
            with open(self.id_path, "ab") as handle:
                handle.write(ids.tobytes())
            self._ids.append(ids)
            if self.codec is not None:
                self._append_codes(vectors)
            self._rows += len(ids)

    def _append_codes(self, vectors: np.ndarray) -> None:
        if self.centroids is not None:
            lists = nearest_centroids(self.centroids, vectors)
            vectors = vectors - self.centroids[lists]
            with open(self.list_path, "ab") as handle:
                handle.write(lists.tobytes())
            self._lists.append(lists)
        codes = self.codec.compute_codes(np.ascontiguousarray(vectors))
        with open(self.code_path, "ab") as handle:
            handle.write(codes.tobytes())
        self._codes.append(codes)

    def set_codec(self, codec, centroids: np.ndarray | None = None) -> None:
        """Use a trained ``faiss.ProductQuantizer`` and encode every stored row with it:
        the residual from its nearest of ``centroids`` when given (see
        :func:`~provenance.index.approximate.new_codec`)."""
        import faiss

        if centroids is not None and len(centroids) > np.iinfo(np.uint16).max:
            raise ValueError("at most 65535 centroids")
        with self._lock:
            self.codec = codec
            faiss.write_ProductQuantizer(codec, str(self.codec_path))
            self.centroids = None if centroids is None else np.ascontiguousarray(centroids, dtype=np.float32)
            for path in (self.code_path, self.list_path, self.centroid_path):
                path.unlink(missing_ok=True)
            if self.centroids is not None:
                self.centroids.tofile(self.centroid_path)
            self._codes = _Growing(np.zeros((0, self.code_size), np.uint8))
            self._lists = _Growing(np.zeros(0, np.uint16))
            for _, vectors in self.chunks():
                self._append_codes(vectors)

    def flush(self) -> None:
        """fsync the files (before the commit point names their row count)."""
        for path in self.files():
            if path.exists():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())

    def _vectors(self) -> np.ndarray:
        with self._lock:
            if self._mapped is None or self._mapped[0] != self._rows:
                vectors = (np.memmap(self.vector_path, dtype=np.float16, mode="r", shape=(self._rows, self.dim))
                           if self._rows else np.zeros((0, self.dim), np.float16))
                self._mapped = (self._rows, vectors)
            return self._mapped[1]

    def rows_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row numbers, found mask) of FAISS ids; missing ids get row 0 and False."""
        stored = self._ids.array
        flat = np.asarray(ids, dtype=np.int64)
        if not len(stored):
            return np.zeros(flat.shape, np.int64), np.zeros(flat.shape, bool)
        # sorted unique keys: numpy's binary search then starts each key where the last
        # ended, and a query's views share most candidates (10 ms -> 3 ms at 3M rows)
        unique, inverse = np.unique(flat, return_inverse=True)
        rows = np.minimum(np.searchsorted(stored, unique), len(stored) - 1)
        found = (unique >= 0) & (stored[rows] == unique)
        inverse = inverse.reshape(flat.shape)
        return np.where(found, rows, 0)[inverse], found[inverse]

    def exact(self, rows: np.ndarray) -> np.ndarray:
        """float32 vectors of ``rows`` (any shape) from the float16 file.

        Read with ``pread``, not through the memory map: a page fault maps the whole
        surrounding cached block ("fault-around"), so a long-running query process would
        end up holding the entire file in its resident set for a few rows per query.
        One ``pread`` per row, joined once.
        """
        unique, inverse = np.unique(rows.ravel(), return_inverse=True)
        if not len(unique):
            return np.zeros((*rows.shape, self.dim), np.float32)
        width = self.dim * 2
        descriptor = os.open(self.vector_path, os.O_RDONLY)
        try:
            pieces = [os.pread(descriptor, width, row * width) for row in unique.tolist()]
        finally:
            os.close(descriptor)
        data = b"".join(pieces)
        if len(data) != len(unique) * width:
            short = next(row for row, piece in zip(unique.tolist(), pieces) if len(piece) != width)
            raise CorruptIndexError(f"{self.vector_path} ends before row {short}")
        import torch

        block = torch.frombuffer(bytearray(data), dtype=torch.float16).reshape(len(unique), self.dim)
        # torch converts float16 about ten times faster than numpy's astype
        return block[torch.from_numpy(inverse)].float().numpy().reshape(*rows.shape, self.dim)

    def approximate_scores(self, queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Inner products of each query (``q x dim``) with its candidate ``rows`` (``q x c``),
        estimated from the in-RAM PQ codes (plus the centroid's share for residual codes).

        The views of one image share most candidates, so each group of
        :data:`SCORE_GROUP` queries decodes its distinct rows once and scores them
        against the whole group with one matrix product.
        """
        import torch

        scores = np.empty(rows.shape, np.float32)
        for start in range(0, len(queries), SCORE_GROUP):
            group = slice(start, start + SCORE_GROUP)
            unique, inverse = np.unique(rows[group], return_inverse=True)
            decoded = self.codec.decode(np.ascontiguousarray(self._codes.array[unique]))
            with torch.inference_mode():  # torch, not numpy BLAS: shares the embedder's thread pool
                query_tensor = torch.from_numpy(np.ascontiguousarray(queries[group], dtype=np.float32))
                products = query_tensor @ torch.from_numpy(decoded).T  # group x distinct rows
                if self.centroids is not None:
                    to_centroids = query_tensor @ torch.from_numpy(self.centroids).T
                    products += to_centroids[:, torch.from_numpy(self._lists.array[unique].astype(np.int64))]
                columns = torch.from_numpy(inverse.reshape(rows[group].shape).astype(np.int64))
                scores[group] = torch.gather(products, 1, columns).numpy()
        return scores

    def chunks(self, keep: np.ndarray | None = None, size: int = _RERANK_CHUNK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(ids, float32 vectors)`` in row order, optionally only rows whose id is in ``keep``."""
        stored_ids, vectors = self._ids.array, self._vectors()
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
        vectors = self._vectors()
        if len(vectors) <= count:
            return np.array(vectors, dtype=np.float32)
        rows = np.sort(np.random.default_rng(seed).choice(len(vectors), size=count, replace=False))
        return np.asarray(vectors[rows], dtype=np.float32)
