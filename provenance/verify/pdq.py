"""PDQ perceptual hashes (Meta ThreatExchange) and a faiss index to search them.

A PDQ hash is 256 bits, stored here as 32 bytes in ThreatExchange's order: the hex
form (:func:`to_hex`) is the 64-character string that ThreatExchange tools print, the
first hex digit holding bits 255..252. The Hamming distance between two hashes says
how different the pictures look at a coarse scale; PDQ's conventional match
threshold is a distance of at most :data:`MATCH_THRESHOLD` (31 of 256 bits). It
survives re-encoding, resizing and mild edits, but not crops of more than a few
percent or mirroring; :func:`pdq_dihedral` gives the hashes of the 8 rotations and
flips in one pass so that a query can be matched against rotated or flipped copies.

Hashes of flat, featureless images are unreliable: ThreatExchange discards hashes
whose quality is below :data:`MIN_QUALITY`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image

#: PDQ's conventional near-exact match threshold: Hamming distance <= 31 of 256 bits.
MATCH_THRESHOLD = 31
#: Hashes with a quality below this (0-100 scale) should not be trusted for matching.
MIN_QUALITY = 50
HASH_BYTES = 32
HASH_BITS = 256
#: Order of :func:`pdq_dihedral`'s hashes (the transform applied to the input image).
DIHEDRAL_NAMES = (
    "original",
    "rotate90",
    "rotate180",
    "rotate270",
    "flip_x",
    "flip_y",
    "flip_plus1",
    "flip_minus1",
)


def pdq_hash(image: Image.Image, *, max_side: int | None = None) -> tuple[bytes, int]:
    """PDQ hash (32 bytes) and quality (0-100) of ``image``.

    ``max_side`` optionally shrinks large images first for speed; ThreatExchange hashes
    the full image, and shrinking changes a few bits (far below the match threshold).
    """
    import pdqhash

    bits, quality = pdqhash.compute(_rgb_array(image, max_side))
    return _pack(bits), int(quality)


def pdq_dihedral(image: Image.Image, *, max_side: int | None = None) -> list[bytes]:
    """Hashes of the 8 rotations/flips of ``image``, in :data:`DIHEDRAL_NAMES` order.

    The first is ``pdq_hash(image)[0]``. A copy that was rotated or flipped has a hash
    close to one of these (the one of the inverse transform).
    """
    return pdq_dihedral_with_quality(image, max_side=max_side)[0]


def pdq_dihedral_with_quality(image: Image.Image, *, max_side: int | None = None) -> tuple[list[bytes], int]:
    """:func:`pdq_dihedral` and the image's PDQ quality (0-100), from one computation."""
    import pdqhash

    hashes, quality = pdqhash.compute_dihedral(_rgb_array(image, max_side))
    return [_pack(bits) for bits in hashes], int(quality)


def to_hex(hash_: bytes) -> str:
    """64 lowercase hex characters, as ThreatExchange writes PDQ hashes."""
    return _check(hash_).hex()


def from_hex(text: str) -> bytes:
    """Parse a ThreatExchange PDQ hex string (64 hex characters, any case)."""
    text = text.strip()
    if len(text) != 2 * HASH_BYTES:
        raise ValueError(f"a PDQ hash has {2 * HASH_BYTES} hex characters, got {len(text)}")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"not a hex string: {text!r}") from None


def hamming(a: bytes, b: bytes) -> int:
    """Hamming distance between two 32-byte hashes."""
    x = np.frombuffer(_check(a), np.uint8) ^ np.frombuffer(_check(b), np.uint8)
    return int(np.unpackbits(x).sum())


