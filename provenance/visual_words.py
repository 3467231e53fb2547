"""Visual words: RootSIFT descriptors quantised with a product codebook (an inverted multi-index).

A descriptor's two 64-dimensional halves are each assigned to the nearest of 256 centroids,
so a word is one of 65,536 cells. That is sparse enough for an inverted file (a reference
of ~300 keypoints occupies ~0.5 % of the cells) while the codebook is small (128 KB) and
trains in seconds: two k-means of 256 centroids on 64 dimensions, where a flat 65,536-word
vocabulary would need a k-means far too large for a CPU.

The codebook is one of the codecs an index trains on its own keypoints
(:mod:`provenance.index.codecs`); every segment keeps the postings of its references' words.
"""

from __future__ import annotations


import numpy as np

HALF = 64
CENTROIDS = 256
WORDS = CENTROIDS * CENTROIDS
#: Descriptors sampled to train the codebook.
TRAIN_SAMPLE = 100_000


def train_codebook(descriptors: np.ndarray, seed: int = 0) -> np.ndarray:
    """A (2, 256, 64) float32 product codebook from RootSIFT ``descriptors`` (n, 128)."""
    import faiss

    descriptors = np.ascontiguousarray(descriptors, dtype=np.float32)
    if len(descriptors) > TRAIN_SAMPLE:
        rows = np.random.default_rng(seed).choice(len(descriptors), TRAIN_SAMPLE, replace=False)
        descriptors = descriptors[np.sort(rows)]
    if len(descriptors) < CENTROIDS:
        raise ValueError(f"{len(descriptors)} descriptors cannot train {CENTROIDS} centroids")
    halves = []
    for half in range(2):
        kmeans = faiss.Kmeans(HALF, CENTROIDS, niter=15, seed=seed + half, verbose=False)
        kmeans.train(np.ascontiguousarray(descriptors[:, half * HALF:(half + 1) * HALF]))
        halves.append(kmeans.centroids.reshape(CENTROIDS, HALF))
    return np.stack(halves).astype(np.float32)


def _nearest(half: np.ndarray, centroids: np.ndarray, count: int) -> np.ndarray:
    distances = (centroids * centroids).sum(axis=1)[None, :] - 2.0 * half @ centroids.T
    if count == 1:
        return distances.argmin(axis=1)[:, None]
    return np.argpartition(distances, count - 1, axis=1)[:, :count]


def quantise(descriptors: np.ndarray, codebook: np.ndarray, per_half: int = 1) -> np.ndarray:
    """The distinct words of RootSIFT ``descriptors``; ``per_half`` > 1 assigns each half to
    that many nearest centroids (``per_half**2`` words per descriptor: queries, whose
    descriptors were disturbed by the copy's edits)."""
    descriptors = np.asarray(descriptors, dtype=np.float32)
    if not len(descriptors):
        return np.zeros(0, np.uint16)
    first = _nearest(descriptors[:, :HALF], codebook[0], per_half)
    second = _nearest(descriptors[:, HALF:], codebook[1], per_half)
    words = (first[:, :, None] * CENTROIDS + second[:, None, :]).reshape(-1)
    return np.unique(words).astype(np.uint16)
