"""An index directory: manifest + FAISS file + SQLite metadata, saved atomically.

Commit protocol (a crash at any point leaves the last committed index usable):
1. the FAISS index is written to a new file ``vectors-<generation>.faiss``;
2. one SQLite transaction commits the pending row changes together with the name of
   that file (the commit point);
3. the manifest is replaced atomically (counts, times) and stale FAISS files deleted.
Opening reads the FAISS file named in SQLite, so a save cut short before step 2 is
invisible: the old rows and the old FAISS file are still paired.

An approximate index also has append-only re-ranking rows (``rerank-*.f16`` / ``.ids``);
SQLite records their file stem and committed row count in the same transaction, and
rows past that count are ignored by readers and cut off by the next writer.

One writer at a time: an index opened for writing holds an exclusive ``flock`` on
``write.lock`` until closed, and a second writer is refused at once with
:class:`~provenance.errors.IndexLockedError` (readers take no lock; the kernel drops it
when a killed writer's process ends).

Indexes opened ``read_only`` refuse every change; exact ones are memory-mapped (FAISS
``IO_FLAG_MMAP_IFC``), so that query processes share the page cache and start at once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from ..errors import CorruptIndexError, IndexExistsError, IndexLockedError, ReadOnlyIndexError
from .manifest import MANIFEST_NAME, Manifest, check_embedder, read_manifest, write_manifest
from .metadata import MetadataStore
from .rerank import FILE_SUFFIXES as RERANK_SUFFIXES
from .rerank import RerankRows
from .vectors import VectorIndex

KEYPOINTS_BLOB = "sift"
PDQ_BLOB = "pdq"  # 32 hash bytes + 1 quality byte
THUMB_BLOB = "thumb"  # a small JPEG of the reference as indexed, for evidence pages
PDQ_BLOB_SIZE = 33

METADATA_NAME = "metadata.sqlite"
ERRORS_NAME = "errors.jsonl"
LOCK_NAME = "write.lock"
_FAISS_STATE_KEY = "faiss_file"
_RERANK_STEM_KEY = "rerank_stem"
_RERANK_ROWS_KEY = "rerank_rows"
_IDENTITY_KEY = "identity"
_FAISS_BYTES_KEY = "faiss_bytes"
_RELOAD_ATTEMPTS = 5


class IndexStore:
    """The files of one index directory, opened for reading and writing."""

    def __init__(self, directory: Path, manifest: Manifest, metadata: MetadataStore, vectors: VectorIndex,
                 read_only: bool = False, lock: "WriterLock | None" = None):
        self.directory = directory
        self._writer_lock = lock
        self.read_only = read_only
        self.manifest = manifest
        self.metadata = metadata
        self.vectors = vectors
        self._save_lock = threading.Lock()
        #: objects told of this process's writes and of reloads (candidate sources built
        #: from the stored data): ``added(ref_id, blobs)``, ``removed(ref_ids)``, ``reset()``
        self.listeners: list = []

    # -- verification data ---------------------------------------------------------------
    def put_blobs(self, ref_id: int, blobs: dict[str, bytes]) -> None:
        """Store a reference's verification data (pending until the next save)."""
        self.check_writable()
        for kind, data in blobs.items():
            self.metadata.put_blob(ref_id, kind, data)
        for listener in self.listeners:
            listener.added(ref_id, blobs)

    def load_keypoints(self, ref_id: int):
        """The stored keypoints of a reference, or None."""
        from ..verify.keypoints import Keypoints

        blob = self.metadata.get_blob(ref_id, KEYPOINTS_BLOB)
        if blob is None:
            return None
        try:
            return Keypoints.from_bytes(blob)
        except ValueError as exc:
            raise self.corrupt(f"the keypoints of reference {ref_id} are unreadable ({exc})") from None

    def corrupt(self, what: str) -> CorruptIndexError:
        """The error for stored data that cannot be what this index wrote."""
        return CorruptIndexError(f"index at {self.directory} is damaged: {what}; rebuild it with 'provenance reindex --rebuild'")

    def remove_references(self, ref_ids: list[int]) -> None:
        """Drop references from the vectors and the metadata, and tell the listeners (pending until save)."""
        self.check_writable()
        self.vectors.remove_references(ref_ids)
        self.metadata.delete(ref_ids)
        for listener in self.listeners:
            listener.removed(ref_ids)

    def check_writable(self) -> None:
        """Raise :class:`~provenance.errors.ReadOnlyIndexError` unless opened for writing."""
        if self.read_only:
            raise ReadOnlyIndexError(f"index at {self.directory} was opened read-only; open it for writing to change it")

    @classmethod
    def create(cls, directory: str | os.PathLike, embedder_description: dict[str, Any], overwrite: bool = False,
               regions: list[Any] | None = None) -> "IndexStore":
        """Create an empty index; an existing one is refused unless ``overwrite``."""
        directory = Path(directory)
        if (directory / MANIFEST_NAME).exists() and not overwrite:
            raise IndexExistsError(f"an index already exists at {directory}; use rebuild/overwrite to replace it")
        directory.mkdir(parents=True, exist_ok=True)
        lock = WriterLock.acquire(directory)
        try:
            if (directory / MANIFEST_NAME).exists():
                if not overwrite:
                    raise IndexExistsError(f"an index already exists at {directory}; use rebuild/overwrite to replace it")
                _remove_index_files(directory)
            metadata = MetadataStore(directory / METADATA_NAME)
            vectors = VectorIndex(int(embedder_description["dim"]))
            manifest = Manifest(embedder=embedder_description, vector_index=vectors.describe(), index_id=uuid.uuid4().hex)
            if regions is not None:
                manifest.regions = regions
            store = cls(directory, manifest, metadata, vectors, lock=lock)
            store.save()
        except BaseException:
            lock.release()
            raise
        return store

    @classmethod
    def open(cls, directory: str | os.PathLike, embedder_description: dict[str, Any] | None = None,
             read_only: bool = False) -> "IndexStore":
        """Open an existing index, refusing a mismatched embedder when one is given."""
        directory = Path(directory)
        manifest = read_manifest(directory)
        if embedder_description is not None:
            check_embedder(directory, manifest, embedder_description)
        metadata_path = directory / METADATA_NAME
        if not metadata_path.is_file():
            raise CorruptIndexError(f"index at {directory} has no {METADATA_NAME}")
        lock = None if read_only else WriterLock.acquire(directory)
        metadata = None
        try:
            metadata = MetadataStore(metadata_path)
            manifest, vectors = cls._load_committed(directory, metadata, read_only)
            store = cls(directory, manifest, metadata, vectors, read_only, lock)
            store._check_identity()
            store._check_consistency()
        except BaseException:
            if metadata is not None:
                metadata.close()
            if lock is not None:
                lock.release()
            raise
        return store

    @classmethod
    def _load_committed(cls, directory: Path, metadata: MetadataStore, read_only: bool) -> tuple[Manifest, VectorIndex]:
        """The manifest and the committed vector index, even while a writer saves."""
        for attempt in range(_RELOAD_ATTEMPTS):
            generation = metadata.get_state("generation", "0")
            try:
                manifest = read_manifest(directory)
                return manifest, cls._load_vectors(directory, manifest, metadata, read_only)
            except CorruptIndexError:
                # a writer committed again and deleted the file just named: read the new one
                if attempt + 1 == _RELOAD_ATTEMPTS or metadata.get_state("generation", "0") == generation:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _load_vectors(directory: Path, manifest: Manifest, metadata: MetadataStore, read_only: bool) -> VectorIndex:
        faiss_name = metadata.get_state(_FAISS_STATE_KEY)
        if faiss_name is None:
            raise CorruptIndexError(f"index at {directory} names no vector file")
        faiss_path = directory / faiss_name
        expected = metadata.get_state(_FAISS_BYTES_KEY)
        actual = faiss_path.stat().st_size if faiss_path.is_file() else None
        if actual is None or (expected is not None and int(expected) != actual):
            found = "is missing" if actual is None else f"has {actual} bytes, not the {expected} committed"
            raise CorruptIndexError(f"index at {directory} is damaged: its vector file {faiss_name} {found} "
                                    "(truncated or replaced); rebuild it with 'provenance reindex --rebuild'")
        dim = int(manifest.embedder["dim"])
        stem = metadata.get_state(_RERANK_STEM_KEY)
        rerank = None
        if stem:
            rows = int(metadata.get_state(_RERANK_ROWS_KEY, "0"))
            rerank = RerankRows(directory, stem, dim, rows, writable=not read_only)
        params = {key: value for key, value in manifest.vector_index.items() if key not in ("type", "metric", "dim", "approximate_from_vectors")}
        return VectorIndex.load(directory / faiss_name, dim, rerank=rerank, params=params, read_only=read_only)

    def generation(self) -> int:
        """The committed save generation (readers compare it to notice writers' saves)."""
        return int(self.metadata.get_state("generation", "0"))

    def reload_vectors(self) -> None:
        """Re-read the committed vector index (a read-only process following a writer)."""
        with self._save_lock:
            self.manifest, self.vectors = self._load_committed(self.directory, self.metadata, self.read_only)
        for listener in self.listeners:
            listener.reset()

    def _check_identity(self) -> None:
        # The manifest is a plain JSON file anyone can edit and SQLite files can be copied
        # between indexes, so the metadata keeps its own record of what the manifest must say.
        recorded = self.metadata.get_state(_IDENTITY_KEY)
        if recorded is not None and not self.manifest.index_id:
            # an index from before identities, killed between recording one and writing the manifest
            adopted = json.loads(recorded).get("index_id", "")
            if _identity(dataclasses.replace(self.manifest, index_id=adopted)) == recorded:
                self.manifest.index_id = adopted
        if recorded is None:
            if self.manifest.index_id:
                raise self.corrupt(f"{METADATA_NAME} belongs to no index, but the manifest names index {self.manifest.index_id}")
            return  # an index from before identities; its next save records one
        if recorded != _identity(self.manifest):
            raise self.corrupt(f"{MANIFEST_NAME} does not match {METADATA_NAME} (a hand-edited manifest, or files "
                               "from two different indexes): embedder, regions or index id differ")

    def _check_consistency(self) -> None:
        recorded = self.metadata.get_state("vector_count")
        if recorded is not None and int(recorded) != self.vectors.ntotal:
            raise CorruptIndexError(
                f"index at {self.directory}: vector file holds {self.vectors.ntotal} vectors, metadata expects {recorded}"
            )

    def save(self, force_compact: bool = False, force_retrain: bool = False) -> None:
        """Persist pending changes atomically (see the module docstring).

        The vector index type is re-decided first (exact / approximate, re-training,
        compaction; see :mod:`.vectors`).
        """
        self.check_writable()
        with self._save_lock:
            generation = int(self.metadata.get_state("generation", "0")) + 1
            self.vectors = self.vectors.maintained(self.directory, f"rerank-{generation:06d}", force_compact,
                                                   force_retrain)
            faiss_name = f"vectors-{generation:06d}.faiss"
            temporary = self.directory / f".{faiss_name}.tmp"
            self.vectors.save(temporary)
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
                faiss_bytes = os.fstat(handle.fileno()).st_size
            os.replace(temporary, self.directory / faiss_name)
            rerank = self.vectors.rerank
            self.metadata.set_state(_FAISS_STATE_KEY, faiss_name)
            self.metadata.set_state(_FAISS_BYTES_KEY, str(faiss_bytes))
            self.metadata.set_state(_RERANK_STEM_KEY, rerank.stem if rerank is not None else "")
            self.metadata.set_state(_RERANK_ROWS_KEY, str(rerank.rows if rerank is not None else 0))
            self.metadata.set_state("generation", str(generation))
            self.metadata.set_state("vector_count", str(self.vectors.ntotal))
            if not self.manifest.index_id:
                self.manifest.index_id = uuid.uuid4().hex
            self.metadata.set_state(_IDENTITY_KEY, _identity(self.manifest))
            self.metadata.commit()
            self.manifest.updated_at = time.time()
            self.manifest.reference_count = self.metadata.count()
            self.manifest.vector_count = self.vectors.ntotal
            self.manifest.vector_index = self.vectors.describe()
            write_manifest(self.directory, self.manifest)
            self._delete_stale_files(faiss_name, rerank.stem if rerank is not None else None)

    def _delete_stale_files(self, current: str, rerank_stem: str | None) -> None:
        for path in self.directory.glob("vectors-*.faiss"):
            if path.name != current:
                path.unlink(missing_ok=True)
        for path in self.directory.glob("rerank-*"):
            if path.suffix in RERANK_SUFFIXES and path.stem != rerank_stem:
                path.unlink(missing_ok=True)
        for path in self.directory.glob(f".{MANIFEST_NAME}.tmp-*"):  # a writer killed mid-write left it
            path.unlink(missing_ok=True)

    def write_manifest_now(self) -> None:
        write_manifest(self.directory, self.manifest)

    def append_error(self, line: str) -> None:
        with open(self.directory / ERRORS_NAME, "a", encoding="utf-8") as handle:
            handle.write(line.rstrip("\n") + "\n")

    def files_read_per_query(self) -> list[Path]:
        """Index files that queries read from disk rather than from this process's memory.

        An approximate index's float16 re-ranking rows, or a read-only exact index's
        memory-mapped vectors. Keypoints (SQLite) are read per verified candidate too, but
        at real scale they are far larger than any page cache and are not listed.
        """
        with self._save_lock:
            if self.vectors.rerank is not None:
                return [self.vectors.rerank.vector_path]
            faiss_name = self.metadata.get_state(_FAISS_STATE_KEY)
            return [self.directory / faiss_name] if self.read_only and faiss_name else []

    def disk_usage(self) -> int:
        """Bytes used by the index directory."""
        return sum(path.stat().st_size for path in self.directory.iterdir() if path.is_file())

    def close(self) -> None:
        self.metadata.close()
        if self._writer_lock is not None:
            self._writer_lock.release()
            self._writer_lock = None


