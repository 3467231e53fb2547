"""Reindex on a Ray cluster: the local stages, distributed (``provenance reindex --ray``; extra ``[ray]``).

Ray Data reads the source's records in blocks; CPU tasks run the prepare stage (decode,
regions, keypoints, PDQ, thumbnail: :class:`~provenance.ingest.Preparer`, as locally); an
actor pool runs the embed stage (:func:`~provenance.indexing.embed_stage`, one model per
actor, built inside it, on the CPU) and writes each batch as
a parquet shard under ``DIR/ray-shards/RUN/``. The driver then feeds the shards, in input
order, to the same :class:`~provenance.indexing.ReindexRun` the local path uses (triage,
replacement, the write stage, checkpoints), so the index is the one a local reindex of the
same files builds. A rerun after a killed job skips every record already in a shard; the
shards are deleted once merged. Bad files come back as failures, logged as locally.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..errors import BadInputError
from ..ingest import PreparedReference, Preparer
from ..sources import SourceRecord

SHARDS_FOLDER = "ray-shards"
#: References per prepare task batch and per embed actor call (one shard file each).
PREPARE_BATCH = 16
EMBED_BATCH = 32
#: Cores a prepare task reserves (see _run_pipeline).
PREPARE_CPUS = 0.95


def _ray():
    try:
        import ray
    except ImportError:
        raise BadInputError("--ray needs the ray extra: pip install -e '.[ray]'") from None
    return ray


def pack_blobs(blobs: dict[str, bytes]) -> bytes:
    """Blobs as one byte string: per blob, name length, name, data length, data."""
    parts = []
    for name, data in sorted(blobs.items()):
        encoded = name.encode("utf-8")
        parts += [struct.pack("<H", len(encoded)), encoded, struct.pack("<Q", len(data)), data]
    return b"".join(parts)


def unpack_blobs(packed: bytes) -> dict[str, bytes]:
    blobs, offset = {}, 0
    while offset < len(packed):
        (size,) = struct.unpack_from("<H", packed, offset)
        name = packed[offset + 2 : offset + 2 + size].decode("utf-8")
        offset += 2 + size
        (length,) = struct.unpack_from("<Q", packed, offset)
        blobs[name] = packed[offset + 8 : offset + 8 + length]
        offset += 8 + length
    return blobs


def _record_row(position: int, record: SourceRecord) -> dict[str, Any]:
    return {"position": position, "record": json.dumps([record.path, record.file, record.subject, record.source_url,
                                                        record.collection, record.extra], ensure_ascii=False)}


def _record_of(text: str) -> SourceRecord:
    path, file, subject, source_url, collection, extra = json.loads(text)
    return SourceRecord(path, file, subject, source_url, collection, extra)


def prepare_batch(batch: dict[str, np.ndarray], preparer: Preparer) -> dict[str, list]:
    """The prepare stage over a block of records (a Ray task): model inputs travel as raw uint8."""
    out: dict[str, list] = {name: [] for name in ("position", "record", "sha256", "width", "height", "error",
                                                  "known", "blobs", "inputs", "regions")}
    for position, text in zip(batch["position"], batch["record"]):
        item = preparer(_record_of(str(text)))
        regions = sorted(item.arrays)
        out["position"].append(int(position))
        out["record"].append(str(text))
        out["sha256"].append(item.sha256 or "")
        out["width"].append(item.width or 0)
        out["height"].append(item.height or 0)
        out["error"].append(item.error or "")
        out["known"].append(bool(item.already_known))
        out["blobs"].append(pack_blobs(item.blobs))
        out["inputs"].append(np.stack([item.arrays[r] for r in regions]).tobytes() if regions else b"")
        out["regions"].append(json.dumps(regions))
    return out


class EmbedAndWrite:
    """The embed stage in a Ray actor (its own model), writing each batch as one parquet shard."""

    def __init__(self, embedder_spec: dict[str, Any], shard_dir: str):
        from ..embedders import create_embedder

        self.embedder = create_embedder(embedder_spec["name"], **embedder_spec.get("options", {}))
        self.size = self.embedder.preprocessing.size
        self.shard_dir = shard_dir

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        from ..indexing import embed_stage

        items = []
        for inputs, regions in zip(batch["inputs"], batch["regions"]):
            numbers = json.loads(str(regions))
            arrays = np.frombuffer(bytes(inputs), np.uint8).reshape(len(numbers), self.size, self.size, 3) if numbers else []
            items.append(PreparedReference(None, None, arrays=dict(zip(numbers, arrays))))  # type: ignore[arg-type]
        embed_stage(self.embedder, [item for item in items if item.arrays])
        vectors = [item.vectors.astype(np.float32).tobytes() if item.vectors is not None else b"" for item in items]
        positions = [int(p) for p in batch["position"]]
        name = _write_shard(Path(self.shard_dir), positions, batch, vectors, self.embedder.dim)
        return {"position": positions, "shard": [name] * len(positions)}


def _write_shard(folder: Path, positions: list[int], batch, vectors: list[bytes], dim: int) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "position": pa.array(positions, pa.int64()), "record": [str(v) for v in batch["record"]],
        "sha256": [str(v) for v in batch["sha256"]], "width": [int(v) for v in batch["width"]],
        "height": [int(v) for v in batch["height"]], "error": [str(v) for v in batch["error"]],
        "known": [bool(v) for v in batch["known"]], "blobs": pa.array([bytes(v) for v in batch["blobs"]], pa.binary()),
        "vectors": pa.array(vectors, pa.binary()), "regions": [str(v) for v in batch["regions"]],
        "dim": pa.array([dim] * len(positions), pa.int32()),
    })
    name = f"shard-{min(positions):010d}-{max(positions):010d}-{os.getpid()}.parquet"
    temporary = folder / (name + ".tmp")
    pq.write_table(table, temporary)
    os.replace(temporary, folder / name)  # a shard is whole or absent: a killed job never leaves half of one
    return name


def shard_folder(index_dir: Path, source: str | os.PathLike, records: list[SourceRecord], index_id: str) -> Path:
    """Where one (source, index) run keeps its shards: a rerun of the same job finds them."""
    key = hashlib.sha256(json.dumps([os.path.abspath(source), len(records), records[0].path if records else "",
                                     records[-1].path if records else "", index_id]).encode()).hexdigest()[:16]
    return index_dir / SHARDS_FOLDER / key


def done_positions(folder: Path) -> set[int]:
    import pyarrow.parquet as pq

    done: set[int] = set()
    for shard in folder.glob("shard-*.parquet"):
        done.update(pq.read_table(shard, columns=["position"]).column("position").to_pylist())
    return done


class ShardReader:
    """Hands over the shards' references in input order as soon as every earlier one is in.

    The driver merges while the cluster still prepares and embeds, instead of after it.
    Blocks may finish out of order; rows wait here until the positions before them arrive.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.next_position = 0
        self._read: set[str] = set()
        self._rows: dict[int, dict[str, Any]] = {}

    def ready(self, shards: Iterable[str] | None = None) -> Iterator[PreparedReference]:
        """The references that follow on from those already handed over, after reading the
        named shard files (default: listing the folder, which at millions of shards is slow)."""
        import pyarrow.parquet as pq

        names = sorted(path.name for path in self.folder.glob("shard-*.parquet")) if shards is None else shards
        for name in names:
            if name not in self._read:
                self._read.add(name)
                for row in pq.read_table(self.folder / name).to_pylist():
                    if row["position"] >= self.next_position:
                        self._rows.setdefault(row["position"], row)
        while self.next_position in self._rows:
            yield _prepared_of(self._rows.pop(self.next_position))
            self.next_position += 1

    def rest(self) -> Iterator[PreparedReference]:
        """Everything not handed over yet, in input order (gaps included: the job is over)."""
        yield from self.ready()
        for position in sorted(self._rows):
            yield _prepared_of(self._rows.pop(position))


