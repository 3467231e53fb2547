"""Housekeeping of an index directory: the one writer's lock, page-cache warming, removing an index's files."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import IndexLockedError

LOCK_NAME = "write.lock"


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


def remove_index_files(directory: Path, names: tuple[str, ...], segments: str) -> None:
    """Delete an index's files (``names`` in ``directory``, the ``segments`` folder's files), and an earlier format's."""
    for name in names:
        (directory / name).unlink(missing_ok=True)
    for pattern in ("vectors-*.faiss", "rerank-*"):  # an index of the earlier format
        for path in directory.glob(pattern):
            path.unlink(missing_ok=True)
    folder = directory / segments
    if folder.is_dir():
        for path in folder.iterdir():
            path.unlink(missing_ok=True)
