"""SQLite metadata beside the segments: one row per reference, the live segments, tombstones, state.

The SQLite commit is the index's commit point: the row changes, the list of live segments
that hold their data and the tombstones of removed references are committed in one
transaction (see :mod:`.store`). Bulk data (vectors, hashes, keypoints, thumbnails) lives
in the segments, not here.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..errors import CorruptIndexError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS refs (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL,
    path TEXT NOT NULL,
    subject TEXT,
    source_url TEXT,
    collection TEXT,
    width INTEGER,
    height INTEGER,
    added_at REAL NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS refs_sha256 ON refs(sha256);
CREATE INDEX IF NOT EXISTS refs_path ON refs(path);
CREATE INDEX IF NOT EXISTS refs_subject ON refs(subject);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS segments (name TEXT PRIMARY KEY, info TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS removed (ref_id INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS codecs (version TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS ivf (version TEXT PRIMARY KEY, trained_on INTEGER NOT NULL, data BLOB NOT NULL);
"""

_COLUMNS = ("id", "sha256", "path", "subject", "source_url", "collection", "width", "height", "added_at", "extra")


@dataclass
class Reference:
    """One indexed reference photo."""

    id: int
    sha256: str
    path: str
    subject: str | None = None
    source_url: str | None = None
    collection: str | None = None
    width: int | None = None
    height: int | None = None
    added_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: tuple) -> "Reference":
        values = dict(zip(_COLUMNS, row))
        values["extra"] = json.loads(values["extra"] or "{}")
        return cls(**values)


