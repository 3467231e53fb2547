"""Preparing references for the index: read, hash, decode and preprocess, in parallel.

Decoding runs in worker processes while the parent embeds, so the model never waits on
JPEG decoding. Workers return small uint8 arrays, never PIL objects, to keep pickling cheap.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np

from .embedders.base import Preprocessing, available_cores
from .errors import ImageLoadError
from .imageio import ImageSource, load_image, read_source_bytes
from .imagelimits import DEFAULT_LIMITS, ImageLimits
from .faces import Face
from .features import FOCUS_SCALE, reference_blobs
from .regions import DEFAULT_REGIONS, RegionSpec, indexed_region_images, reference_face, smallest_fraction, subject_box
from .sources import SourceRecord

#: Below this many references a worker pool costs more to start than it saves.
POOL_THRESHOLD = 64
#: Seconds a reference file may take to read and prepare before it is skipped as stuck;
#: a noisy 48-megapixel PNG took 2.5 s to prepare on the 2-core dev machine.
DEFAULT_FILE_TIMEOUT = 60.0
#: Files queued per worker process. Workers stay busy while the parent embeds a batch
#: only if the queue holds more than a batch (with 4, a full reindex ran at 7.8 img/s,
#: with 64 at 13.1); the bound keeps memory flat when the model is the slower side.
IN_FLIGHT_PER_WORKER = 64
#: ``Preparer.region_arrays`` detects the face itself unless told which it is (None: none).
_DETECT = object()


@dataclass(frozen=True, eq=False)
class KnownHashes:
    """The SHA-256 digests already indexed, as a sorted array of their first 16 bytes: shipped to
    every decode worker, 16 bytes per reference where a set of hex strings takes about 110."""

    prefixes: np.ndarray = field(default_factory=lambda: np.zeros(0, "S16"))

    @classmethod
    def of(cls, digests: Iterable[str]) -> "KnownHashes":
        return cls(np.sort(np.array([bytes.fromhex(digest)[:16] for digest in digests], dtype="S16")))

    def __contains__(self, digest: str) -> bool:
        key = np.array(bytes.fromhex(digest)[:16], dtype="S16")
        position = int(np.searchsorted(self.prefixes, key))
        return position < len(self.prefixes) and self.prefixes[position] == key

    def __len__(self) -> int:
        return len(self.prefixes)


@dataclass(frozen=True)
class Preparer:
    """Picklable recipe run in worker processes for each reference file."""

    preprocessing: Preprocessing
    limits: ImageLimits = DEFAULT_LIMITS
    known_hashes: KnownHashes = field(default_factory=KnownHashes)
    regions: tuple[RegionSpec, ...] = DEFAULT_REGIONS

    @property
    def decode_size(self) -> int:
        """Short side decoded at least: regions are upsampled crops, so enough for the smallest."""
        return int(self.preprocessing.size / smallest_fraction(self.regions))

    def region_arrays(self, image, face: "Face | None | object" = _DETECT) -> dict[int, np.ndarray]:
        """Model input for every indexed region of ``image`` (region 0: the whole image; a centred
        crop that a face square covers is left out, :func:`~provenance.regions.covered_regions`);
        ``face``: the subject's face (None: none) when already detected (:func:`~provenance.regions.reference_face`)."""
        face = reference_face(image, self.regions) if face is _DETECT else face
        crops = indexed_region_images(image, self.regions, face)
        return {number: self.preprocessing.to_array(crop) for number, crop in crops.items()}

    def prepare(self, record: SourceRecord, source: ImageSource, digest: str | None = None) -> "PreparedReference":
        """Decode ``source`` and compute everything indexed for it; raises ImageLoadError.

        The one way a reference is prepared: ``reindex`` (through ``__call__``) and
        ``Engine.add`` both come here, so one file gives the same vectors, keypoints and
        hash whichever indexed it.
        """
        started = time.perf_counter()
        loaded = load_image(source, limits=self.limits, target_size=self.decode_size)
        digest = digest or loaded.sha256 or hashlib.sha256(loaded.image.tobytes()).hexdigest()
        width, height = loaded.original_size
        face = reference_face(loaded.image, self.regions)
        # the stored keypoints favour the square a tight avatar is cut from (features.STORED_KEYPOINTS)
        blobs = reference_blobs(loaded.image, focus=subject_box(loaded.image.size, face, FOCUS_SCALE))
        return PreparedReference(record, digest, width=width, height=height,
                                 arrays=self.region_arrays(loaded.image, face), blobs=blobs,
                                 seconds=time.perf_counter() - started)

    def __call__(self, record: SourceRecord) -> "PreparedReference":
        started = time.perf_counter()
        try:
            data = read_source_bytes(record.file, self.limits.max_bytes)
            digest = hashlib.sha256(data).hexdigest()
            if digest in self.known_hashes:
                return PreparedReference(record, digest, seconds=time.perf_counter() - started, already_known=True)
            prepared = self.prepare(record, data, digest)
            prepared.seconds = time.perf_counter() - started
            return prepared
        except ImageLoadError as exc:
            return PreparedReference(record, None, error=f"{record.file}: {exc.reason}", seconds=time.perf_counter() - started)
        except MemoryError:
            return PreparedReference(record, None, error=f"{record.file}: not enough memory to prepare it")
        except Exception as exc:  # one bad file must never abort a reindex
            return PreparedReference(record, None, error=f"{record.file}: {type(exc).__name__}: {' '.join(str(exc).split())}")


