"""Reference sources: a folder of images, or a CSV/JSONL manifest with a ``path`` column."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from .errors import ManifestError
from .imageio import is_image_path
from .records import SourceRecord

__all__ = ["SourceRecord", "read_jsonl", "scan_folder", "scan_source", "shard_records"]

_KNOWN_FIELDS = ("subject", "source_url", "collection")


def scan_source(source: str | os.PathLike) -> list[SourceRecord]:
    """Records for a folder (recursive), a ``.csv``/``.jsonl`` manifest, or img2dataset output
    (webdataset ``.tar`` shards or a folder of them, ``.parquet`` or a ``key``/``url`` CSV: :mod:`.img2dataset`)."""
    from . import img2dataset

    source_path = Path(source)
    if source_path.is_dir():
        if img2dataset.is_webdataset_folder(source_path):
            return img2dataset.scan_webdataset(source_path)
        return scan_folder(source_path)
    if not source_path.exists():
        raise ManifestError(f"{source}: no such file or folder")
    if not source_path.is_file():  # a FIFO or a device would block or never end
        raise ManifestError(f"{source}: a manifest must be a regular file")
    suffix = source_path.suffix.lower()
    if suffix == ".tar":
        return img2dataset.scan_webdataset(source_path)
    if suffix == ".parquet":
        return img2dataset.scan_table(source_path, img2dataset.read_parquet_rows(source_path))
    if suffix == ".csv":
        rows = _read_csv(source_path)
        if rows and "path" not in rows[0][1]:  # img2dataset's layout: key + url, files beside
            return img2dataset.scan_table(source_path, [row for _, row in rows])
    elif suffix in (".jsonl", ".ndjson"):
        rows = read_jsonl(source_path)
    else:
        raise ManifestError(f"{source}: a source must be a folder, a .csv or .jsonl manifest, "
                            "or img2dataset output (.tar shards, .parquet)")
    return [_record_from_row(row, source_path, number) for number, row in rows]


def scan_folder(folder: Path) -> list[SourceRecord]:
    """Every image file under ``folder`` (common extensions, case-insensitive), sorted."""
    records = []
    for root, directories, files in os.walk(folder):
        directories[:] = sorted(name for name in directories if not name.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or not is_image_path(name):
                continue
            full = os.path.join(root, name)
            records.append(SourceRecord(path=full, file=full))
    return records


def _read_csv(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"path", "key"} & set(reader.fieldnames):
                raise ManifestError(f"{path}: the CSV manifest needs a 'path' column, or img2dataset's 'key' "
                                    f"(found {reader.fieldnames})")
            return [(number, row) for number, row in enumerate(reader, start=2)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ManifestError(f"{path}: cannot read manifest ({exc})") from None


def read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-empty line of a JSON-lines file; ManifestError otherwise."""
    rows = []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise ManifestError(f"{path}:{number}: invalid JSON ({exc})") from None
                if not isinstance(row, dict):
                    raise ManifestError(f"{path}:{number}: each line must be a JSON object")
                rows.append((number, row))
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read manifest ({exc})") from None
    return rows


def _record_from_row(row: dict[str, Any], manifest: Path, number: int) -> SourceRecord:
    raw_path = row.get("path")
    if raw_path is None or str(raw_path).strip() == "":
        raise ManifestError(f"{manifest}:{number}: empty 'path'")
    raw_path = str(raw_path).strip()
    if "://" in raw_path:
        raise ManifestError(f"{manifest}:{number}: {raw_path} is a URL; provenance never fetches URLs, download it first")
    file = raw_path if os.path.isabs(raw_path) else str(manifest.parent / raw_path)
    known = {name: _clean(row.get(name)) for name in _KNOWN_FIELDS}
    extra = {key: value for key, value in row.items() if key not in ("path", *_KNOWN_FIELDS) and key is not None}
    return SourceRecord(path=raw_path, file=file, extra=extra, **known)


def _clean(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def shard_records(records: list[SourceRecord], shard: int, count: int) -> list[SourceRecord]:
    """The records shard ``shard`` of ``count`` indexes: every ``count``-th, from position ``shard``
    (``provenance reindex --shard I/N``; :mod:`provenance.shards` queries and merges the shards)."""
    if count < 1 or not 0 <= shard < count:
        raise ManifestError(f"a shard is I/N with 0 <= I < N (got {shard}/{count})")
    return records[shard::count]
