"""Perceptual-hash baselines scored on the same queries: PDQ and pHash.

Each baseline hashes every reference once and answers a query by brute-force
Hamming nearest neighbour. Scores are ``bits - Hamming distance`` (higher = more
similar). PDQ compares all eight dihedral variants of the query (rotations and
flips) and keeps the smallest distance per reference.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
from PIL import Image

#: popcount of every byte value
_POPCOUNT = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint16)


def hamming_to_all(query_codes: np.ndarray, ref_codes: np.ndarray) -> np.ndarray:
    """Smallest Hamming distance from any of the packed ``query_codes`` (v, bytes) to each
    packed reference code (n, bytes); returns (n,) int."""
    query_codes = np.atleast_2d(query_codes)
    distances = _POPCOUNT[np.bitwise_xor(query_codes[:, None, :], ref_codes[None, :, :])].sum(axis=2)
    return distances.min(axis=0)


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the ``k`` best, ties broken by the lower index."""
    order = np.argsort(-scores, kind="stable")[:k]
    return order, scores[order]


def pdq_codes(image: Image.Image, dihedral: bool) -> np.ndarray:
    """Packed 256-bit PDQ code(s): (1, 32) or, with ``dihedral``, (8, 32)."""
    import pdqhash

    pixels = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
    if dihedral:
        hashes, _ = pdqhash.compute_dihedral(pixels)
        return np.stack([np.packbits(np.asarray(h, dtype=bool)) for h in hashes])
    bits, _quality = pdqhash.compute(pixels)
    return np.packbits(np.asarray(bits, dtype=bool))[None, :]


def phash_codes(image: Image.Image, dihedral: bool = False) -> np.ndarray:
    """Packed 64-bit pHash code, (1, 8); ``dihedral`` is ignored (plain pHash)."""
    import imagehash

    return np.packbits(np.asarray(imagehash.phash(image.convert("RGB")).hash, dtype=bool).ravel())[None, :]


class HashBaseline:
    """Brute-force Hamming search over the references' perceptual hashes."""

    def __init__(self, name: str, bits: int, hasher: Callable[[Image.Image, bool], np.ndarray], query_dihedral: bool):
        self.name = name
        self.bits = bits
        self._hasher = hasher
        self._dihedral = query_dihedral
        self._codes: list[np.ndarray] = []
        self._matrix: np.ndarray | None = None

    def add(self, image: Image.Image) -> None:
        """Hash one reference (references are numbered in the order they are added)."""
        self._codes.append(self._hasher(image, False)[0])
        self._matrix = None

    def add_all(self, images: Iterable[Image.Image]) -> None:
        """Hash many references."""
        for image in images:
            self.add(image)

    def __len__(self) -> int:
        return len(self._codes)

    def query(self, image: Image.Image, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Reference indices and scores of the ``k`` nearest references, best first."""
        if not self._codes:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        if self._matrix is None:
            self._matrix = np.stack(self._codes)
        distances = hamming_to_all(self._hasher(image, self._dihedral), self._matrix)
        return top_k((self.bits - distances).astype(np.float64), k)


def make_baseline(name: str) -> HashBaseline:
    """``pdq`` (256 bits, dihedral query) or ``phash`` (64 bits)."""
    if name == "pdq":
        return HashBaseline("pdq", 256, pdq_codes, query_dihedral=True)
    if name == "phash":
        return HashBaseline("phash", 64, phash_codes, query_dihedral=False)
    raise ValueError(f"unknown baseline {name!r}; known: pdq, phash")


BASELINES = ("pdq", "phash")
