"""Typed exceptions raised by the library; the CLI maps each family to an exit code."""

from __future__ import annotations


class ProvenanceError(Exception):
    """Base class for every error the library raises on purpose."""

    exit_code = 1


class BadInputError(ProvenanceError):
    """The caller handed over something that cannot be used (a file, a manifest, an option)."""

    exit_code = 3


class ImageLoadError(BadInputError):
    """An image could not be loaded; ``source`` names it and ``reason`` says why."""

    def __init__(self, source: str, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class ManifestError(BadInputError):
    """A reference manifest (CSV/JSONL) or source folder is unusable."""


class IndexStoreError(ProvenanceError):
    """Base class for problems with an index directory."""

    exit_code = 4


class IndexNotFoundError(IndexStoreError):
    """No index exists at the given directory."""


class IndexExistsError(IndexStoreError):
    """An index already exists where a new one was to be created."""


class IncompatibleIndexError(IndexStoreError):
    """The index was built with another embedder or an unknown format version."""


class CorruptIndexError(IndexStoreError):
    """The index files disagree with each other or cannot be read."""


class EmbedderUnavailableError(ProvenanceError):
    """An embedder cannot be built here (missing weights or packages)."""

    exit_code = 5


class IndexLockedError(IndexStoreError):
    """Another writer (process or open engine) holds the index; one writer at a time."""


class ReadOnlyIndexError(IndexStoreError):
    """A change was asked of an index opened read-only (memory-mapped)."""
