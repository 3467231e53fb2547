"""Approximate search for large segments: IVF fast-scan candidates, re-scored from the segment's own codes.

A flat scan of 4-bit codes costs about 1.3 ms per million dimensions-and-vectors; past
:data:`IVF_FROM_VECTORS` vectors in an index that is too slow, so the index trains one IVF
codec (:func:`train_ivf`): a FAISS ``IVF<nlist>,PQ<dim/8>x4fsr`` (4-bit product codes of
each vector's residual from its list centroid, 80 bytes for 1280 dimensions, scanned with
SIMD "fast scan"), trained on a sample of the collection's vectors. Every segment of at
least :data:`SEGMENT_IVF_FROM` vectors then gets a companion file holding such an index
over its rows (derived data: rebuilt from the segment's codes whenever the codec changes).
A query asks the companion for :func:`depth_for` candidates per query vector, and
re-scores them exactly (to the 4-bit codes' precision) from the segment's ``.vec`` file,
read with ``pread`` so that a long-running process keeps only what it uses. Smaller
segments (the recent additions) are scanned whole.

The codec is trained again when the collection has grown :data:`RETRAIN_GROWTH` times
past the size it was trained on.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable

import numpy as np

#: Live vectors from which an index trains an IVF codec.
IVF_FROM_VECTORS = 50_000
#: Segments of at least this many vectors get a companion IVF index.
SEGMENT_IVF_FROM = 20_000
#: Train the codec again once the collection is this many times its training size.
RETRAIN_GROWTH = 4.0
#: Dimensions per 4-bit sub-quantiser of the fast-scan codes.
DIMS_PER_SUBQUANTISER = 8
#: Coarse centroids get about this many training vectors each (FAISS warns below 39).
TRAINING_PER_LIST = 40
#: Share of the lists probed per query vector, up to :data:`SHARE_FALLS_AFTER` lists;
#: beyond, the share falls with the fourth root of the list count (finer cells hold a
#: query's neighbours in relatively fewer of them).
PROBE_SHARE = 0.375
SHARE_FALLS_AFTER = 512
#: Candidates per query vector re-scored from the codes, for collections up to
#: :data:`DEPTH_GROWS_AFTER` vectors; beyond, doubling for every tenfold growth.
DEFAULT_DEPTH = 1000
DEPTH_GROWS_AFTER = 300_000


def lists_for(count: int) -> int:
    """Inverted lists for ``count`` vectors: a power of two near ``sqrt(count)``, with
    enough vectors to train each list's centroid."""
    target = min(math.sqrt(max(count, 1)), max(count, 1) / TRAINING_PER_LIST)
    return int(min(8192, max(16, 2 ** math.floor(math.log2(max(target, 1)) + 0.5))))


def probes_for(nlist: int) -> int:
    share = PROBE_SHARE * min(1.0, SHARE_FALLS_AFTER / max(nlist, 1)) ** 0.25
    return max(1, round(nlist * share))


def depth_for(count: int) -> int:
    growth = max(1.0, count / DEPTH_GROWS_AFTER)
    return int(round(DEFAULT_DEPTH * growth ** math.log10(2)))


@dataclass(frozen=True)
class IvfCodec:
    """A trained, empty IVF fast-scan index (FAISS's serialisation) and the size it was trained for."""

    data: bytes
    trained_on: int

    @cached_property
    def version(self) -> str:
        return hashlib.sha256(self.data).hexdigest()[:16]

    def new_index(self):
        import faiss

        return faiss.deserialize_index(np.frombuffer(self.data, dtype=np.uint8))

    @cached_property
    def _shape(self) -> tuple[int, int, int]:
        import faiss

        index = self.new_index()  # held while its inner IVF index is read (FAISS hands out a borrowed pointer)
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
        return int(ivf.nlist), int(ivf.pq.M), int(ivf.pq.nbits)

    @cached_property
    def quantizer(self):
        """The codec's coarse quantiser (a FAISS flat index this object owns). Companions are
        written without theirs (:func:`build_companion`) and search with this one."""
        import faiss

        index = self.new_index()  # held while its quantiser is copied (a borrowed pointer)
        return faiss.clone_index(faiss.extract_index_ivf(index).quantizer)

    @property
    def nlist(self) -> int:
        return self._shape[0]

    def describe(self) -> dict:
        nlist, subquantisers, bits = self._shape
        return {"factory": f"IVF{nlist},PQ{subquantisers}x{bits}fsr", "trained_on": self.trained_on,
                "nprobe": probes_for(nlist)}


def train_ivf(sample: np.ndarray, count: int) -> IvfCodec:
    """An IVF codec trained on ``sample`` (float32 vectors) for a collection of ``count`` vectors."""
    import faiss

    dim = sample.shape[1]
    nlist = lists_for(count)
    subquantisers = max(2, dim // DIMS_PER_SUBQUANTISER)
    index = faiss.index_factory(dim, f"IVF{nlist},PQ{subquantisers}x4fsr", faiss.METRIC_INNER_PRODUCT)
    faiss.extract_index_ivf(index).cp.niter = 12
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return IvfCodec(faiss.serialize_index(index).tobytes(), int(count))


def build_companion(codec: IvfCodec, blocks: Iterable[np.ndarray], path: Path) -> None:
    """Write ``path``: an IVF index over a segment's rows (``blocks`` of decoded vectors, in row
    order), ids = row numbers.

    It is written with an empty coarse quantiser in place of the codec's centroids (10 MB at
    2,048 lists of 1,280 dimensions, the same in every companion): :func:`open_companion`
    puts the codec's one back.
    """
    import faiss

    from .segment_writer import _write_faiss

    index = codec.new_index()
    start = 0
    for block in blocks:
        block = np.ascontiguousarray(block, dtype=np.float32)
        index.add_with_ids(block, np.arange(start, start + len(block), dtype=np.int64))
        start += len(block)
    centroids, placeholder = index.quantizer, faiss.IndexFlat(index.d, index.metric_type)
    index.quantizer = placeholder  # for the write only: the index still owns (and frees) its centroids
    try:
        _write_faiss(path, lambda target: faiss.write_index(index, target))
    finally:
        index.quantizer = centroids


def open_companion(path: Path, codec: IvfCodec):
    """Read a companion written by :func:`build_companion` and give it the codec's quantiser
    (one per codec in a process, not one per segment). A companion written with its own
    centroids (before they were left out) keeps them. Raises what FAISS raises."""
    import faiss

    # the precomputed table is for L2 residuals (these are inner products) and would read the centroids
    index = faiss.read_index(str(path), faiss.IO_FLAG_SKIP_PRECOMPUTE_TABLE)
    if index.quantizer.ntotal == 0:
        index.quantizer = codec.quantizer
        # the empty placeholder read with it stays allocated (a few hundred bytes): the
        # companion must not free the codec's quantiser
        index.own_fields = False
    return index


def companion_name(segment: str, codec_version: str) -> str:
    return f"{segment}.{codec_version}.ivf"