class PdqIndex:
    """Exact Hamming search over PDQ hashes with int64 ids (faiss ``IndexBinaryIDMap``).

    Ids must be unique; a reference with several hashes needs several ids (or keep one
    hash per reference and query with the 8 dihedral variants instead).
    """

    def __init__(self, index=None) -> None:
        import faiss

        self._index = index if index is not None else faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(HASH_BITS))

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        """All stored ids (int64), in storage order."""
        import faiss

        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def add(self, ids: Iterable[int], hashes: Sequence[bytes] | np.ndarray) -> None:
        """Store ``hashes`` under ``ids``; raises ``ValueError`` on a duplicate id."""
        id_array = np.ascontiguousarray(np.fromiter(ids, dtype=np.int64))
        codes = _codes(hashes)
        if len(id_array) != len(codes):
            raise ValueError(f"{len(id_array)} ids but {len(codes)} hashes")
        if len(np.unique(id_array)) != len(id_array) or np.isin(id_array, self.ids()).any():
            raise ValueError("duplicate id")
        if len(codes):
            self._index.add_with_ids(codes, id_array)

    def remove(self, ids: Iterable[int]) -> int:
        """Remove the given ids; returns how many entries were removed."""
        id_array = np.ascontiguousarray(np.fromiter(ids, dtype=np.int64))
        if not len(id_array):
            return 0
        return int(self._index.remove_ids(id_array))

    def search(
        self, hashes: bytes | Sequence[bytes] | np.ndarray, k: int, *, max_distance: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Nearest ids to *one* query given as one hash or several variants of it.

        With several hashes (e.g. the 8 from :func:`pdq_dihedral`) each id's distance is
        its smallest distance to any variant. Returns ``(distances int32, ids int64)``,
        1-D, nearest first (ties by id), at most ``k`` long, and only distances
        ``<= max_distance`` when that is given.
        """
        codes = _codes([hashes] if isinstance(hashes, (bytes, bytearray)) else hashes)
        if k < 1 or not len(codes) or not len(self):
            return np.zeros(0, np.int32), np.zeros(0, np.int64)
        distances, ids = self._index.search(codes, min(len(self), k * len(codes)))
        distances, ids = distances.ravel(), ids.ravel()
        keep = ids >= 0
        if max_distance is not None:
            keep &= distances <= max_distance
        distances, ids = distances[keep], ids[keep]
        order = np.lexsort((ids, distances))
        distances, ids = distances[order], ids[order]
        _, first = np.unique(ids, return_index=True)  # smallest distance per id
        first = np.sort(first)[:k]
        return distances[first].astype(np.int32), ids[first].astype(np.int64)

    def serialize(self) -> bytes:
        """The whole index as bytes (faiss's own format)."""
        import faiss

        return faiss.serialize_index_binary(self._index).tobytes()

    @classmethod
    def deserialize(cls, data: bytes) -> "PdqIndex":
        """Inverse of :meth:`serialize`."""
        import faiss

        index = faiss.deserialize_index_binary(np.frombuffer(data, dtype=np.uint8))
        if not isinstance(index, faiss.IndexBinaryIDMap) or index.d != HASH_BITS:
            raise ValueError("not a serialised PdqIndex")
        return cls(index)


def _rgb_array(image: Image.Image, max_side: int | None) -> np.ndarray:
    if max_side and max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def _pack(bits: np.ndarray) -> bytes:
    """pdqhash's bit vector (element 0 = bit 255) -> 32 bytes, most significant first."""
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes()


def _check(hash_: bytes) -> bytes:
    if not isinstance(hash_, (bytes, bytearray)) or len(hash_) != HASH_BYTES:
        raise ValueError(f"a PDQ hash is {HASH_BYTES} bytes")
    return bytes(hash_)


def _codes(hashes: Sequence[bytes] | np.ndarray) -> np.ndarray:
    """Hashes as a contiguous ``(n, 32)`` uint8 array."""
    if isinstance(hashes, np.ndarray):
        codes = hashes.astype(np.uint8, copy=False).reshape(-1, HASH_BYTES)
    else:
        codes = np.array([np.frombuffer(_check(h), np.uint8) for h in hashes], dtype=np.uint8)
        codes = codes.reshape(-1, HASH_BYTES)
    return np.ascontiguousarray(codes)
