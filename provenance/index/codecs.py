"""The codecs an index trains once on its own data: how vectors, descriptors and visual words are coded.

A reference's data is stored compactly once the index holds
:data:`MIN_TRAIN_REFERENCES` references; before that (small indexes) it is stored raw:

* **vectors**: 4-bit scalar quantisation per dimension (FAISS ``QT_4bit``: 640 bytes for
  1280 dimensions, where float32 takes 5,120). Its per-dimension ranges come from the
  collection's vectors, widened (:data:`VECTOR_RANGE_SPAN`) so that later references unlike
  the first ones are not clipped; on the development set the decoded vectors kept the
  copies' nearest references and similarities within about 0.005 (docs/benchmarks.md,
  "Storage"). Raw: float16.
* **descriptors**: a product quantiser of RootSIFT: 8 sub-vectors of 16 dimensions,
  12 bits each (12 bytes per keypoint, where SIFT takes 128), or, where the training
  sample is too small for 4,096 centroids a sub-vector (:data:`MIN_WIDE_TRAIN_DESCRIPTORS`),
  16 sub-vectors of 8 dimensions at 8 bits (16 bytes; every index trained before
  2026-12-07 has these, and they stay readable). Verification decodes the reference's
  descriptors and matches them against the query's exact ones (asymmetric distance). In
  12 bytes, 8 sub-vectors of 12 bits code closer than 16 of 6 bits (squared error 0.038
  against 0.067 on their training sample). On 200 portraits the codecs were not trained
  on, each verified against a downscaled JPEG copy of itself, the 12-byte codes kept
  52.9 inliers per pair on average, the 16-byte codes 53.7 and raw SIFT 58.9
  (docs/benchmarks.md, stop 31).
  Raw: the 128 SIFT bytes.
* **words**: the visual-word codebook of :mod:`provenance.visual_words` (no raw form:
  an untrained index has no words, and the keypoint vote source stays silent).

The codecs never change once trained, so every segment written with them stays readable
as long as the index lives; :attr:`Codecs.version` names them (segments record it).
"""

from __future__ import annotations

import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .. import visual_words as vw

