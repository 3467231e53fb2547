"""Approximate search for large collections: IVF-PQ candidates, exact re-ranking.

An exact flat index keeps every float32 vector in RAM (5 KB per 1280-d vector) and scans
all of them per query. Beyond :data:`~provenance.index.vectors.APPROXIMATE_FROM_VECTORS`
the store switches to this index:

* a FAISS ``IVF<nlist>,PQ<dim/4>x4fsr`` index (product quantisation with 4-bit codes per
  4 dimensions, scanned with SIMD "fast scan"; 160 bytes for 1280-d), trained on the
  collection's own vectors, holds the codes and int64 ids and proposes candidates. The
  codes quantise each vector's residual from its list centroid ("r"), which keeps more of
  the true neighbours among the candidates than coding the vectors themselves;
* :class:`~provenance.index.rerank.RerankRows` re-scores the candidates: first from finer 8-bit PQ codes kept in
  RAM (``dim / 4`` bytes per vector, again coding the residual from the nearest coarse
  centroid), then the best of those exactly, from an
  append-only float16 copy of every vector on disk (only the rows a query re-scores
  are read, with ``pread``; random reads cost microseconds each, so few are made).
  Results are therefore exact cosines, and recall against exact search depends only on
  whether the true neighbours survive the two candidate stages.
"""

from __future__ import annotations

import math

import numpy as np

from .rerank import RerankRows, nearest_centroids

#: Dimensions per 4-bit PQ sub-quantiser.
DIMS_PER_SUBQUANTISER = 4
#: Share of the inverted lists probed per query vector, up to :data:`SHARE_FALLS_AFTER`
#: lists. Query embeddings of edited copies and of unrelated photos lie far from every
#: reference (cosine 0.7-0.85), so their neighbours are spread over many cells; with 512
#: lists, 1/8 of them gave recall@10 0.976 and 3/8 gave 0.99 (docs/benchmarks.md).
PROBE_SHARE = 0.375
#: Beyond this many lists the probed share falls with the fourth root of the list count:
#: finer cells hold a query's neighbours in relatively fewer of them (with 2,048 lists,
#: probing 1/4 found the same neighbours as 3/8).
SHARE_FALLS_AFTER = 512
#: Candidates proposed by the fast-scan index per query vector, and re-scored from 8-bit
#: PQ codes, for collections up to :data:`DEPTH_GROWS_AFTER` vectors.
DEFAULT_RERANK_DEPTH = 1000
#: Beyond this many vectors the candidate depth doubles for every tenfold growth: more
#: vectors crowd the first stage's coarse scores (at 3 million vectors 1,000 candidates
#: held 98.2 % of the true top 10, 2,000 held 99.2 %).
DEPTH_GROWS_AFTER = 300_000
#: Of those, the best this many are re-scored exactly from the float16 rows.
DEFAULT_EXACT_DEPTH = 400
#: Coarse centroids get about this many training vectors each (FAISS warns below 39).
TRAINING_PER_LIST = 40


def lists_for(count: int) -> int:
    """Inverted lists for ``count`` vectors: a power of two near ``sqrt(count)``, with
    enough vectors to train each list's centroid."""
    target = min(math.sqrt(max(count, 1)), max(count, 1) / TRAINING_PER_LIST)
    return int(min(8192, max(16, 2 ** math.floor(math.log2(max(target, 1)) + 0.5))))


def probes_for(nlist: int) -> int:
    """Lists probed per query vector (:data:`PROBE_SHARE` of them, less beyond
    :data:`SHARE_FALLS_AFTER` lists)."""
    share = PROBE_SHARE * min(1.0, SHARE_FALLS_AFTER / max(nlist, 1)) ** 0.25
    return max(1, round(nlist * share))


def rerank_depth_for(count: int) -> int:
    """Candidates per query vector for a collection of ``count`` vectors (see
    :data:`DEPTH_GROWS_AFTER`)."""
    growth = max(1.0, count / DEPTH_GROWS_AFTER)
    return int(round(DEFAULT_RERANK_DEPTH * growth ** math.log10(2)))


def new_ivf_pq(dim: int, training: np.ndarray, nlist: int | None = None):
    """A trained, empty FAISS IVF-PQ fast-scan index for inner product over ``training``."""
    import faiss

    nlist = nlist or lists_for(len(training))
    subquantisers = _subquantisers(dim)
    index = faiss.index_factory(dim, f"IVF{nlist},PQ{subquantisers}x4fsr", faiss.METRIC_INNER_PRODUCT)
    faiss.extract_index_ivf(index).cp.niter = 12
    index.train(np.ascontiguousarray(training, dtype=np.float32))
    return index


def new_codec(dim: int, training: np.ndarray, centroids: np.ndarray | None = None):
    """A trained 8-bit product quantiser (``dim / 4`` bytes) for the middle re-ranking stage,
    for residuals from the nearest of ``centroids`` when given."""
    import faiss

    if centroids is not None:
        training = training - centroids[nearest_centroids(centroids, training)]

    bits = int(min(8, max(1, math.floor(math.log2(max(len(training), 2))))))  # a tiny collection has < 256 vectors
    codec = faiss.ProductQuantizer(dim, _subquantisers(dim), bits)
    codec.cp.niter = 12
    codec.train(np.ascontiguousarray(training, dtype=np.float32))
    return codec


def coarse_centroids(index) -> np.ndarray:
    """The IVF index's list centroids (``nlist x dim`` float32)."""
    import faiss

    ivf = faiss.extract_index_ivf(index)
    return ivf.quantizer.reconstruct_n(0, ivf.nlist)


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


def search_and_rerank(index, rerank: RerankRows, queries: np.ndarray, k: int, nprobe: int, depth: int, exact_depth: int):
    """Top-``k`` exact inner products, in three stages per query vector.

    1. the IVF-PQ fast-scan index proposes ``depth`` candidates (4-bit codes, coarse);
    2. their 8-bit PQ codes (in RAM) re-score them and keep the best ``exact_depth``;
    3. those are re-scored exactly from the float16 rows on disk.
    """
    import faiss
    import torch

    faiss.extract_index_ivf(index).nprobe = nprobe
    _, candidates = index.search(queries, max(depth, k))
    rows, found = rerank.rows_of(candidates)
    keep = max(k, exact_depth)
    if rerank.codec is not None and candidates.shape[1] > keep:
        coarse = rerank.approximate_scores(queries, rows)
        coarse[~found] = -np.inf
        best = np.argsort(-coarse, axis=1, kind="stable")[:, :keep]
        candidates, rows, found = (np.take_along_axis(array, best, axis=1) for array in (candidates, rows, found))
    with torch.inference_mode():
        exact = torch.bmm(torch.from_numpy(rerank.exact(rows)), torch.from_numpy(queries)[:, :, None])[:, :, 0].numpy()
    exact[~found] = -np.inf
    order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
    top_scores = np.take_along_axis(exact, order, axis=1)
    top_ids = np.take_along_axis(np.where(found, candidates, -1), order, axis=1)
    missing = ~np.isfinite(top_scores)
    top_scores[missing], top_ids[missing] = -np.inf, -1
    return top_scores.astype(np.float32), top_ids.astype(np.int64)


def factory_string(index) -> str:
    """The ``index_factory`` string that describes ``index`` (for the manifest)."""
    import faiss

    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    return f"IVF{ivf.nlist},PQ{ivf.pq.M}x{ivf.pq.nbits}fs{'r' if ivf.by_residual else ''}"

