"""The codecs an index trains once on its own data: how vectors, descriptors and visual words are coded.

A reference's data is stored compactly once the index holds
:data:`MIN_TRAIN_REFERENCES` references; before that (small indexes) it is stored raw:

* **vectors**: 4-bit scalar quantisation per dimension (FAISS ``QT_4bit``: 640 bytes for
  1280 dimensions, where float32 takes 5,120). Its per-dimension ranges come from the
  collection's vectors, widened (:data:`VECTOR_RANGE_SPAN`) so that later references unlike
  the first ones are not clipped; on the development set the decoded vectors kept the
  copies' nearest references and similarities within about 0.005 (docs/benchmarks.md,
  "Storage"). Raw: float16.
* **descriptors**: a product quantiser of RootSIFT (16 sub-vectors of 8 dimensions,
  8 bits each: 16 bytes per keypoint, where SIFT takes 128). Verification decodes the
  reference's descriptors and matches them against the query's exact ones (asymmetric
  distance), which kept verification as strong as raw SIFT on the development set.
  Raw: the 128 SIFT bytes.
* **words**: the visual-word codebook of :mod:`provenance.visual_words` (no raw form:
  an untrained index has no words, and the keypoint vote source stays silent).

The codecs never change once trained, so every segment written with them stays readable
as long as the index lives; :attr:`Codecs.version` names them (segments record it).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .. import visual_words as vw

#: Train the codecs once the index holds this many references.
MIN_TRAIN_REFERENCES = 200
#: Descriptor product quantiser: sub-vectors and bits per sub-vector code.
DESCRIPTOR_SUBVECTORS = 16
DESCRIPTOR_BITS = 8
#: Descriptors and vectors sampled to train (more gain nothing measurable).
TRAIN_DESCRIPTORS = 100_000
TRAIN_VECTORS = 50_000
#: Each dimension's range reaches this many times the training sample's extreme value, and
#: at least the sample's 99.9th percentile over all dimensions: the first references (say a
#: portfolio of portraits) must not fix ranges that clip later ones (general photos). Trained
#: on portraits alone, the ranges kept every similarity of general photos within 0.015.
VECTOR_RANGE_SPAN = 1.5
#: Descriptors needed to train (four per centroid of the word codebook and the quantiser).
MIN_TRAIN_DESCRIPTORS = 4 * vw.CENTROIDS
RAW = "raw"


@dataclass(frozen=True)
class Codecs:
    """The trained codecs of one index (see the module docstring); immutable."""

    vector_ranges: np.ndarray  # (2, dim) float32: per-dimension minimum and width
    descriptor_centroids: np.ndarray  # (16, 256, 8) float32
    word_codebook: np.ndarray  # (2, 256, 64) float32
    #: mean squared distance between a training descriptor and its decoded, re-normalised code:
    #: what coding adds to every squared query-to-reference distance on average (the ratio
    #: test subtracts it, :func:`~provenance.verify.geometry.match_descriptors`)
    descriptor_error: float = 0.0

    @cached_property
    def version(self) -> str:
        digest = hashlib.sha256()
        for array in (self.vector_ranges, self.descriptor_centroids, self.word_codebook, np.float32(self.descriptor_error)):
            digest.update(np.ascontiguousarray(array, dtype="<f4").tobytes())
        return digest.hexdigest()[:16]

    @property
    def dim(self) -> int:
        return int(self.vector_ranges.shape[1])

    def vector_quantiser(self):
        """A FAISS 4-bit scalar quantiser with these ranges (an empty flat index)."""
        import faiss

        index = faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_4bit, faiss.METRIC_INNER_PRODUCT)
        trained = np.ascontiguousarray(self.vector_ranges.ravel(), dtype=np.float32)
        faiss.copy_array_to_vector(trained, index.sq.trained)
        index.is_trained = True
        return index

    @cached_property
    def descriptor_pq(self):
        import faiss

        pq = faiss.ProductQuantizer(128, DESCRIPTOR_SUBVECTORS, DESCRIPTOR_BITS)
        faiss.copy_array_to_vector(np.ascontiguousarray(self.descriptor_centroids.ravel(), dtype=np.float32),
                                   pq.centroids)
        return pq

    def encode_descriptors(self, root_sift: np.ndarray) -> np.ndarray:
        """(n, 16) uint8 codes of RootSIFT descriptors."""
        if not len(root_sift):
            return np.zeros((0, DESCRIPTOR_SUBVECTORS), np.uint8)
        return self.descriptor_pq.compute_codes(np.ascontiguousarray(root_sift, dtype=np.float32))

    def decode_descriptors(self, codes: np.ndarray) -> np.ndarray:
        """Approximate RootSIFT (n, 128) float32 of :meth:`encode_descriptors` codes."""
        if not len(codes):
            return np.zeros((0, 128), np.float32)
        # a gather over the centroids: the same as ProductQuantizer.decode, without a copy into FAISS
        sub = np.arange(DESCRIPTOR_SUBVECTORS)[None, :]
        return self.descriptor_centroids[sub, codes.astype(np.int64)].reshape(len(codes), 128)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, vector_ranges=self.vector_ranges, descriptor_centroids=self.descriptor_centroids,
                 word_codebook=self.word_codebook, descriptor_error=np.float32(self.descriptor_error))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Codecs":
        """Inverse of :meth:`to_bytes`; raises ValueError on anything else."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as stored:
                arrays = {name: np.asarray(stored[name], dtype=np.float32) for name in
                          ("vector_ranges", "descriptor_centroids", "word_codebook", "descriptor_error")}
        except Exception as exc:  # numpy raises several kinds for a damaged archive
            raise ValueError(f"unreadable codecs ({type(exc).__name__})") from None
        ranges, centroids, words = arrays["vector_ranges"], arrays["descriptor_centroids"], arrays["word_codebook"]
        if (ranges.ndim != 2 or ranges.shape[0] != 2 or centroids.shape != (DESCRIPTOR_SUBVECTORS, 1 << DESCRIPTOR_BITS, 8)
                or words.shape != (2, vw.CENTROIDS, vw.HALF)):
            raise ValueError("codecs of the wrong shape")
        return cls(ranges, centroids, words, float(arrays["descriptor_error"]))


