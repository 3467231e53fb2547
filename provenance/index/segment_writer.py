"""Writing a segment (:mod:`.segments` reads them): the files, fsynced, before the commit names them."""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .codecs import RAW, Codecs

_MAGIC = b"PVSEG\x00\x02\x00"
_ALIGN = 64
FORMAT = 2
#: A posting stores the low ROW_BITS of its local row; in a larger segment the rest (the
#: row's block) is in the posting's key, as its low BLOCK_BITS under the visual word.
ROW_BITS = 16
BLOCK_BITS = 16


def idf_squared(document_frequency: np.ndarray, references: int) -> np.ndarray:
    """Squared idf weight of every visual word for a collection of ``references``."""
    return np.log((references + 1) / (document_frequency + 1.0)) ** 2


@dataclass
class SegmentInput:
    """One reference as a new segment stores it."""

    ref_id: int
    vector_ids: np.ndarray  # int64, one per region (ref_id << REGION_BITS | region)
    vectors: np.ndarray  # float32 (regions, dim), or codes when ``coded``
    pdq: bytes  # 33 bytes: hash and quality
    features: bytes  # provenance.features.encode_local_features
    words: np.ndarray  # distinct visual words (empty without codecs)
    thumbnail: bytes


class SegmentWriter:
    """Writes one segment from references sorted by id (see the module docstring).

    ``.dat`` arrays: ``refs`` (int64), ``pdq`` (n x 33), ``vector_ids`` (int64, ascending),
    ``words`` (the posting keys: the distinct visual words, uint16, in a segment of at most
    65,536 references; else uint32 ``word << 16 | block`` for each block of 65,536 local rows),
    ``word_starts`` (uint32) and ``word_rows`` (the postings: uint16, a local row's low 16
    bits; older segments keep whole uint32 rows under uint16 keys, read alike), ``norms``
    (float32: each reference's word weight under the idf of the collection when it was
    written), ``feature_offsets``/``feature_bytes``,
    ``thumb_offsets``/``thumb_bytes``, ``pdq_rows`` (uint32: the local row of each hash
    in ``.pdq``).
    """

    #: low bits of a local row stored in a posting (at most 16: postings are two bytes)
    row_bits = ROW_BITS

    def __init__(self, directory: Path, name: str, dim: int, codecs: Codecs | None, index_id: str = ""):
        self.directory, self.name, self.dim, self.codecs, self.index_id = directory, name, dim, codecs, index_id

    def write(self, items: Sequence[SegmentInput], codes: np.ndarray | None, document_frequency: np.ndarray,
              references: int, norms: np.ndarray | None = None) -> dict:
        """Write the files (fsynced) and return the segment's description for the commit.

        ``codes``: the vectors' codes, when the items carry them already coded (a merge copies
        them); otherwise the items' float32 vectors are encoded. ``document_frequency`` and
        ``references``: the collection's word statistics, this segment included, for the
        norms (``norms`` given: kept as they are).
        """
        from ..verify.pdq import MIN_QUALITY

        self.directory.mkdir(parents=True, exist_ok=True)
        refs = np.array([item.ref_id for item in items], dtype=np.int64)
        if len(refs) > 1 and np.any(np.diff(refs) <= 0):
            raise ValueError("segment references must be ascending")
        vector_ids = np.concatenate([item.vector_ids for item in items]) if items else np.zeros(0, np.int64)
        pdq = np.frombuffer(b"".join(item.pdq for item in items), np.uint8).reshape(len(items), 33)
        searchable = np.flatnonzero(pdq[:, 32] >= MIN_QUALITY).astype(np.uint32) if len(items) else np.zeros(0, np.uint32)
        words, starts, rows = _postings([item.words for item in items], self.row_bits)
        if norms is None:
            weights = idf_squared(document_frequency, references)
            norms = np.array([np.sqrt(weights[item.words.astype(np.int64)].sum()) + 1e-9 for item in items], np.float32)
        sections = {
            "refs": refs, "pdq": pdq, "vector_ids": vector_ids.astype(np.int64), "words": words,
            "word_starts": starts, "word_rows": rows, "norms": np.asarray(norms, np.float32),
            **_blobs("feature", [item.features for item in items]), **_blobs("thumb", [item.thumbnail for item in items]),
            "pdq_rows": searchable,
        }
        vectors_file, pdq_file, data_file = (self.directory / f"{self.name}{suffix}" for suffix in (".vec", ".pdq", ".dat"))
        self._write_vectors(vectors_file, items, codes)
        self._write_pdq(pdq_file, pdq[searchable, :32])
        _write_sections(data_file, sections, {"format": FORMAT, "codec": self.codecs.version if self.codecs else RAW,
                                              "dim": self.dim, "index": self.index_id, "name": self.name,
                                              "row_bits": self.row_bits})
        _fsync_directory(self.directory)
        return {"name": self.name, "references": int(len(refs)), "vectors": int(len(vector_ids)),
                "codec": self.codecs.version if self.codecs else RAW,
                "first": int(refs[0]) if len(refs) else -1, "last": int(refs[-1]) if len(refs) else -1}

    def new_vector_index(self):
        import faiss

        if self.codecs is not None:
            return self.codecs.vector_quantiser()
        return faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)

    def _write_vectors(self, path: Path, items: Sequence[SegmentInput], codes: np.ndarray | None) -> None:
        import faiss

        index = self.new_vector_index()
        if codes is not None:
            if len(codes):
                index.add_sa_codes(np.ascontiguousarray(codes, dtype=np.uint8))
        elif items:
            index.add(np.ascontiguousarray(np.concatenate([item.vectors for item in items]), dtype=np.float32))
        _write_faiss(path, lambda target: faiss.write_index(index, target))

    @staticmethod
    def _write_pdq(path: Path, hashes: np.ndarray) -> None:
        import faiss

        index = faiss.IndexBinaryFlat(256)
        if len(hashes):
            index.add(np.ascontiguousarray(hashes))
        _write_faiss(path, lambda target: faiss.write_index_binary(index, target))


