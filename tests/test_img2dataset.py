"""img2dataset output as a reindex source: webdataset tar shards and parquet/CSV tables of files."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

from provenance import Engine
from provenance.errors import ManifestError
from provenance.sources import scan_source

from .conftest import synthetic_photo


def _jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    synthetic_photo(seed).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_shard(path, samples) -> None:
    """A webdataset shard as img2dataset writes it: KEY.jpg, KEY.json, KEY.txt per sample."""
    with tarfile.open(path, "w") as archive:
        for key, data, sidecar, caption in samples:
            for name, payload in ((f"{key}.jpg", data), (f"{key}.json", json.dumps(sidecar).encode()),
                                  (f"{key}.txt", caption.encode())):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))


@pytest.fixture()
def shards(tmp_path):
    folder = tmp_path / "wds"
    folder.mkdir()
    for shard in range(2):
        samples = [(f"{shard:05d}{n:04d}", _jpeg(10 * shard + n), {"url": f"https://img.example/{shard}/{n}.jpg",
                    "key": f"{shard:05d}{n:04d}", "status": "success", "width": 320, "height": 240},
                    f"caption {shard}-{n}") for n in range(3)]
        write_shard(folder / f"{shard:05d}.tar", samples)
    (folder / "00000_stats.json").write_text("{}")
    return folder


def test_webdataset_records_keep_key_url_and_caption(shards):
    records = scan_source(shards)
    assert len(records) == 6 and records[0].path.endswith("00000.tar#000000000.jpg")
    assert records[1].source_url == "https://img.example/0/1.jpg"
    assert records[1].extra["caption"] == "caption 0-1" and records[1].extra["key"] == "000000001"
    assert scan_source(shards / "00001.tar")[0].extra["key"] == "000010000"


def test_reindex_from_tar_equals_reindex_from_files(shards, tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir()
    for shard in range(2):
        with tarfile.open(shards / f"{shard:05d}.tar") as archive:
            for member in archive.getmembers():
                if member.name.endswith(".jpg"):
                    (loose / member.name).write_bytes(archive.extractfile(member).read())
    with Engine.create(tmp_path / "a") as from_tar, Engine.create(tmp_path / "b") as from_files:
        assert from_tar.reindex(shards, workers=0).added == 6
        assert from_files.reindex(loose, workers=0).added == 6
        for ref_id in range(6):
            assert from_tar.reference(ref_id).sha256 == from_files.reference(ref_id).sha256
        hashes_tar = [digest for _, digest, _ in from_tar.pdq_hashes()]
        assert hashes_tar == [digest for _, digest, _ in from_files.pdq_hashes()]
        first = from_tar.query(loose / "000000002.jpg", top_k=1)
        assert first.verdict == "copy" and first.best.extra["caption"] == "caption 0-2"
        assert first.best.source_url == "https://img.example/0/2.jpg"


def test_a_bad_member_is_logged_never_fatal(tmp_path):
    write_shard(tmp_path / "00000.tar", [("a", _jpeg(1), {"url": "u"}, "x"), ("b", b"not a jpeg", {"url": "v"}, "y")])
    with Engine.create(tmp_path / "i") as engine:
        summary = engine.reindex(tmp_path / "00000.tar", workers=0)
    assert (summary.added, summary.failed) == (1, 1) and "00000.tar#b.jpg" in summary.errors[0]


def test_a_broken_shard_is_one_clear_error(tmp_path):
    (tmp_path / "00000.tar").write_bytes(b"garbage" * 100)
    with pytest.raises(ManifestError, match="not a readable tar shard"):
        scan_source(tmp_path / "00000.tar")


def test_key_url_tables_point_at_downloaded_files(tmp_path):
    (tmp_path / "00000").mkdir()
    (tmp_path / "00000" / "000000000.jpg").write_bytes(_jpeg(3))
    (tmp_path / "00000.csv").write_text("key,url,caption,status\n000000000,https://x.example/a.jpg,hello,success\n"
                                        "000000001,https://x.example/b.jpg,gone,failed_to_download\n")
    (record,) = scan_source(tmp_path / "00000.csv")
    assert record.file == str(tmp_path / "00000" / "000000000.jpg") and record.extra["caption"] == "hello"
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pyarrow.table({"key": ["000000000"], "url": ["https://x.example/a.jpg"], "caption": ["hi"],
                                  "status": ["success"]}), tmp_path / "00000.parquet")
    (from_parquet,) = scan_source(tmp_path / "00000.parquet")
    assert from_parquet.file == record.file and from_parquet.source_url == "https://x.example/a.jpg"
    assert np.array_equal(np.frombuffer(open(from_parquet.file, "rb").read(), np.uint8),
                          np.frombuffer(_jpeg(3), np.uint8))