@dataclass
class PreparedReference:
    """A reference ready to embed, or the reason it cannot be."""

    record: SourceRecord
    sha256: str | None
    width: int | None = None
    height: int | None = None
    arrays: dict[int, np.ndarray] = field(default_factory=dict)  # region number -> model input
    blobs: dict[str, bytes] = field(default_factory=dict)  # verification data (keypoints, PDQ)
    #: the embed stage's output: one vector per region, in region order (then ``arrays`` is dropped)
    vectors: np.ndarray | None = None
    regions: tuple[int, ...] = ()
    error: str | None = None
    seconds: float = 0.0
    already_known: bool = False


@dataclass(frozen=True)
class ReindexJob:
    """What a reindex runner gets: the records, the prepare stage, the embedder to build, where the index lives.

    A runner returns the prepared references in input order, embedded or not (the engine
    embeds what is not), failures included; the engine triages and writes them.
    """

    records: list[SourceRecord]
    preparer: Preparer
    embedder_spec: dict  # the manifest's embedder: name, options
    directory: str  # the index directory (a runner may keep its resumable work there)
    source: str
    index_id: str


_worker_preparer: Preparer | None = None


def _init_worker(preparer: Preparer) -> None:
    global _worker_preparer  # per worker process; the parent never reads it
    _worker_preparer = preparer
    try:
        import cv2  # noqa: F401  keep OpenCV from spawning its own thread pool per worker

        cv2.setNumThreads(1)
    except Exception:
        pass


def _prepare_in_worker(record: SourceRecord) -> PreparedReference:
    assert _worker_preparer is not None
    return _worker_preparer(record)


def default_worker_count() -> int:
    """Decode workers: leave one core to the model, never fewer than one worker."""
    return max(1, min(8, available_cores() - 1))


def pool_workers(records: list, workers: int | None) -> int:
    """Worker processes :func:`prepare_all` will start for ``records`` (0: none)."""
    workers = default_worker_count() if workers is None else workers
    return 0 if workers <= 0 or len(records) < POOL_THRESHOLD else workers


@contextmanager
def model_threads_beside(workers: int) -> Iterator[None]:
    """Limit torch to the cores the decode workers leave free, for the duration.

    Torch's threads spin while they wait for work; beside busy workers on few cores that
    spinning steals their CPU (on 2 cores, one model thread beside one worker indexed
    9.5 images/s, two threads 7.8).
    """
    if workers <= 0:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, available_cores() - workers))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def prepare_all(
    records: list[SourceRecord], preparer: Preparer, workers: int | None = None,
    file_timeout: float | None = DEFAULT_FILE_TIMEOUT,
) -> Iterator[PreparedReference]:
    """Yield prepared references in input order, decoding in worker processes when it pays.

    A file that yields nothing within ``file_timeout`` seconds (a stuck network mount, a
    pipe, a decoder that never returns, a worker that died) comes back as a failure and
    the run goes on: in a pool its worker processes are replaced, in this process the
    stuck thread is abandoned. ``None`` waits forever.
    """
    workers = pool_workers(records, workers)
    if workers == 0:
        for record in records:
            yield _prepare_within(preparer, record, file_timeout)
        return
    yield from _prepare_in_pool(records, preparer, workers, file_timeout)


def _prepare_within(preparer: Preparer, record: SourceRecord, timeout: float | None) -> PreparedReference:
    if timeout is None:
        return preparer(record)
    outcome: list[PreparedReference] = []
    # a daemon thread: one stuck in a read never keeps the process from exiting
    thread = threading.Thread(target=lambda: outcome.append(preparer(record)), daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else _timed_out(record, timeout)


def _prepare_in_pool(records: list[SourceRecord], preparer: Preparer, workers: int,
                     timeout: float | None) -> Iterator[PreparedReference]:
    # spawn, not fork: a forked child inherits the parent's OpenCV/OpenMP thread pools
    # in a broken state and deadlocks in SIFT once the parent has used them. Like any
    # spawn-based multiprocessing, a calling script needs an `if __name__ == "__main__"` guard.
    context = multiprocessing.get_context("spawn")
    upcoming = iter(records)
    in_flight: deque = deque()  # (record, AsyncResult), oldest first
    pool = _start_pool(context, workers, preparer)
    try:
        while True:
            while len(in_flight) < IN_FLIGHT_PER_WORKER * workers and (record := next(upcoming, None)) is not None:
                in_flight.append((record, pool.apply_async(_prepare_in_worker, (record,))))
            if not in_flight:
                return
            record, pending = in_flight.popleft()
            try:
                # every older file is done, so this one has been running for at most the wait
                prepared = pending.get(timeout)
            except multiprocessing.TimeoutError:
                prepared = _timed_out(record, timeout)
                pool.terminate()  # the only way to stop a stuck worker
                pool = _start_pool(context, workers, preparer)
                # results that arrived before the restart stay valid; the rest are sent again
                in_flight = deque((waiting, done if done.ready() else pool.apply_async(_prepare_in_worker, (waiting,)))
                                  for waiting, done in in_flight)
            yield prepared
    finally:
        pool.terminate()


def _start_pool(context, workers: int, preparer: Preparer):
    pool = context.Pool(workers, initializer=_init_worker, initargs=(preparer,))
    pool.apply(os.getpid)  # a worker is up: its start-up never counts against a file's time
    return pool


def _timed_out(record: SourceRecord, timeout: float | None) -> PreparedReference:
    return PreparedReference(record, None, error=f"{record.file}: nothing after {timeout:g} s (a slow or stuck file)")


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of at most ``size`` items."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


ProgressCallback = Callable[[int, int], None]
