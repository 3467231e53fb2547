"""Several index directories (shards) searched as one index, and merging shards into one.

A collection too large for one index is split into shards (``provenance reindex SOURCE
--shard I/N`` on each machine indexes every Nth record), each a complete index with the
same embedder and regions. :class:`ShardedIndex` fans a query out at the candidate level:
every shard's sources search the query's views, their hits (with ids made global) are fused
in one place, and the best candidates overall are verified, as in one index. With exact
vector search, no visual-word votes (fewer than 200 references per shard, or ``keypoint_votes``
off) and the same thresholds, the answers equal those of one index holding every shard's
references; each shard trains its own codecs (vector ranges, keypoint codes, visual words),
so scores, votes and the candidates they add can differ otherwise.

Global ids: ``shard << SHARD_SHIFT | ref_id``; a result's ``ref_id`` is global and its
``extra`` is the reference's own.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import BadInputError, IncompatibleIndexError
from .imageio import ImageSource
from .results import QueryResult

#: Bits of a global id that hold the shard's own reference id.
SHARD_SHIFT = 40
_LOCAL = (1 << SHARD_SHIFT) - 1


def global_id(shard: int, ref_id: int) -> int:
    return (shard << SHARD_SHIFT) | int(ref_id)


def split_id(value: int) -> tuple[int, int]:
    return int(value) >> SHARD_SHIFT, int(value) & _LOCAL


class _Metadata:
    def __init__(self, stores):
        self.stores = stores

    def get(self, ids: Iterable[int]):
        wanted: dict[int, list[int]] = {}
        for value in ids:
            shard, local = split_id(value)
            wanted.setdefault(shard, []).append(local)
        found = {}
        for shard, locals_ in wanted.items():
            for local, reference in self.stores[shard].metadata.get(locals_).items():
                found[global_id(shard, local)] = dataclasses.replace(reference, id=global_id(shard, local))
        return found


class _Store:
    """What the query pipeline reads from a store, over every shard."""

    def __init__(self, stores):
        self.stores = stores
        self.metadata = _Metadata(stores)

    def load_keypoints(self, value: int):
        shard, local = split_id(value)
        return self.stores[shard].load_keypoints(local)


class _Source:
    """One candidate source over every shard: each shard's hits, ids made global."""

    def __init__(self, name: str, per_shard: Sequence[Any]):
        self.name, self.per_shard = name, per_shard

    def search(self, batch):
        merged = [[] for _ in range(len(batch))]
        for shard, source in enumerate(self.per_shard):
            for image, hits in enumerate(source.search(batch)):
                merged[image] += [dataclasses.replace(hit, ref_id=global_id(shard, hit.ref_id)) for hit in hits]
        return merged


class ShardedIndex:
    """Query several indexes (shards) of one collection as one; see the module docstring."""

    def __init__(self, directories: Sequence[str | os.PathLike]):
        from .engine import Engine

        if not directories:
            raise BadInputError("no shard given")
        self.engines = [Engine.open(directory, read_only=True) for directory in directories]
        first = self.engines[0]
        for engine in self.engines[1:]:
            if (engine.embedder.fingerprint, engine.regions) != (first.embedder.fingerprint, first.regions):
                self.close()
                raise IncompatibleIndexError(f"{engine.directory} has another embedder or other regions than {first.directory}")
        self.embedder = first.embedder

    def close(self) -> None:
        for engine in self.engines:
            engine.close()

    def __enter__(self) -> "ShardedIndex":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def query_options(self, **overrides: Any):
        """The first shard's query settings and thresholds (all shards are judged alike)."""
        return self.engines[0].query_options(**overrides)

    @property
    def image_limits(self):
        return self.engines[0].image_limits

    @image_limits.setter
    def image_limits(self, limits) -> None:
        for engine in self.engines:
            engine.image_limits = limits

    def query(self, image: ImageSource, top_k: int = 5, *, options=None) -> QueryResult:
        return self.query_batch([image], top_k=top_k, options=options)[0]

    def query_batch(self, images: Sequence[ImageSource], top_k: int = 5, *, errors: str = "raise", options=None) -> list:
        """Like :meth:`provenance.Engine.query_batch`, over every shard; ``ref_id`` values are global."""
        from .search.pipeline import run_queries

        if top_k < 1:
            raise BadInputError("top_k must be at least 1")
        for engine in self.engines:
            engine._follow_writers()
        options = options or self.query_options()
        # run_queries keeps the sources the options ask for, as for one index
        sources = [_Source(name, [engine._sources[name] for engine in self.engines]) for name in self.engines[0]._sources]
        store = _Store([engine._store for engine in self.engines])
        return run_queries(store, self.embedder, sources, images, top_k, options, errors)

    def reference(self, value: int):
        shard, local = split_id(value)
        found = self.engines[shard].reference(local)
        return dataclasses.replace(found, id=value) if found is not None else None

    def reference_thumbnail(self, value: int) -> bytes | None:
        shard, local = split_id(value)
        return self.engines[shard].reference_thumbnail(local)