def _prepared_of(row: dict[str, Any]) -> PreparedReference:
    record = _record_of(row["record"])
    if row["error"]:
        return PreparedReference(record, None, error=row["error"])
    if row["known"]:
        return PreparedReference(record, row["sha256"], already_known=True)
    regions = tuple(json.loads(row["regions"]))
    vectors = np.frombuffer(row["vectors"], np.float32).reshape(len(regions), row["dim"])
    return PreparedReference(record, row["sha256"], width=row["width"] or None, height=row["height"] or None,
                             blobs=unpack_blobs(row["blobs"]), vectors=vectors, regions=regions)


def _connect(ray, address: str | None, num_cpus: int | None) -> None:
    """Join the cluster at ``address`` (or start one here when None); a cluster that is not
    there is the user's to start, so it gets one line saying how, not Ray's traceback."""
    kwargs = {"address": address} if address else {"num_cpus": num_cpus}
    if address and address != "auto":
        _check_reachable(address)
    try:
        ray.init(**kwargs, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except ConnectionError as exc:
        where = "on this machine" if address == "auto" else f"at {address}"
        raise BadInputError(f"no running Ray cluster {where} ({' '.join(str(exc).split())[:160]}); start one with "
                            "'ray start --head' (and 'ray start --address HEAD:6379' on the other machines), "
                            "or use --ray local for a cluster started for this job") from None


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse a HOST:PORT where nothing listens at once (Ray itself retries it for minutes)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return
    except ValueError:
        raise BadInputError(f"--ray {address}: expected 'auto', 'local' or HOST:PORT") from None
    except OSError as exc:
        raise BadInputError(f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one there with "
                            "'ray start --head', or use --ray local for a cluster started for this job") from None


def run_on_ray(records: list[SourceRecord], preparer: Preparer, embedder_spec: dict[str, Any], folder: Path,
               address: str | None, progress: Callable[[int, int], None] | None = None, actors: int | None = None,
               num_cpus: int | None = None) -> Iterator[PreparedReference]:
    """Prepare and embed ``records`` on Ray (skipping those already in ``folder``'s shards), and yield
    every reference from the shards in input order, each as soon as the ones before it are in.
    ``address``: ``auto``, ``host:port``, or None for a local cluster started here (``num_cpus`` cores)."""
    ray = _ray()
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.tmp"):
        stale.unlink()
    done = done_positions(folder)
    pending = [_record_row(position, record) for position, record in enumerate(records) if position not in done]
    reader = ShardReader(folder)
    if pending:
        started_here = not ray.is_initialized()
        if started_here:
            _connect(ray, address, num_cpus)
        yield from reader.ready()  # what an earlier, killed run already wrote
        try:
            for written in _run_pipeline(ray, pending, preparer, embedder_spec, folder, progress, len(records), len(done),
                                         actors):
                yield from reader.ready(written)
        finally:
            if started_here:
                ray.shutdown()
    yield from reader.rest()


def _run_pipeline(ray, pending, preparer, embedder_spec, folder, progress, total, already, actors) -> Iterator[set[str]]:
    """Run the distributed stages; yields the names of the shard files each finished batch wrote."""
    context = ray.data.DataContext.get_current()
    context.execution_options.verbose_progress = False
    context.enable_progress_bars = False
    # the embedders run their model on the CPU: an actor is one model on one core (GPU actors
    # would need a device option in the embedders, not built yet)
    actor_count = actors or 1
    # small blocks: each is one prepare task, so the embed actors start on the first ones
    # while the rest are prepared (one block per record list would prepare everything first)
    dataset = ray.data.from_items(pending, override_num_blocks=max(1, -(-len(pending) // PREPARE_BATCH)))
    # prepare asks for a little less than a core: Ray Data fuses map stages whose resources are
    # equal, and a prepare fused into the embed actors would run serially beside the model
    dataset = dataset.map_batches(prepare_batch, fn_kwargs={"preparer": preparer}, batch_size=PREPARE_BATCH,
                                  batch_format="numpy", num_cpus=PREPARE_CPUS)
    dataset = dataset.map_batches(EmbedAndWrite, fn_constructor_args=(embedder_spec, str(folder)), batch_size=EMBED_BATCH,
                                  batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actor_count), num_cpus=1)
    finished = already
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        finished += len(batch["position"])
        if progress is not None:
            progress(finished, total)
        yield {str(name) for name in batch["shard"]}


class RayRunner:
    """A reindex runner (``Engine.reindex(..., runner=RayRunner("auto"))``) that prepares and embeds on Ray.

    ``address``: ``"auto"`` (the cluster this machine belongs to), ``"host:port"``, or
    ``None`` to start a local cluster of ``num_cpus`` cores for the job. ``actors``: embed
    actors, one core each (default one; a cluster with many cores wants about one per
    four prepare cores: the forward costs about a third of a reference's CPU). ``progress(done, total)`` follows the
    distributed stages; the engine's own progress follows the merge.
    """

    def __init__(self, address: str | None = "auto", *, num_cpus: int | None = None, actors: int | None = None,
                 progress: Callable[[int, int], None] | None = None):
        self.address, self.num_cpus, self.actors, self.progress = address, num_cpus, actors, progress

    def __call__(self, job) -> Iterator[PreparedReference]:
        folder = shard_folder(Path(job.directory), job.source, job.records, job.index_id)
        yield from run_on_ray(job.records, job.preparer, job.embedder_spec, folder, self.address, self.progress,
                              self.actors, self.num_cpus)
        # every shard has been handed over: a kill from here on only costs redoing the uncommitted tail
        remove_shards(folder)


def remove_shards(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    parent = folder.parent
    if parent.name == SHARDS_FOLDER and parent.exists() and not any(parent.iterdir()):
        parent.rmdir()
