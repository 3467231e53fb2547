"""Reading what img2dataset wrote: webdataset tar shards, and parquet/CSV tables of downloaded files.

* ``output_format=webdataset``: ``00000.tar`` holding ``KEY.jpg`` (or png, webp) with
  ``KEY.json`` (``url``, ``caption``, ``key``, ``status``, ...) and ``KEY.txt`` (the caption).
  Each image becomes a record named ``SHARD.tar#MEMBER``; its bytes are read from the tar.
* ``output_format=files`` (or parquet): ``00000.parquet`` (``key``, ``url``, ``caption``,
  ``status``, ...) beside the folder ``00000/`` holding ``KEY.jpg``. A CSV of the same
  layout works too. A ``path`` column, when present, names the file directly.

``key``, ``url`` (as ``source_url``) and the caption are kept as metadata; rows whose
download failed (``status`` other than ``success``) are skipped. URLs are never fetched.
"""

from __future__ import annotations

import functools
import json
import os
import tarfile
from pathlib import Path
from typing import Any, Iterable

from .errors import ImageLoadError, ManifestError
from .records import SourceRecord

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".avif", ".heic")
#: Fields of img2dataset's JSON sidecar or table kept under their own name (besides url and caption).
KEPT_FIELDS = ("key", "width", "height", "original_width", "original_height", "exif", "sha256")
MEMBER_SEPARATOR = "#"


def is_webdataset_folder(folder: Path) -> bool:
    """A folder of tar shards and no loose images at its top: img2dataset's webdataset output."""
    names = os.listdir(folder)
    return any(name.endswith(".tar") for name in names) and not any(name.lower().endswith(IMAGE_SUFFIXES) for name in names)


def scan_webdataset(source: Path):
    """Records for one shard (``.tar``) or every shard of a folder, in shard then member order."""

    shards = sorted(source.glob("*.tar")) if source.is_dir() else [source]
    records = []
    for shard in shards:
        for member, sidecar in _shard_members(shard):
            name = f"{shard}{MEMBER_SEPARATOR}{member}"
            records.append(SourceRecord(path=name, file=name, **_metadata(sidecar)))
    return records


def _shard_members(shard: Path) -> list[tuple[str, dict[str, Any]]]:
    """(image member, its JSON sidecar plus caption) per sample of a tar shard."""
    try:
        with tarfile.open(shard, "r:") as archive:
            members = {member.name: member for member in archive.getmembers() if member.isfile()}
            samples = []
            for name in sorted(members):
                stem, suffix = os.path.splitext(name)
                if suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                sidecar: dict[str, Any] = {}
                if stem + ".json" in members:
                    try:
                        sidecar = json.loads(archive.extractfile(members[stem + ".json"]).read())
                    except (ValueError, UnicodeDecodeError):
                        sidecar = {}
                if stem + ".txt" in members and "caption" not in sidecar:
                    sidecar["caption"] = archive.extractfile(members[stem + ".txt"]).read().decode("utf-8", "replace")
                sidecar.setdefault("key", os.path.basename(stem))
                samples.append((name, sidecar if isinstance(sidecar, dict) else {}))
            return samples
    except (OSError, tarfile.TarError) as exc:
        raise ManifestError(f"{shard}: not a readable tar shard ({exc})") from None


def _metadata(row: dict[str, Any]) -> dict[str, Any]:
    url = row.get("url")
    extra = {name: row[name] for name in KEPT_FIELDS if row.get(name) not in (None, "")}
    if row.get("caption") not in (None, ""):
        extra["caption"] = str(row["caption"])
    return {"source_url": str(url) if url else None, "subject": _text(row.get("subject")),
            "collection": _text(row.get("collection")), "extra": extra}


def _text(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def read_member(name: str, max_bytes: int) -> bytes:
    """The bytes of ``SHARD.tar#MEMBER``, at most ``max_bytes``."""
    shard, _, member = name.rpartition(MEMBER_SEPARATOR)
    try:
        stat = os.stat(shard)
        found = _member_table(shard, stat.st_mtime_ns, stat.st_size).get(member)
        if found is None:
            raise ImageLoadError(name, "no such regular file in the shard")
        offset, size = found
        if size > max_bytes:
            raise ImageLoadError(name, f"{size} bytes, over the {max_bytes}-byte limit")
        with open(shard, "rb") as handle:
            handle.seek(offset)
            data = handle.read(size)
    except (OSError, tarfile.TarError) as exc:
        raise ImageLoadError(name, f"cannot read the shard ({exc})") from None
    if len(data) != size:
        raise ImageLoadError(name, "the shard ends inside this member (truncated)")
    return data


@functools.lru_cache(maxsize=8)
def _member_table(shard: str, mtime_ns: int, size: int) -> dict[str, tuple[int, int]]:
    """member -> (data offset, size) of a shard's regular files, read once per shard version:
    finding a member in a tar means reading every header before it, so a lookup per image
    would read a 10,000-image shard's headers 10,000 times."""
    with tarfile.open(shard, "r:") as archive:
        return {info.name: (info.offset_data, info.size) for info in archive.getmembers() if info.isfile()}


def is_member_name(name: str) -> bool:
    shard, separator, _ = name.rpartition(MEMBER_SEPARATOR)
    return bool(separator) and shard.endswith(".tar")


def scan_table(table: Path, rows: Iterable[dict[str, Any]]):
    """Records for img2dataset's table of downloaded files (``key`` + ``url``), or any table with ``path``."""

    folder = table.with_suffix("")
    records = []
    for number, row in enumerate(rows, start=2):
        if row.get("status") not in (None, "", "success"):
            continue
        if row.get("path"):
            raw = str(row["path"]).strip()
            file = raw if os.path.isabs(raw) else str(table.parent / raw)
        elif row.get("key") not in (None, ""):
            file = _downloaded_file(folder, table.parent, str(row["key"]))
            raw = os.path.relpath(file, table.parent)
        else:
            raise ManifestError(f"{table}:{number}: neither 'path' nor 'key'")
        records.append(SourceRecord(path=raw, file=file, **_metadata(row)))
    return records


def _downloaded_file(shard_folder: Path, parent: Path, key: str) -> str:
    for folder in (shard_folder, parent):
        for suffix in IMAGE_SUFFIXES[:4]:
            candidate = folder / f"{key}{suffix}"
            if candidate.exists():
                return str(candidate)
    return str(shard_folder / f"{key}.jpg")  # missing: reported as "file not found" when read


def read_parquet_rows(path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ManifestError(f"{path}: reading parquet needs pyarrow (pip install -e '.[ray]' or pip install pyarrow)") from None
    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises its own types for bad files
        raise ManifestError(f"{path}: not a readable parquet file ({' '.join(str(exc).split())})") from None
