"""What is computed from one image for the index, and the compact forms it is stored in.

A reference is prepared once (:func:`reference_blobs`, in worker processes or on Ray):
its SIFT keypoints (lossless, as extracted), its PDQ hash and a small thumbnail. The
keypoints come in the order they are kept in: half of the first :data:`STORED_KEYPOINTS`
spread over the square around the subject's face that tight avatars are cut from
(:data:`FOCUS_SCALE` face sizes wide), the rest spread over the whole picture
(:func:`focus_order`). The writer then stores that prefix compactly
(:func:`encode_local_features`): positions as 12-bit fractions of the frame, descriptors as
product quantiser codes once the index has trained its codecs (:mod:`provenance.index.codecs`).
Verification reads them back with :func:`decode_local_features` as
:class:`StoredKeypoints`, which :func:`~provenance.verify.geometry.verify_pair` accepts in
place of :class:`~provenance.verify.keypoints.Keypoints`.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .verify.keypoints import Keypoints, extract_keypoints
from .verify.pdq import pdq_hash

if TYPE_CHECKING:
    from .index.codecs import Codecs

#: Blob kinds a prepared reference carries to the writer.
KEYPOINTS_BLOB = "sift"
PDQ_BLOB = "pdq"  # 32 hash bytes + 1 quality byte
THUMB_BLOB = "thumb"  # a small WebP of the reference as indexed, for evidence pages
#: A stored local-feature record copied from another index (shard merges), and the version
#: of the codecs it was coded with ("raw" for none).
FEATURES_BLOB = "features"
FEATURES_CODEC_BLOB = "features_codec"
PDQ_BLOB_SIZE = 33
#: Keypoints kept per reference (of the 500 extracted). Spread over the whole picture, 256
#: verified 3 % fewer avatar and tight-crop copies than all 500; with half of them on the
#: face square, 300 verified the small avatars of profile-page screenshots that 200 missed
#: (docs/benchmarks.md, "Storage").
STORED_KEYPOINTS = 300
#: Width of the focus square in face sizes: the larger of the references' face squares.
FOCUS_SCALE = 1.2
#: Longer side and WebP quality of the stored thumbnail (about 1.9 KB for a portrait; 2.2 at quality 50).
THUMB_SIDE = 160
THUMB_QUALITY = 40
THUMB_MIME = "image/webp"

_MAGIC = b"PVLF"
_HEADER = struct.Struct("<4sBBHII")  # magic, version, descriptor kind, count, width, height
_VERSION = 1
_RAW, _PQ = 0, 1
_POSITION_BITS = 12
_POSITION_SCALE = float((1 << _POSITION_BITS) - 1)


def reference_blobs(image: Image.Image, focus: tuple[int, int, int, int] | None = None) -> dict[str, bytes]:
    """What is kept per reference besides its vectors: SIFT keypoints (in :func:`focus_order`
    around the pixel box ``focus``, when given), PDQ hash, thumbnail."""
    digest, quality = pdq_hash(image, max_side=512)
    keypoints = extract_keypoints(image)
    if focus is not None:
        keypoints = focus_order(keypoints, focus)
    return {KEYPOINTS_BLOB: keypoints.to_bytes(), PDQ_BLOB: digest + bytes([quality]), THUMB_BLOB: thumbnail_webp(image)}


def focus_order(keypoints: Keypoints, focus: tuple[int, int, int, int], count: int = STORED_KEYPOINTS) -> Keypoints:
    """``keypoints`` (in their spread order) reordered so that half of the first ``count`` lie in
    ``focus`` (a pixel box), themselves spread over it; then the others in their order."""
    from .verify.keypoints import spread_select

    x0, y0, x1, y1 = focus
    inside = np.flatnonzero((keypoints.xy[:, 0] >= x0) & (keypoints.xy[:, 0] < x1)
                            & (keypoints.xy[:, 1] >= y0) & (keypoints.xy[:, 1] < y1))
    # earlier in the spread order means stronger within its cell: a rank stands in for the response
    strength = -np.arange(len(inside), dtype=np.float32)
    chosen = inside[spread_select(keypoints.xy[inside] - np.array([x0, y0], np.float32), strength,
                                  max(1, x1 - x0), max(1, y1 - y0), count // 2)]
    order = np.concatenate([chosen, np.setdiff1d(np.arange(len(keypoints)), chosen, assume_unique=True)])
    return Keypoints(keypoints.xy[order], keypoints.descriptors[order], keypoints.width, keypoints.height,
                     keypoints.method)


def thumbnail_webp(image: Image.Image, side: int = THUMB_SIDE, quality: int = THUMB_QUALITY) -> bytes:
    """A WebP copy of ``image`` whose longer side is at most ``side`` pixels."""
    small = image.convert("RGB")
    if max(small.size) > side:
        small = small.copy()
        small.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, "WEBP", quality=quality, method=4)
    return buffer.getvalue()


@dataclass(frozen=True, eq=False)
class StoredKeypoints:
    """A reference's keypoints as read back from the index: positions and RootSIFT
    descriptors (decoded from their codes: approximate, unit length)."""

    xy: np.ndarray
    root_sift: np.ndarray
    width: int
    height: int
    method: str = "sift"
    #: what coding adds to squared descriptor distances on average (Codecs.descriptor_error)
    distance_bias: float = 0.0

    def __len__(self) -> int:
        return len(self.xy)


def stored_subset(keypoints: Keypoints, count: int = STORED_KEYPOINTS) -> Keypoints:
    """The first ``count`` keypoints (the extraction's spread order keeps a prefix spread)."""
    if len(keypoints) <= count:
        return keypoints
    return Keypoints(keypoints.xy[:count], keypoints.descriptors[:count], keypoints.width, keypoints.height,
                     keypoints.method)


def encode_local_features(keypoints: "Keypoints | StoredKeypoints", codecs: "Codecs | None",
                          codes: np.ndarray | None = None) -> bytes:
    """The stored form of (at most :data:`STORED_KEYPOINTS` of) a reference's SIFT keypoints.

    Without codecs the SIFT bytes are kept as they are, so ``keypoints`` must then be
    :class:`~provenance.verify.keypoints.Keypoints`; with codecs a
    :class:`StoredKeypoints` read from another index can be coded again. ``codes``: the
    descriptors' codes where the caller coded many references' in one call
    (:func:`stored_descriptors` of each, then ``Codecs.encode_descriptors``).
    """
    if keypoints.method != "sift":
        raise ValueError("references store SIFT keypoints")
    kept = stored_subset(keypoints) if isinstance(keypoints, Keypoints) else keypoints
    scale = np.array([kept.width, kept.height], dtype=np.float64)
    fractions = np.clip((kept.xy.astype(np.float64) + 0.5) / np.maximum(scale, 1), 0.0, 1.0)
    positions = np.round(fractions * _POSITION_SCALE).astype(np.uint32)
    if codecs is None:
        if not isinstance(kept, Keypoints):
            raise ValueError("decoded keypoints can only be stored with codecs")
        kind, descriptors = _RAW, kept.descriptors
    else:
        kind, descriptors = _PQ, codecs.encode_descriptors(stored_descriptors(kept)) if codes is None else codes
    count = len(descriptors)
    header = _HEADER.pack(_MAGIC, _VERSION, kind, count, kept.width, kept.height)
    return header + _pack_positions(positions[:count]) + np.ascontiguousarray(descriptors, dtype=np.uint8).tobytes()


def stored_descriptors(keypoints: "Keypoints | StoredKeypoints") -> np.ndarray:
    """The RootSIFT descriptors :func:`encode_local_features` codes for ``keypoints``."""
    # RootSIFT is computed row by row, so the stored subset's is a prefix of the whole set's,
    # which the writer computes anyway for the visual words
    return keypoints.root_sift[:STORED_KEYPOINTS]


def _pack_positions(positions: np.ndarray) -> bytes:
    """(n, 2) 12-bit integers as 3 bytes each pair: x in the low 12 bits, y in the high."""
    packed = (positions[:, 0].astype(np.uint32) | positions[:, 1].astype(np.uint32) << _POSITION_BITS)
    return packed.astype("<u4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()


def _unpack_positions(data: bytes, count: int, offset: int) -> np.ndarray:
    raw = np.frombuffer(data, dtype=np.uint8, count=3 * count, offset=offset).reshape(count, 3).astype(np.uint32)
    packed = raw[:, 0] | raw[:, 1] << 8 | raw[:, 2] << 16
    mask = (1 << _POSITION_BITS) - 1
    return np.stack([packed & mask, packed >> _POSITION_BITS], axis=1)


def decode_local_features(data: bytes, codecs: "Codecs | None") -> StoredKeypoints:
    """Inverse of :func:`encode_local_features`; raises ValueError on a malformed record."""
    if len(data) < _HEADER.size:
        raise ValueError("local-feature record too short")
    magic, version, kind, count, width, height = _HEADER.unpack_from(data)
    if magic != _MAGIC or version != _VERSION or kind not in (_RAW, _PQ):
        raise ValueError("not a local-feature record (bad magic, version or kind)")
    if kind == _PQ and codecs is None:
        raise ValueError("a coded local-feature record needs the index's codecs")
    width_bytes = 128 if kind == _RAW else codecs.descriptor_bytes
    if len(data) != _HEADER.size + count * (3 + width_bytes):
        raise ValueError("local-feature record has the wrong length")
    positions = _unpack_positions(data, count, _HEADER.size)
    xy = (positions.astype(np.float32) / _POSITION_SCALE) * np.array([width, height], np.float32) - 0.5
    descriptors = np.frombuffer(data, dtype=np.uint8, offset=_HEADER.size + 3 * count).reshape(count, width_bytes)
    if kind == _RAW:
        root = Keypoints(xy, descriptors, width, height, "sift").root_sift
    else:
        root = codecs.decode_descriptors(descriptors)
        root = root / np.maximum(np.linalg.norm(root, axis=1, keepdims=True), 1e-6)
    bias = codecs.descriptor_error if kind == _PQ else 0.0
    return StoredKeypoints(xy.astype(np.float32), np.ascontiguousarray(root, dtype=np.float32), width, height,
                           distance_bias=bias)


def recode_local_features(data: bytes, codecs: "Codecs") -> bytes:
    """A raw record (written before the index trained its codecs) with its descriptors coded."""
    magic, version, kind, count, width, height = _HEADER.unpack_from(data)
    if kind != _RAW:
        raise ValueError("only a raw local-feature record can be recoded")
    root = decode_local_features(data, None).root_sift
    header = _HEADER.pack(magic, version, _PQ, count, width, height)
    positions = data[_HEADER.size:_HEADER.size + 3 * count]
    return header + positions + np.ascontiguousarray(codecs.encode_descriptors(root), dtype=np.uint8).tobytes()


def shuffled_positions(data: bytes, rng: np.random.Generator) -> bytes:
    """A record whose keypoints' positions are permuted among them (benchmark distractors: the
    same descriptors, so the same matching work, but no consistent geometry to verify)."""
    count = _HEADER.unpack_from(data)[3]
    start = _HEADER.size
    positions = np.frombuffer(data, np.uint8, count=3 * count, offset=start).reshape(count, 3)
    return data[:start] + positions[rng.permutation(count)].tobytes() + data[start + 3 * count:]
