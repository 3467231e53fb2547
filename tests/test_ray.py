"""The Ray runner on a local cluster (num_cpus=2) gives the index a local reindex gives."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ray")
pytest.importorskip("pyarrow")

from provenance import Engine  # noqa: E402
from provenance.distributed import RayRunner  # noqa: E402
from provenance.distributed.ray_runner import (ShardReader, _record_row, _run_pipeline, _write_shard,  # noqa: E402
                                               done_positions, shard_folder)
from provenance.sources import SourceRecord  # noqa: E402
from provenance.sources import scan_source  # noqa: E402

from .conftest import synthetic_photo  # noqa: E402
from .test_img2dataset import _jpeg, write_shard  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture()
def folder(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for seed in range(7):
        synthetic_photo(seed).save(images / f"photo_{seed}.jpg", quality=90)
    (images / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    return images


def assert_same_index(local_dir, ray_dir) -> None:
    with Engine.open(local_dir, read_only=True) as local, Engine.open(ray_dir, read_only=True) as distributed:
        assert local.info().references == distributed.info().references > 0
        for ref_id in range(local.info().references):
            a, b = local.reference(ref_id), distributed.reference(ref_id)
            assert (a.path, a.sha256, a.width, a.height, a.source_url, a.extra) == (b.path, b.sha256, b.width, b.height,
                                                                                     b.source_url, b.extra)
            assert local._store.snapshot.reference_data(ref_id) == distributed._store.snapshot.reference_data(ref_id)
        ids_a, vectors_a = local._store.snapshot.vectors()
        ids_b, vectors_b = distributed._store.snapshot.vectors()
    assert np.array_equal(ids_a, ids_b)
    # the same model on the same inputs; float sums in another thread count differ in the last bits,
    # which float16 storage may round to neighbouring values (2^-11 apart below 1)
    assert np.abs(vectors_a - vectors_b).max() <= 2 ** -11


def _reindex_both(source, tmp_path, runner):
    with Engine.create(tmp_path / "local") as local:
        expected = local.reindex(source, workers=0)
    with Engine.create(tmp_path / "ray") as distributed:
        got = distributed.reindex(source, runner=runner)
    assert (got.added, got.failed, got.skipped) == (expected.added, expected.failed, expected.skipped)
    assert got.errors == expected.errors
    return got


def test_ray_reindex_of_a_folder_equals_the_local_one(local_ray, folder, tmp_path):
    summary = _reindex_both(folder, tmp_path, RayRunner(None))
    assert summary.failed == 1 and "broken.jpg" in summary.errors[0]
    assert_same_index(tmp_path / "local", tmp_path / "ray")
    assert not (tmp_path / "ray" / "ray-shards").exists()  # merged shards are deleted


def test_ray_reindex_of_a_webdataset_tar_equals_the_local_one(local_ray, tmp_path):
    write_shard(tmp_path / "00000.tar", [(f"{n:09d}", _jpeg(30 + n), {"url": f"https://img.example/{n}.jpg"},
                                          f"caption {n}") for n in range(5)])
    _reindex_both(tmp_path / "00000.tar", tmp_path, RayRunner(None))
    assert_same_index(tmp_path / "local", tmp_path / "ray")


def test_a_rerun_after_a_killed_job_skips_the_shards_already_written(local_ray, folder, tmp_path):
    with Engine.create(tmp_path / "local") as local:
        local.reindex(folder, workers=0)
    with Engine.create(tmp_path / "ray") as distributed:
        records = scan_source(folder)
        shards = shard_folder(distributed.directory, folder, records, distributed._store.manifest.index_id)
        shards.mkdir(parents=True)
        # what a job killed after its first shards leaves behind: some records prepared and embedded
        first = [_record_row(position, record) for position, record in enumerate(records[:4])]
        preparer = distributed._preparer()
        for _ in _run_pipeline(local_ray, first, preparer, dict(distributed._store.manifest.embedder), shards, None, 4, 0, 1):
            pass
        assert done_positions(shards) == {0, 1, 2, 3}
        reported = []
        distributed.reindex(folder, runner=RayRunner(None, progress=lambda done, total: reported.append(done)))
    assert reported[0] > 4 and reported[-1] == len(records)  # counted from the 4 already done
    assert_same_index(tmp_path / "local", tmp_path / "ray")


def test_the_driver_merges_each_reference_once_every_earlier_one_is_in(tmp_path):
    def write(positions):
        rows = {"record": [_record_row(p, SourceRecord(f"p{p}.jpg", f"/x/p{p}.jpg"))["record"] for p in positions],
                "sha256": [""] * len(positions), "width": [0] * len(positions), "height": [0] * len(positions),
                "error": [f"bad {p}" for p in positions], "known": [False] * len(positions),
                "blobs": [b""] * len(positions), "regions": ["[]"] * len(positions)}
        return _write_shard(tmp_path, list(positions), rows, [b""] * len(positions), 4)

    reader = ShardReader(tmp_path)
    later = write([2, 3])  # a later block finished first: it waits
    assert list(reader.ready([later])) == []
    first = write([0, 1])
    assert [item.error for item in reader.ready([first])] == ["bad 0", "bad 1", "bad 2", "bad 3"]
    write([6])
    assert list(reader.ready()) == []
    write([4])
    assert [item.error for item in reader.ready()] == ["bad 4"]
    assert [item.error for item in reader.rest()] == ["bad 6"]  # the job is over: what remains, in order
