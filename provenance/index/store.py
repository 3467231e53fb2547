"""An index directory: manifest, SQLite catalogue and immutable segments, committed atomically.

Commit protocol (a crash at any point leaves the last committed index readable):

1. the references added since the last commit are written as a new segment (files
   fsynced, :mod:`.segments`);
2. one SQLite transaction commits their rows, the new list of live segments and the
   tombstones of removed references (the commit point);
3. the manifest is replaced atomically (counts, times) and files of segments no longer
   live are deleted.

A segment written but never named in SQLite (a crash before step 2) is invisible and
deleted by the next writer. After a commit the writer merges segments of similar size
(:data:`MERGE_FACTOR` of them) into one, dropping removed references, in a commit of its
own; readers keep the segments they opened until they follow the writer.

One writer at a time: an index opened for writing holds an exclusive ``flock`` on
``write.lock`` until closed; a second writer is refused at once with
:class:`~provenance.errors.IndexLockedError`. Readers take no lock and never wait: each
query reads one :class:`~.snapshot.Snapshot`.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorruptIndexError, IndexExistsError, ReadOnlyIndexError
from ..features import FEATURES_BLOB, KEYPOINTS_BLOB, PDQ_BLOB, PDQ_BLOB_SIZE, THUMB_BLOB
from . import codecs as codec_module
from .codecs import RAW, Codecs
from .directory import WriterLock, remove_index_files
from .manifest import MANIFEST_NAME, Manifest, check_embedder, read_manifest, write_manifest
from .metadata import MetadataStore
from .ivf import IvfCodec, companion_name
from .segment_writer import SegmentWriter
from .segments import Segment
from .snapshot import Snapshot
from . import writing

METADATA_NAME = "metadata.sqlite"
ERRORS_NAME = "errors.jsonl"
SEGMENTS_NAME = "segments"
#: Segments of one size tier (the same power of this factor in references) merged into one.
MERGE_FACTOR = 8
#: Tier merges stop short of segments this large (a merge holds its inputs in the writer's
#: memory; at 10 million references this leaves about 40 segments to search).
MAX_MERGED_REFERENCES = 1 << 18
_CODECS_KEY = "codecs"
_IDENTITY_KEY = "identity"
_RELOAD_ATTEMPTS = 5

__all__ = ["IndexStore", "METADATA_NAME", "ERRORS_NAME", "KEYPOINTS_BLOB", "PDQ_BLOB", "PDQ_BLOB_SIZE", "THUMB_BLOB"]


@dataclass
class Pending:
    """A reference staged by the writer, written into a segment at the next save."""

    ref_id: int
    vector_ids: np.ndarray
    vectors: np.ndarray
    blobs: dict[str, bytes]


class IndexStore:
    """The files of one index directory, opened for reading or for writing."""

    def __init__(self, directory: Path, manifest: Manifest, metadata: MetadataStore, read_only: bool = False,
                 lock: "WriterLock | None" = None):
        self.directory = directory
        self.read_only = read_only
        self.manifest = manifest
        self.metadata = metadata
        self._writer_lock = lock
        self._save_lock = threading.Lock()
        self._snapshot_lock = threading.Lock()
        self._pending: list[Pending] = []
        self._pending_removed: set[int] = set()
        self._known_codecs: dict[str, Codecs] = {}
        self._adopted: Codecs | None = None
        self._snapshot: Snapshot | None = None
        self._snapshot = self._load_snapshot({})

    @property
    def segment_directory(self) -> Path:
        return self.directory / SEGMENTS_NAME

    @property
    def snapshot(self) -> Snapshot:
        """The committed state queries read now (a later refresh replaces it; this one stays whole)."""
        return self._snapshot

    @property
    def dim(self) -> int:
        return int(self.manifest.embedder["dim"])

    # -- opening -------------------------------------------------------------------------
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
            if (directory / MANIFEST_NAME).exists() or (directory / METADATA_NAME).exists():
                if not overwrite and (directory / MANIFEST_NAME).exists():
                    raise IndexExistsError(f"an index already exists at {directory}; use rebuild/overwrite to replace it")
                remove_index_files(directory, (MANIFEST_NAME, METADATA_NAME, f"{METADATA_NAME}-wal",
                                               f"{METADATA_NAME}-shm", ERRORS_NAME), SEGMENTS_NAME)
            metadata = MetadataStore(directory / METADATA_NAME)
            manifest = Manifest(embedder=embedder_description, index_id=uuid.uuid4().hex)
            if regions is not None:
                manifest.regions = regions
            store = cls(directory, manifest, metadata, lock=lock)
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
        if not (directory / METADATA_NAME).is_file():
            raise CorruptIndexError(f"index at {directory} has no {METADATA_NAME}")
        lock = None if read_only else WriterLock.acquire(directory)
        metadata = None
        try:
            metadata = MetadataStore(directory / METADATA_NAME)
            store = cls(directory, manifest, metadata, read_only, lock)
            store._check_identity()
            store._check_consistency()
        except BaseException:
            if metadata is not None:
                metadata.close()
            if lock is not None:
                lock.release()
            raise
        return store

    def _load_snapshot(self, reusable: dict[str, Segment]) -> Snapshot:
        """The committed state, even while a writer commits and deletes what it replaced."""
        for attempt in range(_RELOAD_ATTEMPTS):
            generation = self.metadata.get_state("generation", "0")
            try:
                return self._read_snapshot(reusable)
            except CorruptIndexError:
                # a writer committed a merge and deleted a segment just listed: read the new list
                if attempt + 1 == _RELOAD_ATTEMPTS or self.metadata.get_state("generation", "0") == generation:
                    raise
        raise AssertionError("unreachable")

    def _read_snapshot(self, reusable: dict[str, Segment]) -> Snapshot:
        with self.metadata.reading():
            generation = int(self.metadata.get_state("generation", "0"))
            infos = self.metadata.segment_infos()
            removed = np.array(self.metadata.removed_ids(), dtype=np.int64)
            references = self.metadata.count()
            vector_count = int(self.metadata.get_state("vector_count", "0"))
            version = self.metadata.get_state(_CODECS_KEY)
            ivf_stored = self.metadata.ivf_data()
        codecs = self._snapshot.codecs if self._snapshot is not None and self._snapshot.codecs is not None \
            and self._snapshot.codecs.version == version else None
        if codecs is None and version is not None:
            codecs = self._read_codecs(version)
        ivf = self._snapshot.ivf if self._snapshot is not None and self._snapshot.ivf is not None and ivf_stored \
            and self._snapshot.ivf.version == ivf_stored[0] else None
        if ivf is None and ivf_stored is not None:
            ivf = IvfCodec(ivf_stored[2], ivf_stored[1])
            if ivf.version != ivf_stored[0]:
                raise self.corrupt("its IVF codec is not the one recorded")
        segments = []
        for info in infos:
            segment = reusable.get(info["name"])
            if segment is None or segment.info != info:
                segment = Segment(self.segment_directory, info, codecs, self.manifest.index_id, ivf)
            segments.append(segment)
        return Snapshot(generation, tuple(segments), removed, references, codecs, vector_count, ivf)

    def _read_codecs(self, version: str) -> Codecs:
        stored = self.metadata.codecs_data()
        try:
            if stored is None or stored[0] != version:
                raise ValueError(f"codecs {version} are not stored")
            codecs = Codecs.from_bytes(stored[1])
        except ValueError as exc:
            raise self.corrupt(f"its codecs are unreadable ({exc})") from None
        if codecs.version != version:
            raise self.corrupt(f"its codecs are not the {version} its segments were coded with")
        return codecs

    def generation(self) -> int:
        """The committed save generation (readers compare it to notice writers' saves)."""
        return int(self.metadata.get_state("generation", "0"))

    def refresh(self) -> bool:
        """Swap in the newest committed state if a writer committed since; True if it did."""
        with self._snapshot_lock:
            if self.generation() == self._snapshot.generation:
                return False
            old = self._snapshot
            self._snapshot = self._load_snapshot({segment.name: segment for segment in old.segments})
            self.manifest = read_manifest(self.directory)
            return True

    def _check_identity(self) -> None:
        # The manifest is a plain JSON file anyone can edit and SQLite files can be copied
        # between indexes, so the catalogue keeps its own record of what the manifest must say.
        recorded = self.metadata.get_state(_IDENTITY_KEY)
        if recorded is None:
            raise self.corrupt(f"{METADATA_NAME} belongs to no index")
        if recorded != _identity(self.manifest):
            raise self.corrupt(f"{MANIFEST_NAME} does not match {METADATA_NAME} (a hand-edited manifest, or files "
                               "from two different indexes): embedder, regions or index id differ")

    def _check_consistency(self) -> None:
        snapshot = self._snapshot
        held = sum(len(segment) for segment in snapshot.segments)
        hidden = sum(int(np.isin(segment.refs, snapshot.removed).sum()) for segment in snapshot.segments) \
            if len(snapshot.removed) else 0
        if held - hidden != snapshot.references:
            raise self.corrupt(f"its segments hold {held - hidden} live references, its catalogue {snapshot.references}")

    def corrupt(self, what: str) -> CorruptIndexError:
        """The error for stored data that cannot be what this index wrote."""
        return CorruptIndexError(f"index at {self.directory} is damaged: {what}; rebuild it with 'provenance reindex --rebuild'")

    def check_writable(self) -> None:
        """Raise :class:`~provenance.errors.ReadOnlyIndexError` unless opened for writing."""
        if self.read_only:
            raise ReadOnlyIndexError(f"index at {self.directory} was opened read-only; open it for writing to change it")

    # -- writing -------------------------------------------------------------------------
    def stage(self, ref_id: int, vector_ids: np.ndarray, vectors: np.ndarray, blobs: dict[str, bytes]) -> None:
        """Add a reference's data (its metadata row is inserted separately); pending until the next save."""
        self.check_writable()
        if PDQ_BLOB not in blobs or not (KEYPOINTS_BLOB in blobs or FEATURES_BLOB in blobs):
            raise ValueError("a reference needs its keypoints and its PDQ hash")
        self._pending.append(Pending(int(ref_id), np.asarray(vector_ids, np.int64),
                                     np.asarray(vectors, np.float32), dict(blobs)))

    def remove_references(self, ref_ids: list[int]) -> None:
        """Drop references' rows and hide their data (pending until the next save)."""
        self.check_writable()
        targets = {int(ref_id) for ref_id in ref_ids}
        self.metadata.delete(sorted(targets))
        staged = {item.ref_id for item in self._pending}
        self._pending = [item for item in self._pending if item.ref_id not in targets]
        self._pending_removed.update(targets - staged)

    def save(self, force_merge: bool = False) -> None:
        """Commit pending changes atomically (see the module docstring), then merge segments
        the policy calls for (all of them into one with ``force_merge``)."""
        self.check_writable()
        with self._save_lock:
            writing.commit_pending(self)
            writing.merge(self, force=force_merge)
            writing.maintain_ivf(self)

    # called by writing.py ---------------------------------------------------------------
    def take_pending(self) -> tuple[list[Pending], set[int]]:
        pending, removed = self._pending, self._pending_removed
        self._pending, self._pending_removed = [], set()
        return pending, removed

    def segment_writer(self, name: str, codecs: Codecs | None) -> SegmentWriter:
        return SegmentWriter(self.segment_directory, name, self.dim, codecs, self.manifest.index_id)

    def commit(self, added: list[dict], dropped: list[str], tombstones: set[int], cleared: list[int],
               codecs: Codecs | None, vector_delta: int, ivf: IvfCodec | None = None) -> None:
        """The commit point: rows (already pending in SQLite), segment list, tombstones, state."""
        metadata = self.metadata
        generation = int(metadata.get_state("generation", "0")) + 1
        metadata.replace_segments(added, dropped)
        metadata.add_tombstones(tombstones)
        metadata.drop_tombstones(cleared)
        if codecs is not None and codecs is not self._snapshot.codecs:
            metadata.set_codecs(codecs.version, codecs.to_bytes())
            metadata.set_state(_CODECS_KEY, codecs.version)
        if ivf is not None and ivf is not self._snapshot.ivf:
            metadata.set_ivf(ivf.version, ivf.trained_on, ivf.data)
        metadata.set_state("vector_count", str(int(metadata.get_state("vector_count", "0")) + vector_delta))
        metadata.set_state("generation", str(generation))
        metadata.set_state(_IDENTITY_KEY, _identity(self.manifest))
        metadata.commit()
        self.manifest.updated_at = time.time()
        self.manifest.reference_count = metadata.count()
        self.manifest.vector_count = int(metadata.get_state("vector_count", "0"))
        with self._snapshot_lock:
            old = self._snapshot
            self._snapshot = self._load_snapshot({segment.name: segment for segment in old.segments})
        self.manifest.vector_index = self.describe_vectors()
        write_manifest(self.directory, self.manifest)
        self._delete_stale_files()

    def _delete_stale_files(self) -> None:
        if not self.segment_directory.is_dir():
            return
        live = set()
        for segment in self._snapshot.segments:
            live.update(path.name for path in segment.files())
            if segment.info.get("ivf"):
                live.add(companion_name(segment.name, segment.info["ivf"]))
        for path in self.segment_directory.iterdir():
            if path.name not in live:  # a crashed writer's, or replaced: readers keep their maps
                path.unlink(missing_ok=True)
        for path in self.directory.glob(f".{MANIFEST_NAME}.tmp-*"):
            path.unlink(missing_ok=True)

    def needs_codecs(self, count: int) -> bool:
        return self._snapshot.codecs is None and count >= codec_module.MIN_TRAIN_REFERENCES

    def known_codecs(self, version: bytes | str) -> Codecs | None:
        """The codecs named ``version`` (this index's, or another's told with :meth:`register_codecs`); None for raw."""
        name = version.decode() if isinstance(version, bytes) else version
        if name == RAW:
            return None
        if self._snapshot.codecs is not None and self._snapshot.codecs.version == name:
            return self._snapshot.codecs
        if name not in self._known_codecs:
            raise ValueError(f"a record coded with unknown codecs {name}")
        return self._known_codecs[name]

    def register_codecs(self, codecs: Codecs) -> None:
        """Make another index's codecs known, so that records it coded can be copied in (shard merges)."""
        self._known_codecs[codecs.version] = codecs

    def adopt_codecs(self, codecs: Codecs) -> None:
        """Use ``codecs`` (another index's) from the next save on; only for an index still without data."""
        self.check_writable()
        if self._snapshot.codecs is not None or self._snapshot.segments:
            raise ValueError("only an empty index can adopt codecs")
        self.register_codecs(codecs)
        self._adopted = codecs

    def take_adopted(self) -> Codecs | None:
        adopted, self._adopted = self._adopted, None
        return adopted

    def write_manifest_now(self) -> None:
        write_manifest(self.directory, self.manifest)

    def append_error(self, line: str) -> None:
        with open(self.directory / ERRORS_NAME, "a", encoding="utf-8") as handle:
            handle.write(line.rstrip("\n") + "\n")

    # -- reading -------------------------------------------------------------------------
    def load_keypoints(self, ref_id: int):
        """The stored keypoints of a live reference, or None."""
        try:
            return self._snapshot.local_features(int(ref_id))
        except ValueError as exc:
            raise self.corrupt(f"the keypoints of reference {ref_id} are unreadable ({exc})") from None

    def files_read_per_query(self) -> list[Path]:
        """Segment files every query scans whole (vectors and hashes): what a service preloads."""
        return [segment.directory / f"{segment.name}{suffix}" for segment in self._snapshot.segments
                for suffix in (".vec", ".pdq")]

    def disk_usage(self) -> int:
        """Bytes used by the index directory."""
        paths = [path for path in self.directory.iterdir() if path.is_file()]
        if self.segment_directory.is_dir():
            paths += [path for path in self.segment_directory.iterdir() if path.is_file()]
        return sum(path.stat().st_size for path in paths)

    def describe_vectors(self) -> dict:
        """What the manifest's ``vector_index`` says: the search, the codes, the segments."""
        snapshot = self._snapshot
        coding = "sq4" if snapshot.codecs is not None else "fp16"
        described = {"type": "segments", "metric": "inner_product", "dim": self.dim, "codes": coding,
                     "segments": len(snapshot.segments),
                     "approximate_segments": sum(segment.approximate for segment in snapshot.segments)}
        if snapshot.ivf is not None:
            described["ivf"] = snapshot.ivf.describe()
        return described

    def close(self) -> None:
        for segment in self._snapshot.segments:
            segment.close()
        self.metadata.close()
        if self._writer_lock is not None:
            self._writer_lock.release()
            self._writer_lock = None


def tier(references: int) -> int:
    """The merge tier of a segment of ``references`` (segments of one tier merge together)."""
    return int(math.log(max(references, 1), MERGE_FACTOR))


def _identity(manifest: Manifest) -> str:
    """What of the manifest never changes after creation, as recorded in SQLite."""
    return json.dumps({"index_id": manifest.index_id, "embedder": manifest.embedder, "regions": manifest.regions,
                       "format_version": manifest.format_version}, sort_keys=True)
