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

Indexes opened ``read_only`` refuse every change; exact ones are memory-mapped (FAISS
``IO_FLAG_MMAP_IFC``), so that query processes share the page cache and start at once.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import CorruptIndexError, IndexExistsError, ReadOnlyIndexError
from .manifest import MANIFEST_NAME, Manifest, check_embedder, read_manifest, write_manifest
from .metadata import MetadataStore
from .rerank import FILE_SUFFIXES as RERANK_SUFFIXES
from .rerank import RerankRows
from .vectors import VectorIndex

KEYPOINTS_BLOB = "sift"
PDQ_BLOB = "pdq"  # 32 hash bytes + 1 quality byte

METADATA_NAME = "metadata.sqlite"
ERRORS_NAME = "errors.jsonl"
_FAISS_STATE_KEY = "faiss_file"
_RERANK_STEM_KEY = "rerank_stem"
_RERANK_ROWS_KEY = "rerank_rows"


class IndexStore:
    """The files of one index directory, opened for reading and writing."""

    def __init__(self, directory: Path, manifest: Manifest, metadata: MetadataStore, vectors: VectorIndex,
                 read_only: bool = False):
        self.directory = directory
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
        return None if blob is None else Keypoints.from_bytes(blob)

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
        if (directory / MANIFEST_NAME).exists():
            if not overwrite:
                raise IndexExistsError(f"an index already exists at {directory}; use rebuild/overwrite to replace it")
            _remove_index_files(directory)
        directory.mkdir(parents=True, exist_ok=True)
        metadata = MetadataStore(directory / METADATA_NAME)
        vectors = VectorIndex(int(embedder_description["dim"]))
        manifest = Manifest(embedder=embedder_description, vector_index=vectors.describe())
        if regions is not None:
            manifest.regions = regions
        store = cls(directory, manifest, metadata, vectors)
        store.save()
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
        metadata = MetadataStore(metadata_path)
        store = cls(directory, manifest, metadata, cls._load_vectors(directory, manifest, metadata, read_only), read_only)
        store._check_consistency()
        return store

    @staticmethod
    def _load_vectors(directory: Path, manifest: Manifest, metadata: MetadataStore, read_only: bool) -> VectorIndex:
        faiss_name = metadata.get_state(_FAISS_STATE_KEY)
        if faiss_name is None:
            raise CorruptIndexError(f"index at {directory} names no vector file")
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
            self.manifest = read_manifest(self.directory)
            self.vectors = self._load_vectors(self.directory, self.manifest, self.metadata, self.read_only)
        for listener in self.listeners:
            listener.reset()

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
            os.replace(temporary, self.directory / faiss_name)
            rerank = self.vectors.rerank
            self.metadata.set_state(_FAISS_STATE_KEY, faiss_name)
            self.metadata.set_state(_RERANK_STEM_KEY, rerank.stem if rerank is not None else "")
            self.metadata.set_state(_RERANK_ROWS_KEY, str(rerank.rows if rerank is not None else 0))
            self.metadata.set_state("generation", str(generation))
            self.metadata.set_state("vector_count", str(self.vectors.ntotal))
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