class WriterLock:
    """An exclusive, non-blocking ``flock`` on an index directory's ``write.lock``."""

    def __init__(self, descriptor: int):
        self._descriptor: int | None = descriptor

    @classmethod
    def acquire(cls, directory: Path) -> "WriterLock":
        import fcntl

        descriptor = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise IndexLockedError(
                f"index at {directory} is being changed by another writer (reindex, remove, compact or calibrate); "
                "wait for it to finish; queries can run meanwhile"
            ) from None
        return cls(descriptor)

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing drops the flock
            self._descriptor = None


def _identity(manifest: Manifest) -> str:
    """What of the manifest never changes after creation, as recorded in SQLite."""
    return json.dumps({"index_id": manifest.index_id, "embedder": manifest.embedder, "regions": manifest.regions,
                       "format_version": manifest.format_version}, sort_keys=True)


def read_through(path: Path, chunk: int = 8 << 20) -> int:
    """Read ``path`` once, sequentially, so that the OS page cache holds it; returns its size."""
    buffer = bytearray(chunk)
    total = 0
    with open(path, "rb", buffering=0) as handle:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while count := handle.readinto(buffer):
            total += count
    return total


def _remove_index_files(directory: Path) -> None:
    for name in (MANIFEST_NAME, METADATA_NAME, f"{METADATA_NAME}-wal", f"{METADATA_NAME}-shm", ERRORS_NAME):
        (directory / name).unlink(missing_ok=True)
    for pattern in ("vectors-*.faiss", *(f"rerank-*{suffix}" for suffix in RERANK_SUFFIXES)):
        for path in directory.glob(pattern):
            path.unlink(missing_ok=True)


__all__ = ["IndexStore", "METADATA_NAME", "ERRORS_NAME"]
