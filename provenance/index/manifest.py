"""The index manifest: format version, embedder description, counts and times."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CorruptIndexError, IncompatibleIndexError, IndexNotFoundError

FORMAT_VERSION = 2
MANIFEST_NAME = "manifest.json"


@dataclass
class Manifest:
    """What an index directory holds; written atomically beside the data files."""

    embedder: dict[str, Any]
    format_version: int = FORMAT_VERSION
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    reference_count: int = 0
    vector_count: int = 0
    vector_index: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    regions: list[Any] = field(default_factory=lambda: [[0.0, 0.0, 1.0, 1.0]])  # see regions.spec_to_json
    index_id: str = ""  # random at creation; SQLite records it too (a copied metadata file is refused)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in data.items() if key in known})


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Atomically replace the manifest in ``directory``."""
    atomic_write_bytes(directory / MANIFEST_NAME, manifest.to_json().encode())


def read_manifest(directory: Path) -> Manifest:
    """Read and check the manifest of the index at ``directory``."""
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise IndexNotFoundError(f"no index at {directory} (missing {MANIFEST_NAME}); build one with 'provenance reindex'")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CorruptIndexError(f"cannot read {path}: {exc}") from None
    version = data.get("format_version") if isinstance(data, dict) else None
    if version == 1:
        raise IncompatibleIndexError(
            f"index at {directory} was built by an earlier provenance (format 1: one FAISS file, keypoints and "
            f"thumbnails in SQLite); this version reads format {FORMAT_VERSION} (segments, 10 KB per reference). "
            f"Rebuild it from its references: provenance reindex SOURCE --index {directory} --rebuild"
        )
    if version != FORMAT_VERSION:
        raise IncompatibleIndexError(
            f"index at {directory} has format version {version}; this provenance reads version {FORMAT_VERSION}. "
            "Rebuild it with 'provenance reindex --rebuild'"
        )
    if not isinstance(data, dict) or not isinstance(data.get("embedder"), dict):
        raise CorruptIndexError(f"{path} is not an index manifest (no embedder description)")
    try:
        return Manifest.from_dict(data)
    except TypeError as exc:
        raise CorruptIndexError(f"{path} is not an index manifest ({exc})") from None


def check_embedder(directory: Path, manifest: Manifest, embedder_description: dict[str, Any]) -> None:
    """Refuse an embedder whose fingerprint differs from the one the index was built with."""
    stored = manifest.embedder
    if stored.get("fingerprint") != embedder_description.get("fingerprint"):
        raise IncompatibleIndexError(
            f"index at {directory} was built with embedder {stored.get('name')!r} "
            f"(fingerprint {stored.get('fingerprint')}, config {stored.get('config')}), but the requested embedder is "
            f"{embedder_description.get('name')!r} (fingerprint {embedder_description.get('fingerprint')}, "
            f"config {embedder_description.get('config')}). Open it with the same embedder or rebuild it"
        )