def shard_directories(folder: str | os.PathLike) -> list[Path]:
    """The shard indexes inside ``folder`` (its subfolders holding a manifest, sorted), or []
    when ``folder`` is itself an index or holds none."""
    root = Path(folder)
    if not root.is_dir() or (root / "manifest.json").exists():
        return []
    return sorted(child for child in root.iterdir() if child.is_dir() and (child / "manifest.json").exists())


def merge_shards(shards: Sequence[str | os.PathLike], target: str | os.PathLike) -> int:
    """Copy every reference of ``shards`` into the index ``target`` (created with their embedder and
    regions when absent), without embedding again: vectors, stored keypoints, hashes and thumbnails
    are copied (a new target adopts the first shard's codecs, so that shard's data is copied as it
    is; data coded otherwise is coded again). Returns how many references were added (content
    already there is skipped)."""
    from .engine import Engine
    from .indexing import ReindexRun

    with ShardedIndex(shards) as sharded:
        first = sharded.engines[0]
        spec = first._store.manifest.embedder
        if (Path(target) / "manifest.json").exists():
            engine = Engine.open(target)
        else:
            engine = Engine.create(target, spec["name"], spec.get("options", {}), regions=first.regions)
        with engine:
            if engine.embedder.fingerprint != first.embedder.fingerprint:
                raise IncompatibleIndexError(f"{target} has another embedder than the shards")
            store = engine._store
            for shard in sharded.engines:
                if shard._store.snapshot.codecs is not None:
                    store.register_codecs(shard._store.snapshot.codecs)
            adoptable = next((shard._store.snapshot.codecs for shard in sharded.engines if shard._store.snapshot.codecs), None)
            if adoptable is not None and store.snapshot.codecs is None and not store.snapshot.segments:
                store.adopt_codecs(adoptable)
            with engine._write_lock:
                run = ReindexRun(store, engine.embedder)
                run.consume((item for shard in sharded.engines for item in _stored_references(shard)), 0)
                store.save()
            return run.counts["added"]


def _stored_references(shard) -> Iterable[Any]:
    """Every live reference of ``shard`` as an embedded PreparedReference carrying its stored data."""
    from .features import FEATURES_BLOB, FEATURES_CODEC_BLOB, PDQ_BLOB, THUMB_BLOB
    from .index.vectors import REGION_BITS, region_numbers
    from .ingest import PreparedReference
    from .sources import SourceRecord

    snapshot = shard._store.snapshot
    for segment in snapshot.segments:
        owners = segment.vector_ids >> REGION_BITS
        references = shard._store.metadata.get(segment.refs.tolist())
        for row, ref_id in enumerate(segment.refs.tolist()):
            reference = references.get(ref_id)
            if reference is None or snapshot.is_removed(ref_id):
                continue
            rows = np.flatnonzero(owners == ref_id)
            record = SourceRecord(reference.path, reference.path, reference.subject, reference.source_url,
                                  reference.collection, dict(reference.extra))
            blobs = {FEATURES_BLOB: segment.features(row), FEATURES_CODEC_BLOB: segment.info["codec"].encode(),
                     PDQ_BLOB: segment.pdq_rows()[row].tobytes(), THUMB_BLOB: segment.thumbnail(row)}
            yield PreparedReference(record, reference.sha256, reference.width, reference.height, blobs=blobs,
                                    vectors=segment.decode_vectors(rows),
                                    regions=tuple(int(region) for region in region_numbers(segment.vector_ids[rows])))
