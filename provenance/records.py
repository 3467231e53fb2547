"""What a reference source yields: one record per image to ingest (no dependencies, so every reader can share it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SourceRecord:
    """One reference to ingest: where to read it, what to call it, and its metadata."""

    path: str  # as ingested: manifest value, or folder-relative path joined to the folder as given
    file: str  # where to read the bytes
    subject: str | None = None
    source_url: str | None = None
    collection: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