class MetadataStore:
    """Thread-safe access to the SQLite metadata file; writes stay pending until commit."""

    def __init__(self, path: Path):
        self.path = path
        self._connection = sqlite3.connect(str(path), check_same_thread=False, isolation_level="DEFERRED")
        try:
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=FULL")
            self._connection.executescript(_SCHEMA)
            self._connection.commit()
        except sqlite3.DatabaseError as exc:
            self._connection.close()
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise
            raise CorruptIndexError(f"{path} is not a readable index database ({exc})") from None
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def next_id(self) -> int:
        with self._lock:
            row = self._connection.execute("SELECT COALESCE(MAX(id), -1) + 1 FROM refs").fetchone()
            stored = int(self.get_state("next_id", "0"))
            return max(int(row[0]), stored)

    def insert(self, reference: Reference) -> None:
        self.insert_many([reference])

    def insert_many(self, references: Iterable[Reference]) -> None:
        """Insert reference rows (pending until the next commit)."""
        rows = []
        for reference in references:
            values = [_storable(getattr(reference, column)) for column in _COLUMNS]
            values[-1] = json.dumps(reference.extra, sort_keys=True, default=str)
            rows.append(values)
        if not rows:
            return
        with self._lock:
            self._connection.executemany(f"INSERT INTO refs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})", rows)
            self.set_state("next_id", str(max(int(row[0]) for row in rows) + 1))

    # -- segments and tombstones (committed with the rows) ---------------------------------
    def segment_infos(self) -> list[dict]:
        """The live segments' descriptions, in the order they were written."""
        with self._lock:
            rows = self._connection.execute("SELECT info FROM segments ORDER BY name").fetchall()
        return [json.loads(row[0]) for row in rows]

    def replace_segments(self, added: list[dict], dropped: Iterable[str] = ()) -> None:
        with self._lock:
            self._connection.executemany("DELETE FROM segments WHERE name=?", [(name,) for name in dropped])
            self._connection.executemany("INSERT INTO segments (name, info) VALUES (?, ?)",
                                         [(info["name"], json.dumps(info, sort_keys=True)) for info in added])

    def codecs_data(self) -> tuple[str, bytes] | None:
        """(version, bytes) of the index's codecs, or None before they are trained."""
        with self._lock:
            row = self._connection.execute("SELECT version, data FROM codecs").fetchone()
        return None if row is None else (row[0], bytes(row[1]))

    def set_codecs(self, version: str, data: bytes) -> None:
        with self._lock:
            self._connection.execute("DELETE FROM codecs")
            self._connection.execute("INSERT INTO codecs (version, data) VALUES (?, ?)", (version, data))

    def ivf_data(self) -> tuple[str, int, bytes] | None:
        with self._lock:
            row = self._connection.execute("SELECT version, trained_on, data FROM ivf").fetchone()
        return None if row is None else (row[0], int(row[1]), bytes(row[2]))

    def set_ivf(self, version: str, trained_on: int, data: bytes) -> None:
        with self._lock:
            self._connection.execute("DELETE FROM ivf")
            self._connection.execute("INSERT INTO ivf (version, trained_on, data) VALUES (?, ?, ?)", (version, trained_on, data))

    def removed_ids(self) -> list[int]:
        with self._lock:
            return [row[0] for row in self._connection.execute("SELECT ref_id FROM removed ORDER BY ref_id")]

    def add_tombstones(self, ref_ids: Iterable[int]) -> None:
        with self._lock:
            self._connection.executemany("INSERT OR IGNORE INTO removed (ref_id) VALUES (?)", [(int(i),) for i in ref_ids])

    def drop_tombstones(self, ref_ids: Iterable[int]) -> None:
        with self._lock:
            self._connection.executemany("DELETE FROM removed WHERE ref_id=?", [(int(i),) for i in ref_ids])

    def delete(self, ref_ids: Iterable[int]) -> None:
        ids = [(int(ref_id),) for ref_id in ref_ids]
        with self._lock:
            self._connection.executemany("DELETE FROM refs WHERE id=?", ids)

    def get(self, ref_ids: Iterable[int]) -> dict[int, Reference]:
        ids = [int(ref_id) for ref_id in ref_ids]
        if not ids:
            return {}
        found: dict[int, Reference] = {}
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                rows = self._connection.execute(
                    f"SELECT {', '.join(_COLUMNS)} FROM refs WHERE id IN ({', '.join('?' * len(chunk))})", chunk
                ).fetchall()
                for row in rows:
                    found[row[0]] = Reference.from_row(row)
        return found

    def ids_where(self, column: str, value: str) -> list[int]:
        if column not in ("id", "sha256", "path", "subject", "collection", "source_url"):
            raise ValueError(f"cannot select references by {column!r}")
        with self._lock:
            return [row[0] for row in self._connection.execute(f"SELECT id FROM refs WHERE {column}=?", (value,))]

    def known_hashes(self) -> set[str]:
        with self._lock:
            return {row[0] for row in self._connection.execute("SELECT sha256 FROM refs")}

    def path_hashes(self) -> dict[str, list[tuple[int, str]]]:
        """path -> [(id, sha256)] for every reference."""
        result: dict[str, list[tuple[int, str]]] = {}
        with self._lock:
            for ref_id, path, digest in self._connection.execute("SELECT id, path, sha256 FROM refs"):
                result.setdefault(path, []).append((ref_id, digest))
        return result

    def count(self) -> int:
        with self._lock:
            return int(self._connection.execute("SELECT COUNT(*) FROM refs").fetchone()[0])

    def count_by(self, column: str) -> dict[str, int]:
        if column not in ("collection", "subject"):
            raise ValueError(column)
        with self._lock:
            rows = self._connection.execute(f"SELECT COALESCE({column}, ''), COUNT(*) FROM refs GROUP BY 1").fetchall()
        return {key: int(value) for key, value in rows}

    def get_state(self, key: str, default: str | None = None) -> str | None:
        with self._lock:
            row = self._connection.execute("SELECT value FROM state WHERE key=?", (key,)).fetchone()
        return default if row is None else row[0]

    def set_state(self, key: str, value: str) -> None:
        with self._lock:
            self._connection.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, value))

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Statements inside see one committed state (a read transaction; the writer sees its own)."""
        with self._lock:
            if self._connection.in_transaction:
                yield
                return
            self._connection.execute("BEGIN")
            try:
                yield
            finally:
                self._connection.execute("COMMIT")

    def commit(self) -> None:
        with self._lock:
            self._connection.commit()

    def rollback(self) -> None:
        with self._lock:
            self._connection.rollback()


def _storable(value: Any) -> Any:
    """Text SQLite can store: a file name that is not UTF-8 keeps its bytes, escaped (``\\xff``)."""
    if not isinstance(value, str):
        return value
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        try:
            return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a lone surrogate that is not an escaped byte
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