def _postings(per_reference: list[np.ndarray], row_bits: int = ROW_BITS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Posting keys, their starts and the rows (see :class:`SegmentWriter`).

    A posting stores the low ``row_bits`` of its local row in two bytes. In a segment of more
    rows than that, the row's block goes into the key, after the word (``word << 16 | block``):
    postings cost what a small segment's do, and a word's lists stay side by side, so a query
    reading them touches as few pages as one list would.
    """
    counts = np.array([len(words) for words in per_reference], dtype=np.int64)
    if not counts.sum():
        return np.zeros(0, np.uint16), np.zeros(1, np.uint32), np.zeros(0, np.uint16)
    flat = np.concatenate(per_reference).astype(np.int64)
    owners = np.repeat(np.arange(len(per_reference), dtype=np.int64), counts)
    blocked = len(per_reference) > 1 << row_bits
    keys = flat << BLOCK_BITS | owners >> row_bits if blocked else flat
    order = np.lexsort((owners, keys))
    keys, owners = keys[order], owners[order]
    unique_keys, first = np.unique(keys, return_index=True)
    starts = np.append(first, len(keys)).astype(np.uint32)
    return unique_keys.astype(np.uint32 if blocked else np.uint16), starts, (owners & ((1 << row_bits) - 1)).astype(np.uint16)


def _blobs(kind: str, blobs: list[bytes]) -> dict[str, np.ndarray]:
    offsets = np.zeros(len(blobs) + 1, np.uint64)
    offsets[1:] = np.cumsum([len(blob) for blob in blobs], dtype=np.uint64) if blobs else []
    return {f"{kind}_offsets": offsets, f"{kind}_bytes": np.frombuffer(b"".join(blobs), np.uint8)}


def _write_sections(path: Path, sections: dict[str, np.ndarray], header: dict) -> None:
    table, offset = {}, 0
    for name, array in sections.items():
        array = np.ascontiguousarray(array)
        table[name] = [offset, array.dtype.str, list(array.shape)]
        offset += -(-array.nbytes // _ALIGN) * _ALIGN
    text = json.dumps({**header, "sections": table}).encode()
    start = -(-(len(_MAGIC) + 8 + len(text)) // _ALIGN) * _ALIGN
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(_MAGIC + struct.pack('<Q', len(text)) + text)
        for name, array in sections.items():
            handle.seek(start + table[name][0])
            handle.write(np.ascontiguousarray(array).tobytes())
        handle.truncate(start + offset)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _write_faiss(path: Path, write) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    write(str(temporary))
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
