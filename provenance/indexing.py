"""The reindex stages after reading: embed, then write; and the run that drives them.

A reference goes read -> prepare (:class:`~provenance.ingest.Preparer`, in worker
processes or Ray tasks) -> :func:`embed_stage` (the model, in this process or a Ray actor)
-> :func:`write_stage` (the single writer: ids, metadata rows, data staged for the next segment).
The local runner (:meth:`ReindexRun.consume`) and the Ray runner
(:mod:`provenance.distributed.ray_runner`) compose these same functions, so both give the
same index for the same files.
"""

from __future__ import annotations

import json
import time
from typing import Callable, Iterable

import numpy as np

from .embedders import Embedder
from .index.metadata import Reference
from .index.store import IndexStore
from .index.vectors import vector_ids
from .ingest import PreparedReference, ProgressCallback, batched
from .results import ReindexSummary

#: References embedded per forward pass during reindex.
EMBED_BATCH = 32
#: Committed to disk at least this often during reindex, so an interrupted run resumes.
CHECKPOINT_EVERY = 512


def embed_stage(embedder: Embedder, items: list[PreparedReference]) -> list[PreparedReference]:
    """Run the model over every region of ``items`` in one batch; fills ``vectors`` and ``regions``
    and drops the model inputs. Items already embedded are left as they are."""
    pending = [item for item in items if item.vectors is None]
    if not pending:
        return items
    inputs = [array for item in pending for _, array in sorted(item.arrays.items())]
    vectors = embedder.embed_arrays(np.stack(inputs))
    offset = 0
    for item in pending:
        count = len(item.arrays)
        item.regions = tuple(sorted(item.arrays))
        item.vectors, item.arrays = vectors[offset : offset + count], {}
        offset += count
    return items


def write_stage(store: IndexStore, items: list[PreparedReference]) -> list[int]:
    """Store embedded ``items``: new ids in order, metadata rows, and their data staged for the next segment.

    Returns the new reference ids. The caller holds the write lock and saves.
    """
    if not items:
        return []
    metadata = store.metadata
    first_id = metadata.next_id()
    now = time.time()
    references = []
    for offset, item in enumerate(items):
        if item.vectors is None:
            raise ValueError("write_stage needs embedded references (embed_stage first)")
        ref_id = first_id + offset
        record = item.record
        references.append(Reference(ref_id, item.sha256 or "", record.path, record.subject, record.source_url,
                                    record.collection, item.width, item.height, now, dict(record.extra)))
        ids = vector_ids(np.full(len(item.regions), ref_id), np.array(item.regions, dtype=np.int64))
        store.stage(ref_id, ids, np.asarray(item.vectors, dtype=np.float32), item.blobs)
    metadata.insert_many(references)
    return [first_id + offset for offset in range(len(items))]


def index_prepared(store: IndexStore, embedder: Embedder, items: list[PreparedReference]) -> list[int]:
    """Embed and write ``items`` (``Engine.add``); returns their new ids."""
    return write_stage(store, embed_stage(embedder, items))


class ReindexRun:
    """One pass of ``Engine.reindex`` over a stream of prepared references.

    Skips content already indexed, replaces a path's old entry when its content changed,
    records failures (``errors.jsonl`` and ``on_error``) and commits every
    ``checkpoint_every`` references (:data:`CHECKPOINT_EVERY` unless told).
    """

    def __init__(self, store: IndexStore, embedder: Embedder, progress: ProgressCallback | None = None,
                 on_error: Callable[[str], None] | None = None, checkpoint_every: int = CHECKPOINT_EVERY):
        self._store = store
        self._checkpoint_every = max(1, checkpoint_every)
        self._embedder = embedder
        self._progress = progress
        self._on_error = on_error
        self.indexed_by_path = store.metadata.path_hashes()
        self.known = store.metadata.known_hashes()
        self.counts = {"added": 0, "skipped": 0, "replaced": 0, "failed": 0}
        self.errors: list[str] = []

    def consume(self, stream: Iterable[PreparedReference], total: int, batch_size: int = EMBED_BATCH) -> None:
        """Index every prepared reference of ``stream`` (``total`` of them, for progress), in order:
        failures are recorded, known content skipped, then the embed and write stages run per batch
        (items that arrive embedded, from the Ray runner's shards, skip the model)."""
        since_checkpoint = done = 0
        for chunk in batched(stream, batch_size):
            to_index = [item for item in chunk if self._triage(item) == "index"]
            self.counts["replaced"] += self._drop_replaced(to_index)
            write_stage(self._store, embed_stage(self._embedder, to_index))
            self.counts["added"] += len(to_index)
            since_checkpoint += len(to_index)
            done += len(chunk)
            if since_checkpoint >= self._checkpoint_every:
                self._store.save()
                since_checkpoint = 0
            if self._progress is not None:
                self._progress(done, total)

    def summary(self, seconds: float) -> ReindexSummary:
        counts = self.counts
        return ReindexSummary(counts["added"], counts["skipped"], counts["replaced"], counts["failed"], seconds,
                              self.errors)

    def _triage(self, item: PreparedReference) -> str:
        if item.error is not None:
            self.counts["failed"] += 1
            self.errors.append(item.error)
            self._store.append_error(json.dumps({"file": item.record.file, "error": item.error, "at": time.time()}))
            if self._on_error is not None:
                self._on_error(item.error)
            return "failed"
        if item.already_known or item.sha256 in self.known:
            self.counts["skipped"] += 1
            return "skipped"
        self.known.add(item.sha256)
        return "index"

    def _drop_replaced(self, items: list[PreparedReference]) -> int:
        stale = [ref_id for item in items for ref_id, _ in self.indexed_by_path.pop(item.record.path, [])]
        if stale:
            self._store.remove_references(stale)
        return len(stale)
