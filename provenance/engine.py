"""The library entry point: build, grow and query a provenance index."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from dataclasses import dataclass
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence, overload

from .embedders import DEFAULT_EMBEDDER, Embedder, create_embedder
from .errors import BadInputError, ImageLoadError, IndexStoreError
from .imageio import ImageSource, describe_source
from .imagelimits import DEFAULT_LIMITS, ImageLimits
from .index.metadata import Reference
from .index.manifest import MANIFEST_NAME
from .index.directory import read_through
from .index.store import IndexStore
from .index.vectors import MAX_REGIONS, REGION_BITS
from .indexing import CHECKPOINT_EVERY, EMBED_BATCH, ReindexRun, index_prepared
from .ingest import (DEFAULT_FILE_TIMEOUT, KnownHashes, Preparer, PreparedReference, ProgressCallback, ReindexJob, model_threads_beside,
                     pool_workers, prepare_all)
from .results import IndexInfo, QueryResult, ReindexSummary
from .regions import DEFAULT_REGIONS, WHOLE, RegionSpec, SubjectSquare, spec_from_json, spec_to_json
from .search import local, thumbnails  # noqa: F401  (register the keypoint vote and thumbnail sources)
from .search.pipeline import QueryOptions, run_queries
from .search.sources import SOURCES, CandidateSource
from .sources import SourceRecord, scan_source, shard_records

#: Cosine similarity at or above which an unverified candidate is ``similar`` when the
#: index has no calibrated threshold (docs/benchmarks.md shows the score distributions).
DEFAULT_SIMILAR_THRESHOLD = 0.80
#: FAISS hits fetched per query view and indexed region: the regions of one reference
#: may fill several of a view's hits, so the depth follows their number.
HITS_PER_REGION = 11



@dataclass(frozen=True)
class QuerySettings:
    """An engine's default query settings (see :mod:`provenance.search.pipeline` for the cascade).

    ``mirror``: also embed the views' mirror images (verification tries mirroring in any
    case; on the development set they added no reference to any copy's candidates).
    ``strip_borders``, ``photo_regions``, ``discs``, ``circles``, ``faces``: the query views.
    ``regions``: the indexed regions searched (True: all; False: the whole image; a set of
    region numbers, for ablations). ``pdq``, ``keypoint_votes``, ``thumbnails``: those
    candidate sources (the last correlates small avatars with stored thumbnails).
    ``verify``: geometric verification (and the PDQ near-exact path); ``verify_more``: the
    second round when the first finds no copy (off by default: since the keypoint votes
    and thumbnail correlation, it changed no answer of the dev eval at two seeds, and it
    made a third of a negative's verifications); ``cascade``: the other views only for
    queries the whole query alone proves no copy for, and the expensive views and sources
    only for those the first stage proves no copy for.
    """

    mirror: bool = False
    strip_borders: bool = True
    photo_regions: bool = True
    faces: bool = True
    discs: bool = True
    circles: bool = True
    regions: bool | frozenset[int] = True
    pdq: bool = True
    keypoint_votes: bool = True
    thumbnails: bool = True
    verify: bool = True
    verify_more: bool = False
    cascade: bool = True


def _build_embedder(embedder: str | Embedder, options: dict[str, Any] | None) -> tuple[Embedder, dict[str, Any]]:
    if isinstance(embedder, Embedder):
        return embedder, dict(options or {})
    return create_embedder(embedder, **(options or {})), dict(options or {})


class Engine:
    """An open provenance index with its embedder. Queries are thread-safe.

    Use :meth:`create` for a new index and :meth:`open` for an existing one.
    """

    def __init__(self, store: IndexStore, embedder: Embedder):
        self._store = store
        self.embedder = embedder
        self._write_lock = threading.RLock()
        #: this engine's default query settings (frozen: :meth:`configure` replaces them)
        self.settings = QuerySettings()
        #: what loading one image may cost (bytes, pixels, scans, frames, seconds), on every path
        self.image_limits: ImageLimits = DEFAULT_LIMITS
        #: a read-only engine re-reads the index before a query when a writer has saved since;
        #: a service that wants reloads at moments of its choosing turns this off and calls
        #: :meth:`refresh` itself
        self.follow_writers = True
        self._sources: dict[str, CandidateSource] = {}
        for name in ("vectors", "pdq", "keypoints", "thumbnails"):
            self.add_source(SOURCES[name].from_store(store, depth=self.search_depth))

    def add_source(self, source: CandidateSource) -> None:
        """Add (or replace, by name) a candidate source."""
        self._sources[source.name] = source

    def configure(self, **changes: Any) -> QuerySettings:
        """Replace some of this engine's default query settings (:class:`QuerySettings` fields);
        returns the new settings. For set-up and ablations: a caller whose queries need other
        settings passes :meth:`query_options` per call instead."""
        unknown = set(changes) - set(QuerySettings.__dataclass_fields__)
        if unknown:
            raise BadInputError(f"unknown query setting(s): {', '.join(sorted(unknown))}")
        self.settings = dataclasses.replace(self.settings, **changes)
        return self.settings

    def query_options(self, **overrides: Any) -> QueryOptions:
        """A frozen snapshot of this engine's query settings (every query call takes one).

        ``overrides`` replace fields of the snapshot (``verify=False``, ``limits=...``): a
        service passes the result to :meth:`query_batch` per request instead of changing
        the engine's settings, which every thread shares.
        """
        settings = self.settings
        scales = tuple(spec.scale for spec in self.regions if isinstance(spec, SubjectSquare)) if settings.faces else ()
        chosen = {"pdq": settings.pdq, "keypoints": settings.keypoint_votes, "thumbnails": settings.thumbnails}
        sources = {"vectors"} | {name for name, wanted in chosen.items() if wanted}
        return QueryOptions(
            mirror=settings.mirror, strip_borders=settings.strip_borders, photo_regions=settings.photo_regions,
            face_scales=scales, discs=settings.discs, circles=settings.circles, regions=settings.regions,
            sources=frozenset(sources), verify=settings.verify, verify_more=settings.verify_more, cascade=settings.cascade,
            similar_threshold=self.similar_threshold, copy_threshold=self.copy_threshold, limits=self.image_limits,
        ).replace(**overrides)

    # -- opening -----------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        directory: str | os.PathLike,
        embedder: str | Embedder = DEFAULT_EMBEDDER,
        embedder_options: dict[str, Any] | None = None,
        overwrite: bool = False,
        regions: Sequence[RegionSpec] = DEFAULT_REGIONS,
    ) -> "Engine":
        """Create an empty index at ``directory`` using ``embedder`` (a registry name or instance).

        ``regions`` are indexed per reference: fractional boxes, and
        :class:`~provenance.regions.SubjectSquare` squares around the subject's face. The
        first must be the whole image; at most :data:`~provenance.index.vectors.MAX_REGIONS`.
        """
        try:
            specs = [spec_from_json(spec_to_json(spec)) for spec in regions]
        except (TypeError, ValueError) as exc:
            raise BadInputError(f"bad region: {exc}") from None
        if not specs or specs[0] != WHOLE:
            raise BadInputError("the first region must be the whole image (0, 0, 1, 1)")
        if len(specs) > MAX_REGIONS:
            raise BadInputError(f"at most {MAX_REGIONS} regions per reference (vector ids keep {REGION_BITS} bits for them)")
        model, options = _build_embedder(embedder, embedder_options)
        description = dict(model.describe(), options=options)
        store = IndexStore.create(directory, description, overwrite=overwrite, regions=[spec_to_json(spec) for spec in specs])
        return cls(store, model)

    @classmethod
    def open(cls, directory: str | os.PathLike, embedder: Embedder | None = None, *, read_only: bool = False) -> "Engine":
        """Open the index at ``directory``; its embedder is rebuilt from the manifest unless given.

        ``read_only`` memory-maps the vector index (query processes: fast start, shared page
        cache) and refuses every change with :class:`~provenance.errors.ReadOnlyIndexError`;
        such an engine picks up other processes' saves before its next query.
        Raises :class:`~provenance.errors.IncompatibleIndexError` when ``embedder`` differs
        from the one the index was built with.
        """
        from .index.manifest import check_embedder, read_manifest

        manifest = read_manifest(Path(directory))
        if embedder is None:
            stored = manifest.embedder
            embedder = create_embedder(stored["name"], **stored.get("options", {}))
        check_embedder(Path(directory), manifest, embedder.describe())
        return cls(IndexStore.open(directory, embedder.describe(), read_only=read_only), embedder)

    @classmethod
    def open_or_create(cls, directory: str | os.PathLike, embedder: str | Embedder = DEFAULT_EMBEDDER, **kwargs: Any) -> "Engine":
        """Open the index at ``directory``, creating it when absent."""
        if (Path(directory) / MANIFEST_NAME).exists():
            return cls.open(directory, embedder if isinstance(embedder, Embedder) else None)
        return cls.create(directory, embedder, **kwargs)

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def directory(self) -> Path:
        return self._store.directory

    @property
    def regions(self) -> tuple[RegionSpec, ...]:
        """The regions indexed for every reference (region 0 is the whole image)."""
        return tuple(spec_from_json(spec) for spec in self._store.manifest.regions)

    @property
    def search_depth(self) -> int:
        """Vector hits fetched per query view (:data:`HITS_PER_REGION` per indexed region)."""
        return HITS_PER_REGION * len(self._store.manifest.regions)

    def _preparer(self, known_hashes: Iterable[str] = ()) -> Preparer:
        return Preparer(self.embedder.preprocessing, self.image_limits, KnownHashes.of(known_hashes), self.regions)

    @property
    def copy_threshold(self) -> float:
        """Score a verified candidate needs to be a ``copy`` (1.0 unless calibrated higher)."""
        return float(self._store.manifest.thresholds.get("copy", 1.0))

    def set_thresholds(self, thresholds: dict[str, float], **calibration: Any) -> None:
        """Store calibrated thresholds (``similar``, ``copy``) in the manifest."""
        self._store.check_writable()
        with self._write_lock:
            self._store.manifest.thresholds = {**thresholds, **{f"calibration_{k}": v for k, v in calibration.items()}}
            self._store.manifest.thresholds["calibrated_at"] = time.time()
            self._store.write_manifest_now()

    @property
    def similar_threshold(self) -> float:
        """Similarity at or above which an unverified candidate is ``similar`` (calibrated if stored)."""
        return float(self._store.manifest.thresholds.get("similar", DEFAULT_SIMILAR_THRESHOLD))

    # -- adding --------------------------------------------------------------------------
    def add(self, image: ImageSource, path: str | None = None, *, subject: str | None = None,
            source_url: str | None = None, collection: str | None = None, extra: dict[str, Any] | None = None,
            save: bool = True) -> int:
        """Embed and index one reference image; returns its reference id."""
        self._store.check_writable()
        name = path if path is not None else describe_source(image)
        record = SourceRecord(name, name, subject, source_url, collection, dict(extra or {}))
        prepared = self._preparer().prepare(record, image)
        with self._write_lock:
            (ref_id,) = index_prepared(self._store, self.embedder, [prepared])
            if save:
                self._store.save()
        return ref_id

    def reindex(self, source: str | os.PathLike, *, progress: ProgressCallback | None = None,
                workers: int | None = None, batch_size: int = EMBED_BATCH,
                on_error: Callable[[str], None] | None = None,
                file_timeout: float | None = DEFAULT_FILE_TIMEOUT,
                checkpoint_every: int = CHECKPOINT_EVERY,
                runner: Callable[[ReindexJob], Iterable[PreparedReference]] | None = None,
                shard: tuple[int, int] | None = None) -> ReindexSummary:
        """Index every image of a folder or manifest; already-indexed content is skipped.

        A file whose path is indexed with different content is re-embedded and replaces
        the old entry. Bad images are reported to ``on_error``, recorded in the summary and
        in ``errors.jsonl`` in the index directory; they never stop the run. Progress is committed
        every :data:`~provenance.indexing.CHECKPOINT_EVERY` references, so an interrupted run
        resumes where it stopped (``checkpoint_every`` sets how often).
        A file that gives nothing within ``file_timeout`` seconds (a stuck mount or pipe, a
        hung decoder, a crashed worker) fails like a bad image.
        Large sources are decoded in spawned worker processes (``workers``; 0 decodes in
        this process), so a script that calls this needs an ``if __name__ == "__main__"``
        guard, as with any spawn-based multiprocessing. While workers run, torch is limited
        to the cores they leave free (process-wide; restored afterwards).
        ``runner`` replaces the local prepare stage (and may embed too): it gets a
        :class:`~provenance.ingest.ReindexJob` and returns the references in input order,
        e.g. :class:`provenance.distributed.RayRunner`; triage and the write stage stay here.
        ``shard=(i, n)`` indexes only every n-th record from position i (one shard of a
        collection split over n indexes: :mod:`provenance.shards`).
        """
        started = time.perf_counter()
        self._store.check_writable()
        records = scan_source(source)
        if shard is not None:
            records = shard_records(records, *shard)
        with self._write_lock:
            run = ReindexRun(self._store, self.embedder, progress, on_error, checkpoint_every)
            preparer = self._preparer(run.known)
            if runner is None:
                stream = prepare_all(records, preparer, workers, file_timeout)
                with model_threads_beside(pool_workers(records, workers)):
                    run.consume(stream, len(records), batch_size)
            else:
                job = ReindexJob(records, preparer, dict(self._store.manifest.embedder), str(self.directory),
                                 os.fspath(source), self._store.manifest.index_id)
                run.consume(runner(job), len(records), batch_size)
            self._store.save()
        return run.summary(time.perf_counter() - started)

    # -- removing ------------------------------------------------------------------------
    def remove(self, *, ref_ids: Iterable[int] = (), paths: Iterable[str] = (), subjects: Iterable[str] = ()) -> int:
        """Remove references by id, ingested path or subject; returns how many were removed.

        Removed references are unfindable from the next query on, in this process and in
        any other that has the index open.
        """
        self._store.check_writable()
        metadata = self._store.metadata
        targets = {int(ref_id) for ref_id in ref_ids if metadata.get([int(ref_id)])}
        for path in paths:
            targets.update(metadata.ids_where("path", path))
        for subject in subjects:
            targets.update(metadata.ids_where("subject", subject))
        if not targets:
            return 0
        with self._write_lock:
            self._store.remove_references(sorted(targets))
            self._store.save()
        return len(targets)

    def save(self) -> None:
        """Commit pending changes (``add(..., save=False)``) atomically."""
        with self._write_lock:
            self._store.save()

    def compact(self) -> None:
        """Merge every segment into one now, without removed references (saves merge segments of
        one size tier by themselves: :data:`~provenance.index.store.MERGE_FACTOR`)."""
        self._store.check_writable()
        with self._write_lock:
            self._store.save(force_merge=True)

    # -- querying ------------------------------------------------------------------------
    def _follow_writers(self) -> None:
        if self.follow_writers:
            self.refresh()

    def is_stale(self) -> bool:
        """Whether another process has committed a save this read-only engine has not loaded yet."""
        return self._store.read_only and self._store.generation() != self._store.snapshot.generation

    def refresh(self) -> bool:
        """Load the newest committed state if a writer saved since (read-only engines); True if it did.

        Safe while other threads query: a query reads one snapshot of the index from start to
        end, and the new one replaces it for the queries that start afterwards.
        """
        if not self._store.read_only:
            return False
        return self._store.refresh()

    def query(self, image: ImageSource, top_k: int = 5, *, options: QueryOptions | None = None) -> QueryResult:
        """Which references ``image`` may have been copied from, best first."""
        return self.query_batch([image], top_k=top_k, options=options)[0]

    @overload
    def query_batch(self, images: Sequence[ImageSource], top_k: int = 5, *,
                    errors: Literal["raise"] = "raise", options: QueryOptions | None = None) -> list[QueryResult]: ...

    @overload
    def query_batch(self, images: Sequence[ImageSource], top_k: int = 5, *,
                    errors: Literal["return"], options: QueryOptions | None = None) -> list[QueryResult | ImageLoadError]: ...

    def query_batch(self, images: Sequence[ImageSource], top_k: int = 5, *,
                    errors: str = "raise", options: QueryOptions | None = None) -> list[Any]:
        """Like :meth:`query` for many images, embedding all their views in one batch.

        With ``errors="raise"`` a bad image raises :class:`~provenance.errors.ImageLoadError`
        and nothing is answered. With ``errors="return"`` its place in the returned list
        holds that exception instead of a result, and the other images are answered in the
        same batch (bulk jobs: one corrupt upload costs nothing else). ``options`` (from
        :meth:`query_options`) replace this engine's settings for this call alone; their
        thresholds are used as given.
        """
        if top_k < 1:
            raise BadInputError("top_k must be at least 1")
        if errors not in ("raise", "return"):
            raise BadInputError('errors must be "raise" or "return"')
        try:
            self._follow_writers()
            if options is None:
                options = self.query_options()  # after following a writer: its thresholds too
            return run_queries(self._store, self.embedder, list(self._sources.values()), images, top_k, options, errors)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):  # transient: not damage
                raise IndexStoreError(f"index at {self.directory} is busy ({exc}); try again") from None
            raise self._store.corrupt(f"its metadata cannot be read ({exc})") from None
        except sqlite3.DatabaseError as exc:
            raise self._store.corrupt(f"its metadata cannot be read ({exc})") from None

    def preload(self) -> int:
        """Read the index files that queries fetch from disk into the OS page cache; returns bytes read.

        For a long-running query process: right after a start its first queries otherwise
        read the segments' vectors and hashes from a cold disk. Costs one sequential read of
        those files (:meth:`~provenance.index.store.IndexStore.files_read_per_query`).
        """
        self._follow_writers()
        total = 0
        for path in self._store.files_read_per_query():
            try:
                total += read_through(path)
            except FileNotFoundError:  # a writer's save replaced it meanwhile; the next query follows
                continue
        return total

    # -- inspecting ----------------------------------------------------------------------
    def info(self) -> IndexInfo:
        """Embedder, counts and size on disk of this index."""
        manifest = self._store.manifest
        metadata = self._store.metadata
        return IndexInfo(str(self.directory), manifest.embedder, metadata.count(), self._store.snapshot.vector_count,
                         metadata.count_by("collection"), self._store.disk_usage(), manifest.created_at,
                         manifest.updated_at, self._store.describe_vectors(), dict(manifest.thresholds))

    def pdq_hashes(self) -> Iterator[tuple[Reference, str, int]]:
        """(reference, PDQ hash as ThreatExchange hex, quality 0-100) for every reference."""
        from .verify.pdq import to_hex

        metadata = self._store.metadata
        for ref_id, blob in self._store.snapshot.pdq_hashes():
            reference = metadata.get([ref_id]).get(ref_id)
            if reference is not None:
                yield reference, to_hex(blob[:32]), int(blob[32])

    def reference(self, ref_id: int) -> Reference | None:
        """The stored metadata of one reference."""
        return self._store.metadata.get([ref_id]).get(ref_id)

    def reference_thumbnail(self, ref_id: int) -> bytes | None:
        """The small WebP stored for a reference at indexing (:data:`~provenance.features.THUMB_MIME`), or None."""
        return self._store.snapshot.thumbnail(int(ref_id))

