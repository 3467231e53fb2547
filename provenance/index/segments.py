"""Immutable segments: what one commit or one merge wrote, memory-mapped by every reader.

A segment holds a set of references whole: their vectors, PDQ hashes, visual-word
postings, stored local features and thumbnails. It is written once, fsynced, and only
then named in the index's SQLite commit (:mod:`.store`); it never changes afterwards.
Readers map its files and share the page cache; nothing is rebuilt in RAM at open. A
removed reference stays in its segment, hidden by a tombstone, until a merge
(:func:`merge_segments`) rewrites the segments without it (Lucene's design).

Files of segment ``NAME`` (in the index's ``segments`` folder):

* ``NAME.dat``: a JSON table of contents, then 64-byte aligned arrays (see
  :class:`SegmentWriter`);
* ``NAME.vec``: a FAISS flat scalar-quantiser index of the vectors (4-bit codes once the
  index has trained its codecs, float16 before), rows in the order of ``vector_ids``;
* ``NAME.pdq``: a FAISS binary flat index of the searchable PDQ hashes (quality >= 50).
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import visual_words as vw
from ..errors import CorruptIndexError
from .codecs import RAW, Codecs
from .segment_writer import _ALIGN, _MAGIC, BLOCK_BITS, SegmentInput

SEGMENT_SUFFIXES = (".dat", ".vec", ".pdq")
_LENGTH = struct.Struct("<Q")
_BLOCK_MASK = (1 << BLOCK_BITS) - 1


class Segment:
    """A committed segment, opened by memory map (every method is safe from many threads)."""

    def __init__(self, directory: Path, info: dict, codecs: Codecs | None, index_id: str = "", ivf=None):
        self.info, self.name, self.codecs = info, info["name"], codecs
        self.directory = directory
        path = directory / f"{self.name}.dat"
        try:
            # held open like the maps, so a reader still reads a segment a merge has unlinked
            self._files = {suffix: open(directory / f"{self.name}{suffix}", "rb", buffering=0)
                           for suffix in (".dat", ".vec")}
            self._map = mmap.mmap(self._files[".dat"].fileno(), 0, access=mmap.ACCESS_READ)
            if hasattr(mmap, "MADV_RANDOM"):
                # postings are read a few at a time: no read-ahead (the kernel still maps the
                # whole cached folio a touch falls in; the records are read with pread, _blob)
                self._map.madvise(mmap.MADV_RANDOM)
            self._sections, self._section_starts, header = _read_sections(self._map, path)
        except (OSError, ValueError) as exc:
            raise CorruptIndexError(f"segment {path} cannot be read ({exc})") from None
        if (header.get("index"), header.get("name")) != (index_id, self.name):
            raise CorruptIndexError(f"segment {path} belongs to another index or segment (copied in?)")
        expected = codecs.version if codecs is not None else RAW
        if header.get("codec") != info.get("codec") or (header.get("codec") != RAW and header.get("codec") != expected):
            raise CorruptIndexError(f"segment {path} was coded with codecs {header.get('codec')}, not the index's {expected}")
        self.refs = self._sections["refs"]
        self.vector_ids = self._sections["vector_ids"]
        if len(self.refs) != info.get("references") or len(self.vector_ids) != info.get("vectors"):
            raise CorruptIndexError(f"segment {path} holds other references than the commit recorded")
        self._vectors = self._open_faiss(".vec", binary=False)
        self._pdq = self._open_faiss(".pdq", binary=True)
        if self._vectors.ntotal != len(self.vector_ids) or self._pdq.ntotal != len(self._sections["pdq_rows"]):
            raise CorruptIndexError(f"segment {self.name}: its vector or hash file does not match its table of contents")
        self._ivf = self._open_companion(info, ivf)
        vector_file = self.directory / f"{self.name}.vec"
        # the codes end the FAISS file: re-scoring reads rows there with pread (see ivf.py)
        self._code_size = int(self._vectors.sa_code_size())
        self._code_offset = vector_file.stat().st_size - self._vectors.ntotal * self._code_size
        self._sq4 = _sq4_ranges(self._vectors)
        keys = self._sections["words"].astype(np.int64)
        counts = np.diff(self._sections["word_starts"].astype(np.int64))
        # uint32 keys carry the block of rows under the word; uint16 keys are words (rows whole,
        # or a segment of one block)
        self._blocks = int((keys & _BLOCK_MASK).max()) + 1 if self._sections["words"].dtype == np.uint32 and len(keys) else 0
        self._row_bits = int(header.get("row_bits", 0))
        words = keys >> BLOCK_BITS if self._blocks else keys
        self._document_frequency = np.bincount(words, weights=counts, minlength=vw.WORDS).astype(np.int64)

    def _open_faiss(self, suffix: str, binary: bool):
        import faiss

        path = self.directory / f"{self.name}{suffix}"
        try:
            reader = faiss.read_index_binary if binary else faiss.read_index
            return reader(str(path), faiss.IO_FLAG_MMAP_IFC)
        except Exception as exc:  # FAISS raises RuntimeError for missing or damaged files
            raise CorruptIndexError(f"segment file {path} cannot be read ({' '.join(str(exc).split())[:160]})") from None

    def _open_companion(self, info: dict, ivf):
        version = info.get("ivf")
        if not version:
            return None
        if ivf is None or ivf.version != version:
            raise CorruptIndexError(f"segment {self.name} was indexed with IVF codec {version}, which the index does not hold")
        from .ivf import companion_name, open_companion

        path = self.directory / companion_name(self.name, version)
        try:
            index = open_companion(path, ivf)  # fast-scan codes are scanned whole: read into RAM
        except Exception as exc:
            raise CorruptIndexError(f"segment file {path} cannot be read ({' '.join(str(exc).split())[:160]})") from None
        if index.ntotal != len(self.vector_ids):
            raise CorruptIndexError(f"segment {self.name}: its IVF index does not hold its {len(self.vector_ids)} vectors")
        if index.nlist != ivf.nlist or index.quantizer.ntotal != ivf.nlist:
            raise CorruptIndexError(f"segment {self.name}: its IVF index does not match the index's IVF codec")
        self._quantizer = ivf.quantizer  # the companion searches with it and does not own it: held here
        nprobe = ivf.describe()["nprobe"]
        index.nprobe = nprobe  # set once here, never per search: the index is shared by every thread
        return index, nprobe

    @property
    def approximate(self) -> bool:
        """Whether vector searches go through the segment's IVF companion."""
        return self._ivf is not None

    def __len__(self) -> int:
        return len(self.refs)

    @property
    def document_frequency(self) -> np.ndarray:
        """References of this segment holding each visual word (int64, one per word)."""
        return self._document_frequency

    def files(self) -> list[Path]:
        return [self.directory / f"{self.name}{suffix}" for suffix in SEGMENT_SUFFIXES]

    # -- vectors -------------------------------------------------------------------------
    def search_vectors(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (inner products, vector ids) per query over this segment, scanned whole; -1 ids pad.

        (A segment with an IVF companion is searched through :meth:`ivf_candidates` and
        :meth:`rescore` instead, across segments: :meth:`~.snapshot.Snapshot.search_vectors`.)
        """
        count = self._vectors.ntotal
        if not count:
            return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
        scores, rows = self._vectors.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, count))
        ids = np.where(rows >= 0, self.vector_ids[np.maximum(rows, 0)], -1)
        if rows.shape[1] < k:  # a segment smaller than k
            pad = k - rows.shape[1]
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        return scores, ids

    def coarse_lists(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(centroid scores, list numbers) of the lists each query probes: the same for every
        segment of one IVF codec, so a snapshot assigns its queries once."""
        index, nprobe = self._ivf
        return index.quantizer.search(np.ascontiguousarray(queries, dtype=np.float32), nprobe)

    def ivf_candidates(self, queries: np.ndarray, depth: int,
                       lists: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(approximate inner products, rows) of the ``depth`` best candidates per query from the
        IVF companion: comparable across segments, which share the codec. ``lists``: the
        queries' :meth:`coarse_lists`, when a caller has them already."""
        index, _ = self._ivf
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        distances, assigned = lists if lists is not None else self.coarse_lists(queries)
        scores, rows = index.search_preassigned(queries, min(depth, index.ntotal), assigned, distances)
        scores[rows < 0] = -np.inf
        return scores, rows

    def rescore(self, queries: np.ndarray, query_of: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Inner products of ``queries[query_of[i]]`` with the stored vector of ``rows[i]``.

        4-bit codes are scored without decoding them: a code ``c`` stands for
        ``low + (c + 0.5) * step`` per dimension, so a query's product is a constant plus the
        codes' product with ``query * step``.
        """
        scores = np.full(rows.shape, -np.inf, np.float32)
        if not len(rows):
            return scores
        unique, inverse = np.unique(rows, return_inverse=True)
        codes = self._read_codes(unique)
        if self._sq4 is None:
            decoded = self._vectors.sa_decode(codes)
            return np.einsum("ij,ij->i", queries[query_of], decoded[inverse]).astype(np.float32)
        low, step = self._sq4
        asked = np.unique(query_of)
        weights = queries[asked] * step  # (asked queries, dimensions)
        # a byte holds dimension 2j in its low nibble and 2j+1 in its high one: two products
        # over every distinct row for all the queries at once, not one gathered copy per query
        products = (codes & 15).astype(np.float32) @ weights[:, 0::2].T
        products += (codes >> 4).astype(np.float32) @ weights[:, 1::2].T
        constants = (queries[asked] @ low + 0.5 * weights.sum(axis=1)).astype(np.float32)
        column = np.searchsorted(asked, query_of)
        return constants[column] + products[inverse, column]

    def _read_codes(self, rows: np.ndarray) -> np.ndarray:
        """The codes of ``rows`` (ascending), read with ``pread``: not through the map, where a
        page fault maps its whole neighbourhood and a long-running process would end up
        holding the file for a few rows per query."""
        size, offset = self._code_size, self._code_offset
        descriptor = self._files[".vec"].fileno()
        data = b"".join(os.pread(descriptor, size, offset + int(row) * size) for row in rows.tolist())
        if len(data) != len(rows) * size:
            raise CorruptIndexError(f"segment {self.name}: its vector file ends before row {int(rows.max())}")
        return np.frombuffer(data, np.uint8).reshape(len(rows), size)

    def vector_codes(self) -> np.ndarray:
        """The stored codes of every vector (rows x code size, a view of the mapped file), for a merge to copy."""
        import faiss

        count, size = self._vectors.ntotal, self._code_size
        if not count:
            return np.zeros((0, size), np.uint8)
        return faiss.rev_swig_ptr(self._vectors.codes.data(), count * size).reshape(count, size)

    def decode_vectors(self, rows: np.ndarray) -> np.ndarray:
        """float32 vectors of the given rows (decoded from their codes)."""
        if not len(rows):
            return np.zeros((0, self._vectors.d), np.float32)
        return self._vectors.sa_decode(np.ascontiguousarray(self.vector_codes()[rows]))

    def decoded_blocks(self, size: int = 65536):
        """Every vector, decoded, in blocks of ``size`` rows (row order)."""
        codes = self.vector_codes()
        for start in range(0, len(codes), size):
            yield self._vectors.sa_decode(np.ascontiguousarray(codes[start:start + size]))

    # -- hashes --------------------------------------------------------------------------
    def search_pdq(self, variants: np.ndarray, k: int, max_distance: int) -> list[tuple[int, int]]:
        """(distance, reference id) of the nearest searchable hashes to any variant, within ``max_distance``."""
        count = self._pdq.ntotal
        if not count or not len(variants):
            return []
        distances, rows = self._pdq.search(np.ascontiguousarray(variants, dtype=np.uint8), min(k, count))
        keep = (rows >= 0) & (distances <= max_distance)
        local = self._sections["pdq_rows"][rows[keep]]
        return list(zip(distances[keep].tolist(), self.refs[local].tolist()))

    def pdq_rows(self) -> np.ndarray:
        """(n x 33) hash and quality of every reference, in ``refs`` order."""
        return self._sections["pdq"]

    # -- words ---------------------------------------------------------------------------
    def word_scores(self, query_words: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Per local row, the summed ``weights`` of the query's words it holds, over its norm."""
        keys, starts, postings = self._sections["words"], self._sections["word_starts"], self._sections["word_rows"]
        scores = np.zeros(len(self.refs))
        if not len(keys) or not len(query_words):
            return scores
        wanted = np.asarray(query_words, dtype=np.int64)
        if self._blocks:
            wanted = (wanted[:, None] << BLOCK_BITS | np.arange(self._blocks, dtype=np.int64)[None, :]).ravel()
        positions = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
        found = keys[positions] == wanted
        positions, matched = positions[found], wanted[found]
        first, last = starts[positions].astype(np.int64), starts[positions + 1].astype(np.int64)
        lengths = last - first
        if not lengths.sum():
            return scores
        offsets = np.repeat(first - np.cumsum(np.concatenate([[0], lengths[:-1]])), lengths)
        owners = postings[np.arange(lengths.sum()) + offsets].astype(np.int64)
        if self._blocks:
            owners += np.repeat((matched & _BLOCK_MASK) << self._row_bits, lengths)
            matched = matched >> BLOCK_BITS
        scores = np.bincount(owners, weights=np.repeat(weights[matched], lengths), minlength=len(self.refs))
        return scores / self._sections["norms"]

    def word_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(word, local row) of every posting, for a merge."""
        keys = self._sections["words"].astype(np.int64)
        counts = np.diff(self._sections["word_starts"].astype(np.int64))
        rows = self._sections["word_rows"].astype(np.int64)
        if self._blocks:
            rows = rows + np.repeat((keys & _BLOCK_MASK) << self._row_bits, counts)
            keys = keys >> BLOCK_BITS
        return np.repeat(keys, counts).astype(np.uint16), rows

    # -- per reference -------------------------------------------------------------------
    def row_of(self, ref_id: int) -> int | None:
        row = int(np.searchsorted(self.refs, ref_id))
        return row if row < len(self.refs) and int(self.refs[row]) == ref_id else None

    def features(self, row: int) -> bytes:
        return self._blob("feature", row)

    def thumbnail(self, row: int) -> bytes:
        return self._blob("thumb", row)

    def norms(self) -> np.ndarray:
        return self._sections["norms"]

    def _blob(self, kind: str, row: int) -> bytes:
        """One stored record, read with ``pread``: a touch through the map would map the page
        cache's whole folio around it (up to megabytes) into this process for every candidate."""
        offsets = self._sections[f"{kind}_offsets"]
        first, last = int(offsets[row]), int(offsets[row + 1])
        start = self._section_starts[f"{kind}_bytes"]
        data = os.pread(self._files[".dat"].fileno(), last - first, start + first)
        if len(data) != last - first:
            raise CorruptIndexError(f"segment {self.name}: a stored record runs past the end of its file")
        return data

    def close(self) -> None:
        self._sections = {}
        self.refs = self.vector_ids = np.zeros(0, np.int64)
        for handle in getattr(self, "_files", {}).values():
            handle.close()
        try:
            self._map.close()
        except BufferError:  # a view handed out is still alive; the mapping goes with it
            pass


def _sq4_ranges(index) -> tuple[np.ndarray, np.ndarray] | None:
    """(low, step) per dimension of a 4-bit scalar quantiser, or None for other codes."""
    import faiss

    if getattr(index, "sq", None) is None or index.sq.qtype != faiss.ScalarQuantizer.QT_4bit:
        return None
    trained = faiss.vector_to_array(index.sq.trained).astype(np.float32)
    return trained[: index.d], trained[index.d:] / 15.0


def merge_inputs(segments: Sequence[Segment], removed: np.ndarray) -> tuple[list[SegmentInput], np.ndarray, np.ndarray]:
    """Every live reference of ``segments`` (ascending ids) as inputs to one new segment, their vector
    codes, and their norms. All segments must share one codec."""
    items, codes, norms = [], [], []
    for segment in sorted(segments, key=lambda s: int(s.refs[0]) if len(s.refs) else -1):
        live = ~np.isin(segment.refs, removed)
        segment_codes = segment.vector_codes()
        vector_owner = np.searchsorted(segment.refs, segment.vector_ids >> 4)
        pair_words, pair_rows = segment.word_pairs()
        order = np.argsort(pair_rows, kind="stable")
        pair_words, pair_rows = pair_words[order], pair_rows[order]
        word_bounds = np.searchsorted(pair_rows, np.arange(len(segment.refs) + 1))
        vector_bounds = np.searchsorted(vector_owner, np.arange(len(segment.refs) + 1))
        pdq = segment.pdq_rows()
        for row in np.flatnonzero(live).tolist():
            vectors = slice(int(vector_bounds[row]), int(vector_bounds[row + 1]))
            items.append(SegmentInput(int(segment.refs[row]), np.array(segment.vector_ids[vectors]), np.zeros((0, 0)),
                                      pdq[row].tobytes(), segment.features(row),
                                      np.array(pair_words[word_bounds[row]:word_bounds[row + 1]]), segment.thumbnail(row)))
            codes.append(np.array(segment_codes[vectors]))
        norms.append(segment.norms()[live])
    size = segments[0].vector_codes().shape[1] if segments else 0
    all_codes = np.concatenate(codes) if codes else np.zeros((0, size), np.uint8)
    return items, all_codes, (np.concatenate(norms) if norms else np.zeros(0, np.float32))


def _read_sections(buffer: mmap.mmap, path: Path) -> tuple[dict[str, np.ndarray], dict[str, int], dict]:
    """The sections of a segment's ``.dat`` (arrays over ``buffer``), each one's file offset, and
    its table of contents; raises ValueError on a damaged file."""
    head = len(_MAGIC) + _LENGTH.size
    if len(buffer) < head or buffer[: len(_MAGIC)] != _MAGIC:
        raise ValueError("not a segment file")
    (length,) = _LENGTH.unpack_from(buffer, len(_MAGIC))
    if head + length > len(buffer):
        raise ValueError("truncated table of contents")
    header = json.loads(bytes(buffer[head : head + length]))
    start = -(-(head + length) // _ALIGN) * _ALIGN
    sections, starts = {}, {}
    for name, (offset, dtype, shape) in header.get("sections", {}).items():
        dtype = np.dtype(dtype)
        count = int(np.prod(shape)) if shape else 1
        if start + offset + count * dtype.itemsize > len(buffer):
            raise ValueError(f"section {name} runs past the end of the file (truncated)")
        sections[name] = np.frombuffer(buffer, dtype=dtype, count=count, offset=start + offset).reshape(shape)
        starts[name] = start + int(offset)
    missing = {"refs", "pdq", "vector_ids", "words", "word_starts", "word_rows", "norms", "feature_offsets",
               "feature_bytes", "thumb_offsets", "thumb_bytes", "pdq_rows"} - set(sections)
    if missing:
        raise ValueError(f"sections missing: {', '.join(sorted(missing))}")
    return sections, starts, header


