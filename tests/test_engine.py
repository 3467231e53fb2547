import time
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from provenance import Engine
from provenance.index.vectors import vector_ids
from provenance.ingest import Preparer
from provenance.errors import BadInputError, ImageLoadError, IncompatibleIndexError

from .conftest import synthetic_photo


@pytest.fixture()
def engine(tmp_path, effnet, photo_folder):
    with Engine.create(tmp_path / "index", effnet) as built:
        built.reindex(photo_folder, workers=0)
        yield built


def _crop_copy(photo: Image.Image) -> Image.Image:
    width, height = photo.size
    return photo.crop((8, 6, width - 8, height - 6)).resize((width // 2, height // 2))


def test_reindex_then_query_finds_the_copy(engine, photos):
    result = engine.query(_crop_copy(photos[2]))
    assert result.best.path.endswith("photo_2.jpg")
    assert result.verdict == "copy" and result.best.verdict == "copy"
    assert result.best.score > 1.0 and result.best.inliers > 0
    assert result.matches == sorted(result.matches, key=lambda m: -m.score)
    unrelated = engine.query(synthetic_photo(99))
    assert unrelated.best.score < result.best.score and unrelated.verdict != "copy"


def test_copy_reports_box_containing_the_crop_window(engine, photos):
    window = (60, 40, 260, 200)  # of a 320 x 240 reference
    best = engine.query(photos[5].crop(window).resize((150, 120))).best
    assert best.path.endswith("photo_5.jpg") and best.verdict == "copy"
    x0, y0, x1, y1 = best.box
    slack = 8
    assert x0 <= window[0] + slack and y0 <= window[1] + slack and x1 >= window[2] - slack and y1 >= window[3] - slack
    assert 0.3 < best.coverage < 0.6
    assert abs(best.transform.scale - 0.75) < 0.1 and not best.transform.mirrored


def test_mirrored_copy_is_found_and_reported_mirrored(engine, photos):
    from PIL import ImageOps

    best = engine.query(ImageOps.mirror(photos[3].crop((20, 10, 300, 230)))).best
    assert best.path.endswith("photo_3.JPG") and best.verdict == "copy"
    assert best.transform.mirrored


def test_other_photos_never_verify_as_copy(engine):
    for seed in range(20, 26):
        assert engine.query(synthetic_photo(seed)).verdict != "copy"


def test_reindex_is_incremental_and_replaces_changed_files(engine, photo_folder):
    again = engine.reindex(photo_folder, workers=0)
    assert (again.added, again.skipped, again.failed) == (0, 6, 0)
    synthetic_photo(50).save(photo_folder / "photo_0.jpg")
    changed = engine.reindex(photo_folder, workers=0)
    assert (changed.added, changed.replaced, changed.skipped) == (1, 1, 5)
    assert engine.info().references == 6
    assert engine.query(synthetic_photo(50)).best.path.endswith("photo_0.jpg")


def test_bad_images_are_logged_and_do_not_abort(tmp_path, effnet, photo_folder):
    (photo_folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (photo_folder / "empty.png").write_bytes(b"")
    seen = []
    with Engine.create(tmp_path / "idx", effnet) as built:
        summary = built.reindex(photo_folder, workers=0, on_error=seen.append)
        assert (summary.added, summary.failed) == (6, 2)
        assert len(seen) == 2 and any("broken.jpg" in message for message in seen)
        logged = (tmp_path / "idx" / "errors.jsonl").read_text().splitlines()
        assert len(logged) == 2


def test_parallel_workers_give_the_same_index(tmp_path, effnet, photo_folder, monkeypatch):
    import provenance.ingest as ingest

    monkeypatch.setattr(ingest, "POOL_THRESHOLD", 1)
    with Engine.create(tmp_path / "a", effnet) as serial, Engine.create(tmp_path / "b", effnet) as parallel:
        serial.reindex(photo_folder, workers=0)
        parallel.reindex(photo_folder, workers=2)
        probe = synthetic_photo(3)
        expected, got = serial.query(probe).to_dict()["matches"], parallel.query(probe).to_dict()["matches"]
        # the parallel run gives the model fewer threads: float sums may differ in the last bits
        assert [(m["ref_id"], m["verdict"]) for m in got] == [(m["ref_id"], m["verdict"]) for m in expected]
        assert [m["score"] for m in got] == pytest.approx([m["score"] for m in expected], abs=1e-5)


def test_reopened_index_answers_identically(engine, tmp_path, photos):
    probe = _crop_copy(photos[4])
    live = engine.query(probe).matches
    with Engine.open(tmp_path / "index", read_only=True) as reopened:
        assert reopened.query(probe).matches == live


def test_a_second_writer_is_refused_at_once_and_readers_are_not(engine, tmp_path, photos):
    from provenance.errors import IndexLockedError

    with pytest.raises(IndexLockedError, match="another writer"):
        Engine.open(tmp_path / "index")
    with pytest.raises(IndexLockedError):
        Engine.create(tmp_path / "index", engine.embedder, overwrite=True)
    with Engine.open(tmp_path / "index", read_only=True) as reader:
        assert reader.query(photos[2]).verdict == "copy"
    engine.close()
    with Engine.open(tmp_path / "index", engine.embedder) as writer:  # released on close
        assert writer.info().references == 6


def test_open_with_other_embedder_is_refused(engine, tmp_path):
    from provenance.embedders import create_embedder

    with pytest.raises(IncompatibleIndexError, match="fingerprint"):
        Engine.open(tmp_path / "index", create_embedder("effnet-lite0", gem_p=2.0))


def test_remove_makes_reference_unfindable_at_once(engine, photos):
    probe = photos[1]
    assert engine.query(probe).best.path.endswith("photo_1.jpg")
    removed = engine.remove(paths=[engine.query(probe).best.path])
    assert removed == 1
    assert all(not m.path.endswith("photo_1.jpg") for m in engine.query(probe, top_k=10).matches)


def test_add_with_metadata_and_remove_by_subject(engine):
    ref_id = engine.add(synthetic_photo(70), path="portfolio/ann.jpg", subject="Ann", source_url="http://x/ann")
    best = engine.query(synthetic_photo(70)).best
    assert (best.ref_id, best.subject, best.source_url) == (ref_id, "Ann", "http://x/ann")
    assert engine.reference(ref_id).path == "portfolio/ann.jpg"
    assert engine.remove(subjects=["Ann"]) == 1
    assert engine.reference(ref_id) is None


def test_query_batch_equals_single_queries(engine, photos):
    probes = [_crop_copy(photo) for photo in photos[:4]]
    batch = engine.query_batch(probes, top_k=3)
    singles = [engine.query(probe, top_k=3) for probe in probes]
    for one, other in zip(batch, singles):
        assert [(m.ref_id, m.verdict, m.inliers) for m in one.matches] == [(m.ref_id, m.verdict, m.inliers) for m in other.matches]
        assert np.allclose([m.score for m in one.matches], [m.score for m in other.matches], atol=1e-4)


def test_query_batch_returns_errors_in_place_when_asked(engine, photos, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    probes = [_crop_copy(photos[1]), str(broken), _crop_copy(photos[3]), str(tmp_path / "missing.jpg")]
    with pytest.raises(ImageLoadError):
        engine.query_batch(probes)
    outcomes = engine.query_batch(probes, top_k=3, errors="return")
    assert len(outcomes) == 4
    assert isinstance(outcomes[1], ImageLoadError) and outcomes[1].source.endswith("broken.jpg")
    assert isinstance(outcomes[3], ImageLoadError) and "missing.jpg" in outcomes[3].source
    for outcome, probe in ((outcomes[0], probes[0]), (outcomes[2], probes[2])):
        single = engine.query(probe, top_k=3)
        assert [(m.ref_id, m.verdict) for m in outcome.matches] == [(m.ref_id, m.verdict) for m in single.matches]
        assert outcome.seconds > 0
    assert all(isinstance(outcome, ImageLoadError) for outcome in engine.query_batch([str(broken)], errors="return"))
    with pytest.raises(BadInputError):
        engine.query_batch(probes, errors="ignore")


def test_concurrent_queries_are_consistent(engine, photos):
    probes = [_crop_copy(photo) for photo in photos[:6]] * 3
    expected = [engine.query(probe).best.ref_id for probe in probes]
    with ThreadPoolExecutor(max_workers=4) as pool:
        found = list(pool.map(lambda probe: engine.query(probe).best.ref_id, probes))
    assert found == expected


def test_query_errors(engine, tmp_path):
    with pytest.raises(ImageLoadError):
        engine.query(tmp_path / "missing.jpg")
    with pytest.raises(BadInputError):
        engine.query(synthetic_photo(1), top_k=0)


def test_info_reports_counts(engine):
    details = engine.info()
    assert details.references == 6 and details.vectors == 6 * len(engine.regions)
    assert details.embedder["name"] == "effnet-lite0" and details.disk_bytes > 0


class _StuckOnSomeFiles(Preparer):
    """A preparer that hangs on files named stuck*, like a read from a hung network mount."""

    def __call__(self, record):
        if Path(record.file).name.startswith("stuck"):
            time.sleep(3600)
        return super().__call__(record)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_stuck_file_is_skipped_and_the_run_goes_on(tmp_path, effnet, photo_folder, monkeypatch, workers):
    import provenance.ingest as ingest
    from provenance.sources import SourceRecord

    monkeypatch.setattr(ingest, "POOL_THRESHOLD", 1)
    photos = sorted(str(path) for path in photo_folder.rglob("*") if path.suffix.lower() == ".jpg")
    files = photos[:2] + [str(tmp_path / "stuck.jpg")] + photos[2:]
    records = [SourceRecord(file, file) for file in files]
    preparer = _StuckOnSomeFiles(effnet.preprocessing)
    prepared = list(ingest.prepare_all(records, preparer, workers=workers, file_timeout=2.0))
    assert [item.record.file for item in prepared] == files
    failed = [item for item in prepared if item.error is not None]
    assert len(failed) == 1 and "stuck.jpg" in failed[0].error and "nothing after 2 s" in failed[0].error
    assert all(item.arrays for item in prepared if item.error is None)


def test_a_fifo_or_device_in_the_source_is_refused_without_reading(tmp_path, effnet, photo_folder):
    import json
    import os

    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)  # opening a pipe that nobody writes would block forever
    device = tmp_path / "zero.jpg"
    device.symlink_to("/dev/zero")  # would be read without end
    photos = sorted(path for path in photo_folder.rglob("*") if path.suffix.lower() == ".jpg")
    manifest = tmp_path / "refs.jsonl"
    manifest.write_text("".join(json.dumps({"path": str(path)}) + "\n" for path in photos[:2] + [fifo, device] + photos[2:]))
    seen = []
    with Engine.create(tmp_path / "idx", effnet) as built:
        summary = built.reindex(manifest, workers=0, on_error=seen.append, file_timeout=30.0)
        assert (summary.added, summary.failed) == (len(photos), 2)
        assert any("fifo.jpg: not a regular file (a FIFO)" in line for line in seen)
        assert any("zero.jpg: not a regular file (a character device)" in line for line in seen)


def test_create_checks_every_region_against_the_id_packing(tmp_path, effnet):
    from provenance.index.vectors import MAX_REGIONS
    from provenance.regions import WHOLE, SubjectSquare

    too_many = [WHOLE] + [SubjectSquare(0.5 + 0.1 * n) for n in range(MAX_REGIONS)]
    with pytest.raises(BadInputError, match="at most"):
        Engine.create(tmp_path / "a", effnet, regions=too_many)
    with pytest.raises(BadInputError, match="whole image"):
        Engine.create(tmp_path / "b", effnet, regions=[SubjectSquare(1.0), WHOLE])
    with pytest.raises(BadInputError, match="bad region"):
        Engine.create(tmp_path / "c", effnet, regions=[WHOLE, (0.5, 0.5, 0.2, 0.9)])
    with Engine.create(tmp_path / "d", effnet, regions=[WHOLE, SubjectSquare(1.0)]) as engine:
        assert engine.regions == (WHOLE, SubjectSquare(1.0)) and engine.search_depth == 2 * 11


def test_add_and_reindex_prepare_a_reference_identically(tmp_path, effnet):
    folder = tmp_path / "refs"
    folder.mkdir()
    synthetic_photo(11, (1600, 1200)).save(folder / "large.jpg", quality=90)  # decoded at a reduced scale
    synthetic_photo(12, (300, 400)).save(folder / "small.png")
    with Engine.create(tmp_path / "reindexed", effnet) as reindexed, Engine.create(tmp_path / "added", effnet) as added:
        reindexed.reindex(folder, workers=0)
        for path in sorted(folder.iterdir()):
            added.add(path)
        stores = [engine._store for engine in (reindexed, added)]
        rows = [{ref.sha256: ref for ref in store.metadata.get(range(10)).values()} for store in stores]
        assert rows[0].keys() == rows[1].keys() and len(rows[0]) == 2
        contents = [dict(zip(*store.snapshot.vectors())) for store in stores]
        for digest, first in rows[0].items():
            second = rows[1][digest]
            assert (first.width, first.height) == (second.width, second.height)
            assert stores[0].snapshot.reference_data(first.id) == stores[1].snapshot.reference_data(second.id)
            for region in range(len(reindexed.regions)):
                vector_a = contents[0][int(vector_ids(np.array([first.id]), np.array([region]))[0])]
                vector_b = contents[1][int(vector_ids(np.array([second.id]), np.array([region]))[0])]
                np.testing.assert_allclose(vector_a, vector_b, atol=1e-6)


def test_known_hashes_answer_as_the_set_of_digests_they_were_made_of():
    import hashlib
    import pickle

    from provenance.ingest import KnownHashes

    digests = [hashlib.sha256(bytes([n])).hexdigest() for n in range(50)]
    known = KnownHashes.of(digests[:25])
    assert len(known) == 25 and all(digest in known for digest in digests[:25])
    assert not any(digest in known for digest in digests[25:])
    assert digests[3] in pickle.loads(pickle.dumps(known))  # what the decode workers get
    assert digests[0] not in KnownHashes()