#: Train the codecs once the index holds this many references.
MIN_TRAIN_REFERENCES = 200
#: Descriptor product quantiser: (sub-vectors, bits per sub-vector code) trained now, and
#: every shape an index may hold (the first was the only one before 2026-12-07).
DESCRIPTOR_PQ = (8, 12)
NARROW_DESCRIPTOR_PQ = (16, 8)
DESCRIPTOR_PQS = (NARROW_DESCRIPTOR_PQ, DESCRIPTOR_PQ)
#: Train the 12-bit quantiser from this many descriptors (ten per centroid); fewer train
#: the 8-bit one (a small index of flat images).
MIN_WIDE_TRAIN_DESCRIPTORS = 10 << DESCRIPTOR_PQ[1]
#: Descriptors and vectors sampled to train (more gain nothing measurable).
TRAIN_DESCRIPTORS = 100_000
TRAIN_VECTORS = 50_000
#: Rows a descriptor block assigns at once, and threads that assign blocks: a commit codes
#: hundreds of references' keypoints in one call (8 ms a reference where one at a time took 21).
ENCODE_BLOCK = 512
ENCODE_THREADS = 2
#: Descriptors left out of training to measure the coding error on: 4,096 centroids fit
#: their own training sample closer than new descriptors (0.038 against 0.046 on portraits).
HELD_OUT_DESCRIPTORS = 10_000
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
    descriptor_centroids: np.ndarray  # (sub-vectors, 2 ** bits, 128 / sub-vectors) float32
    word_codebook: np.ndarray  # (2, 256, 64) float32
    #: mean squared distance between a held-out descriptor and its decoded, re-normalised code:
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

    @property
    def descriptor_pq(self) -> tuple[int, int]:
        """(sub-vectors, bits per sub-vector code) of the descriptor quantiser (one of :data:`DESCRIPTOR_PQS`)."""
        subvectors, centroids = self.descriptor_centroids.shape[:2]
        return int(subvectors), int(centroids).bit_length() - 1

    @property
    def descriptor_bytes(self) -> int:
        """Bytes of one keypoint's descriptor code."""
        subvectors, bits = self.descriptor_pq
        return (subvectors * bits + 7) // 8

    @cached_property
    def _half_centroid_norms(self) -> np.ndarray:
        return 0.5 * np.einsum("mkd,mkd->mk", self.descriptor_centroids, self.descriptor_centroids)

    @cached_property
    def _centroid_columns(self) -> np.ndarray:
        return np.ascontiguousarray(self.descriptor_centroids.transpose(0, 2, 1))

    def encode_descriptors(self, root_sift: np.ndarray) -> np.ndarray:
        """(n, :attr:`descriptor_bytes`) uint8 codes of RootSIFT descriptors: each sub-vector's
        nearest centroid, packed little-endian as FAISS packs product-quantiser codes."""
        from ..blas import single_threaded_blas

        subvectors, bits = self.descriptor_pq
        rows = np.ascontiguousarray(root_sift, dtype=np.float32).reshape(-1, subvectors, 128 // subvectors)
        codes = np.empty((len(rows), subvectors), np.int64)
        columns, norms = self._centroid_columns, self._half_centroid_norms

        def assign(block: tuple[int, int]) -> None:  # argmin |x-c|^2 = argmax x.c - |c|^2/2
            sub, start = block
            stop = start + ENCODE_BLOCK
            codes[start:stop, sub] = np.argmax(rows[start:stop, sub] @ columns[sub] - norms[sub], axis=1)

        blocks = [(sub, start) for sub in range(subvectors) for start in range(0, len(rows), ENCODE_BLOCK)]
        # the products are thin (16 deep) and their outputs large: blocks that stay in cache, on threads
        if len(blocks) > subvectors:
            with single_threaded_blas(), ThreadPoolExecutor(ENCODE_THREADS) as pool:
                list(pool.map(assign, blocks))
        else:
            for block in blocks:
                assign(block)
        return pack_codes(codes, bits)

    def decode_descriptors(self, codes: np.ndarray) -> np.ndarray:
        """Approximate RootSIFT (n, 128) float32 of :meth:`encode_descriptors` codes."""
        subvectors, bits = self.descriptor_pq
        if not len(codes):
            return np.zeros((0, 128), np.float32)
        indices = unpack_codes(codes, subvectors, bits)
        return self.descriptor_centroids[np.arange(subvectors)[None, :], indices].reshape(len(codes), 128)

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
        shapes = [(subvectors, 1 << bits, 128 // subvectors) for subvectors, bits in DESCRIPTOR_PQS]
        if (ranges.ndim != 2 or ranges.shape[0] != 2 or centroids.shape not in shapes
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
    # the quantiser leaves out the rows its error is measured on; the word codebook uses all
    drawn = np.random.default_rng(seed + 1).permutation(len(descriptors))
    held_out = min(HELD_OUT_DESCRIPTORS, len(descriptors) // 10)
    tests, fitted = (np.ascontiguousarray(descriptors[np.sort(part)]) for part in np.split(drawn, [held_out]))
    floor = float(np.percentile(np.abs(vectors), 99.9))
    high = np.maximum(VECTOR_RANGE_SPAN * vectors.max(axis=0), floor)
    low = np.minimum(VECTOR_RANGE_SPAN * vectors.min(axis=0), -floor if vectors.min() < 0 else 0.0)
    ranges = np.stack([low, high - low]).astype(np.float32)
    shape = DESCRIPTOR_PQ if len(fitted) >= MIN_WIDE_TRAIN_DESCRIPTORS else NARROW_DESCRIPTOR_PQ
    untested = Codecs(ranges, _train_pq(fitted, seed, *shape), vw.train_codebook(descriptors, seed))
    decoded = untested.decode_descriptors(untested.encode_descriptors(tests))
    decoded /= np.maximum(np.linalg.norm(decoded, axis=1, keepdims=True), 1e-6)
    error = float(np.mean(np.sum((tests - decoded) ** 2, axis=1)))
    return Codecs(ranges, untested.descriptor_centroids, untested.word_codebook, error)


def _sample(rows: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    if len(rows) <= count:
        return np.ascontiguousarray(rows)
    return np.ascontiguousarray(rows[np.sort(rng.choice(len(rows), count, replace=False))])


def _train_pq(descriptors: np.ndarray, seed: int, subvectors: int, bits: int) -> np.ndarray:
    import faiss

    if len(descriptors) < (1 << bits):
        raise ValueError(f"{len(descriptors)} descriptors cannot train {1 << bits} centroids")
    pq = faiss.ProductQuantizer(128, subvectors, bits)
    pq.cp.niter = 20 if bits <= 8 else 10  # 4,096 centroids: 10 rounds reach what 20 do, in half the time
    pq.cp.seed = seed
    pq.cp.max_points_per_centroid = 256
    # FAISS warns on stderr below this many points a centroid; the callers' minimums decide
    pq.cp.min_points_per_centroid = 4
    pq.verbose = False
    pq.train(np.ascontiguousarray(descriptors))
    return faiss.vector_to_array(pq.centroids).reshape(subvectors, 1 << bits, 128 // subvectors).astype(np.float32)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """(n, m) integer codes of ``bits`` bits each as (n, ceil(m * bits / 8)) bytes, least
    significant bit first (FAISS's ``PQEncoderGeneric`` layout; whole bytes at 8 bits)."""
    codes = np.asarray(codes, dtype=np.int64)
    if bits == 8:
        return codes.astype(np.uint8)
    shifts = np.arange(bits, dtype=np.int64)
    bit_rows = ((codes[:, :, None] >> shifts) & 1).astype(np.uint8).reshape(len(codes), codes.shape[1] * bits)
    return np.packbits(bit_rows, axis=1, bitorder="little")


def unpack_codes(data: np.ndarray, subvectors: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: (n, ``subvectors``) int64 codes."""
    data = np.asarray(data, dtype=np.uint8)
    if bits == 8:
        return data[:, :subvectors].astype(np.int64)
    bit_rows = np.unpackbits(data, axis=1, bitorder="little")[:, :subvectors * bits]
    weights = np.left_shift(1, np.arange(bits, dtype=np.int64))
    return bit_rows.reshape(len(data), subvectors, bits).astype(np.int64) @ weights