def train_codecs(vectors: np.ndarray, descriptors: np.ndarray, seed: int = 0) -> Codecs:
    """Codecs trained on a sample of the collection's vectors and RootSIFT descriptors.

    Raises ValueError when there are too few descriptors (flat images): the index then
    stays raw and tries again at its next save.
    """
    if len(descriptors) < MIN_TRAIN_DESCRIPTORS:
        raise ValueError(f"{len(descriptors)} keypoint descriptors, {MIN_TRAIN_DESCRIPTORS} needed")
    rng = np.random.default_rng(seed)
    vectors = _sample(np.asarray(vectors, dtype=np.float32), TRAIN_VECTORS, rng)
    descriptors = _sample(np.asarray(descriptors, dtype=np.float32), TRAIN_DESCRIPTORS, rng)
    floor = float(np.percentile(np.abs(vectors), 99.9))
    high = np.maximum(VECTOR_RANGE_SPAN * vectors.max(axis=0), floor)
    low = np.minimum(VECTOR_RANGE_SPAN * vectors.min(axis=0), -floor if vectors.min() < 0 else 0.0)
    ranges = np.stack([low, high - low]).astype(np.float32)
    untested = Codecs(ranges, _train_pq(descriptors, seed), vw.train_codebook(descriptors, seed))
    decoded = untested.decode_descriptors(untested.encode_descriptors(descriptors))
    decoded /= np.maximum(np.linalg.norm(decoded, axis=1, keepdims=True), 1e-6)
    error = float(np.mean(np.sum((descriptors - decoded) ** 2, axis=1)))
    return Codecs(ranges, untested.descriptor_centroids, untested.word_codebook, error)


def _sample(rows: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    if len(rows) <= count:
        return np.ascontiguousarray(rows)
    return np.ascontiguousarray(rows[np.sort(rng.choice(len(rows), count, replace=False))])


def _train_pq(descriptors: np.ndarray, seed: int) -> np.ndarray:
    import faiss

    if len(descriptors) < (1 << DESCRIPTOR_BITS):
        raise ValueError(f"{len(descriptors)} descriptors cannot train {1 << DESCRIPTOR_BITS} centroids")
    pq = faiss.ProductQuantizer(128, DESCRIPTOR_SUBVECTORS, DESCRIPTOR_BITS)
    pq.cp.niter = 20
    pq.cp.seed = seed
    pq.cp.max_points_per_centroid = 256
    pq.verbose = False
    pq.train(np.ascontiguousarray(descriptors))
    return faiss.vector_to_array(pq.centroids).reshape(DESCRIPTOR_SUBVECTORS, 1 << DESCRIPTOR_BITS, 8).astype(np.float32)
