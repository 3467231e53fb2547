"""The writer's two commits: staged references into a new segment, and merges of segments.

:func:`commit_pending` turns what the writer staged since the last save into one new
segment. The save that first finds :data:`~.codecs.MIN_TRAIN_REFERENCES` references trains
the index's codecs on them (:func:`~.codecs.train_codecs`) and rewrites the raw segments
written before with them, in the same commit. :func:`merge` folds segments of one size tier
into one, dropping removed references, in a commit of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import visual_words as vw
from ..features import FEATURES_BLOB, FEATURES_CODEC_BLOB, KEYPOINTS_BLOB, PDQ_BLOB, PDQ_BLOB_SIZE, THUMB_BLOB
from ..features import decode_local_features, encode_local_features, recode_local_features, stored_descriptors
from ..verify.keypoints import Keypoints
from .codecs import RAW, Codecs, train_codecs
from .ivf import IVF_FROM_VECTORS, RETRAIN_GROWTH, SEGMENT_IVF_FROM, TRAINING_PER_LIST, build_companion, companion_name
from .ivf import lists_for, train_ivf
from .segment_writer import SegmentInput
from .segments import Segment, merge_inputs
from .vectors import REGION_BITS

if TYPE_CHECKING:
    from .store import IndexStore, Pending

#: References whose descriptors one coding call takes (about 40,000 rows, 20 MB of RootSIFT).
CODED_TOGETHER = 128


def commit_pending(store: "IndexStore") -> None:
    """Write the staged references as one segment and commit it with the staged removals."""
    pending, removed = store.take_pending()
    snapshot = store.snapshot
    references = store.metadata.count()  # the writer's own connection: staged rows included
    codecs, dropped, cleared, items = snapshot.codecs or store.take_adopted(), [], [], []
    try:
        raw = [segment for segment in snapshot.segments if segment.info["codec"] == RAW]
        hidden = np.union1d(snapshot.removed, np.array(sorted(removed), np.int64))
        if codecs is None and store.needs_codecs(references):
            codecs = _train(store, raw, pending, hidden)
        if codecs is not None and codecs is not snapshot.codecs:  # trained (or adopted) now: rewrite the raw segments
            items = [item for segment in raw for item in _recoded(segment, hidden, codecs)]
            dropped = [segment.name for segment in raw]
            cleared = [int(ref_id) for segment in raw for ref_id in segment.refs if _contains(hidden, int(ref_id))]
        items += _encoded_all(store, pending, codecs)
        items.sort(key=lambda item: item.ref_id)
        added = []
        if items:
            frequency = snapshot.document_frequency.copy()
            for item in items:
                frequency[item.words.astype(np.int64)] += 1
            name = f"seg-{store.generation() + 1:08d}"
            added.append(store.segment_writer(name, codecs).write(items, None, frequency, max(references, 1)))
        # references removed from a rewritten raw segment are simply left out of it: no tombstone
        gone = set(removed) - set(cleared)
        vector_delta = sum(len(item.vector_ids) for item in pending) - _vectors_of(snapshot.segments, sorted(removed))
        store.commit(added, dropped, gone, cleared, codecs, vector_delta)
    except BaseException:
        store.metadata.rollback()
        raise


def merge(store: "IndexStore", force: bool = False) -> None:
    """Merge segments of one tier (every segment with ``force``), each merge a commit of its own."""
    from .store import MERGE_FACTOR, tier

    while True:
        snapshot = store.snapshot
        group = _merge_group(snapshot.segments, snapshot.removed, force, MERGE_FACTOR, tier)
        if not group:
            return
        items, codes, norms = merge_inputs(group, snapshot.removed)
        cleared = [int(ref_id) for segment in group for ref_id in segment.refs if _contains(snapshot.removed, int(ref_id))]
        added = []
        if items:
            name = f"seg-{store.generation() + 1:08d}"
            writer = store.segment_writer(name, snapshot.codecs if group[0].info["codec"] != RAW else None)
            info = writer.write(items, codes, snapshot.document_frequency, snapshot.references, norms=norms)
            if snapshot.ivf is not None and info["vectors"] >= SEGMENT_IVF_FROM:
                decoder = writer.new_vector_index()
                blocks = (decoder.sa_decode(np.ascontiguousarray(codes[start:start + 65536]))
                          for start in range(0, len(codes), 65536))
                build_companion(snapshot.ivf, blocks, store.segment_directory / companion_name(name, snapshot.ivf.version))
                info["ivf"] = snapshot.ivf.version
            added.append(info)
        store.commit(added, [segment.name for segment in group], set(), cleared, snapshot.codecs, 0)
        if force:
            return


def maintain_ivf(store: "IndexStore") -> None:
    """Train the IVF codec once the index is large enough (again when it has grown
    :data:`~.ivf.RETRAIN_GROWTH` times) and give every large segment its companion, in one commit."""
    snapshot = store.snapshot
    codec = snapshot.ivf
    if snapshot.codecs is None or (codec is None and snapshot.vector_count < IVF_FROM_VECTORS):
        return
    if codec is None or snapshot.vector_count >= RETRAIN_GROWTH * codec.trained_on:
        codec = train_ivf(_training_sample(snapshot, lists_for(snapshot.vector_count) * TRAINING_PER_LIST * 2),
                          snapshot.vector_count)
    stale = [segment for segment in snapshot.segments
             if len(segment.vector_ids) >= SEGMENT_IVF_FROM and segment.info.get("ivf") != codec.version]
    if not stale and codec is snapshot.ivf:
        return
    updated = []
    for segment in stale:
        build_companion(codec, segment.decoded_blocks(), store.segment_directory / companion_name(segment.name, codec.version))
        updated.append(dict(segment.info, ivf=codec.version))
    # segments indexed with an older codec lose their companion when not rebuilt (none are: every large one is)
    store.commit(updated, [segment.name for segment in stale], set(), [], snapshot.codecs, 0, ivf=codec)


def _training_sample(snapshot, count: int, seed: int = 0) -> np.ndarray:
    """Up to ``count`` live vectors drawn across the segments in proportion to their size."""
    total = sum(len(segment.vector_ids) for segment in snapshot.segments)
    rng = np.random.default_rng(seed)
    blocks = []
    for segment in snapshot.segments:
        share = int(round(count * len(segment.vector_ids) / max(total, 1)))
        if share:
            rows = np.sort(rng.choice(len(segment.vector_ids), min(share, len(segment.vector_ids)), replace=False))
            blocks.append(segment.decode_vectors(rows))
    sample = np.concatenate(blocks)
    return sample[rng.permutation(len(sample))]


def _merge_group(segments, removed: np.ndarray, force: bool, factor: int, tier_of) -> list[Segment]:
    codecs = {segment.info["codec"] for segment in segments}
    if len(codecs) > 1:  # raw segments only exist before codecs, which rewrite them all
        return []
    if force:
        dirty = any(np.isin(segment.refs, removed).any() for segment in segments) if len(removed) else False
        return list(segments) if len(segments) > 1 or dirty else []
    from .store import MAX_MERGED_REFERENCES

    by_tier: dict[int, list[Segment]] = {}
    for segment in segments:
        if len(segment) * factor <= MAX_MERGED_REFERENCES:  # larger ones stay as they are
            by_tier.setdefault(tier_of(len(segment)), []).append(segment)
    for level in sorted(by_tier):
        if len(by_tier[level]) >= factor:
            return by_tier[level][:factor]
    return []


def _train(store: "IndexStore", raw: list[Segment], pending: list["Pending"], hidden: np.ndarray) -> Codecs | None:
    """Codecs trained on the raw segments and the staged references, or None when they hold too
    few keypoints (flat images): the index stays raw until a later save."""
    vectors = [item.vectors for item in pending]
    descriptors = [_descriptors(store, item) for item in pending]
    for segment in raw:
        live = np.flatnonzero(~np.isin(segment.refs, hidden))
        vectors.append(segment.decode_vectors(np.flatnonzero(~np.isin(segment.vector_ids >> REGION_BITS, hidden))))
        descriptors += [decode_local_features(segment.features(row), None).root_sift for row in live.tolist()]
    descriptors = [block for block in descriptors if len(block)]
    try:
        return train_codecs(np.concatenate(vectors), np.concatenate(descriptors) if descriptors else np.zeros((0, 128)))
    except ValueError:
        return None


def _descriptors(store: "IndexStore", item: "Pending") -> np.ndarray:
    """RootSIFT of a staged reference: as extracted, or decoded from a copied record."""
    if KEYPOINTS_BLOB in item.blobs:
        return Keypoints.from_bytes(item.blobs[KEYPOINTS_BLOB]).root_sift
    return decode_local_features(item.blobs[FEATURES_BLOB], store.known_codecs(item.blobs[FEATURES_CODEC_BLOB])).root_sift


def _encoded_all(store: "IndexStore", pending: list["Pending"], codecs: Codecs | None) -> list[SegmentInput]:
    """The staged references as segment rows; the extracted descriptors of each
    :data:`CODED_TOGETHER` references coded in one call (their keypoints held only meanwhile)."""
    rows = []
    for start in range(0, len(pending), CODED_TOGETHER):
        group = pending[start:start + CODED_TOGETHER]
        extracted = {index: Keypoints.from_bytes(item.blobs[KEYPOINTS_BLOB])
                     for index, item in enumerate(group) if KEYPOINTS_BLOB in item.blobs}
        codes: dict[int, np.ndarray] = {}
        if codecs is not None and extracted:
            blocks = [stored_descriptors(keypoints) for keypoints in extracted.values()]
            coded = codecs.encode_descriptors(np.concatenate(blocks))
            bounds = np.cumsum([0] + [len(block) for block in blocks])
            codes = {index: coded[begin:end] for index, begin, end in zip(extracted, bounds[:-1], bounds[1:])}
        rows += [_encoded(store, item, codecs, extracted.get(index), codes.get(index))
                 for index, item in enumerate(group)]
    return rows


def _encoded(store: "IndexStore", item: "Pending", codecs: Codecs | None, keypoints: Keypoints | None,
             codes: np.ndarray | None) -> SegmentInput:
    pdq = item.blobs[PDQ_BLOB]
    if len(pdq) != PDQ_BLOB_SIZE:
        raise ValueError(f"a PDQ blob has {PDQ_BLOB_SIZE} bytes, not {len(pdq)}")
    if keypoints is not None:
        # the words come from every extracted keypoint: postings cost two or four bytes a
        # word where a stored keypoint costs fifteen, and votes find copies by them
        record, root = encode_local_features(keypoints, codecs, codes), keypoints.root_sift
    else:  # a record copied from another index: kept when coded alike, else coded again
        record, root = _copied_record(store, item, codecs)
    words = vw.quantise(root, codecs.word_codebook) if codecs is not None else np.zeros(0, np.uint16)
    return SegmentInput(item.ref_id, item.vector_ids, item.vectors, pdq, record, words, item.blobs.get(THUMB_BLOB, b""))


def _copied_record(store: "IndexStore", item: "Pending", codecs: Codecs | None) -> tuple[bytes, np.ndarray]:
    record = item.blobs[FEATURES_BLOB]
    source = store.known_codecs(item.blobs[FEATURES_CODEC_BLOB])
    if (source.version if source else RAW) != (codecs.version if codecs else RAW):
        if codecs is None:
            raise ValueError("a coded record can only be copied into an index with codecs (adopt them first)")
        record = recode_local_features(record, codecs) if source is None else \
            encode_local_features(decode_local_features(record, source), codecs)
    return record, decode_local_features(record, codecs).root_sift


def _recoded(segment: Segment, hidden: np.ndarray, codecs: Codecs) -> list[SegmentInput]:
    """The live references of a raw segment, coded with ``codecs`` (vectors float32 again)."""
    owners = segment.vector_ids >> REGION_BITS
    items = []
    for row, ref_id in enumerate(segment.refs.tolist()):
        if _contains(hidden, ref_id):
            continue
        rows = np.flatnonzero(owners == ref_id)
        features = segment.features(row)
        root = decode_local_features(features, None).root_sift
        items.append(SegmentInput(ref_id, segment.vector_ids[rows].copy(), segment.decode_vectors(rows),
                                  segment.pdq_rows()[row].tobytes(), recode_local_features(features, codecs),
                                  vw.quantise(root, codecs.word_codebook), segment.thumbnail(row)))
    return items


def _vectors_of(segments, ref_ids: list[int]) -> int:
    """How many stored vectors the given references have (removals subtract them)."""
    total = 0
    for ref_id in ref_ids:
        low, high = ref_id << REGION_BITS, (ref_id + 1) << REGION_BITS
        for segment in segments:
            total += int(np.searchsorted(segment.vector_ids, high) - np.searchsorted(segment.vector_ids, low))
    return total


def _contains(sorted_ids: np.ndarray, ref_id: int) -> bool:
    position = int(np.searchsorted(sorted_ids, ref_id))
    return position < len(sorted_ids) and int(sorted_ids[position]) == ref_id
