"""The engine over several segments: read-only query processes follow a writer, removals are
seen at once, preloading reads what queries scan, reopening answers identically."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image, ImageOps

from provenance import Engine
from provenance.errors import ReadOnlyIndexError
from provenance.index import store as store_module

from .conftest import synthetic_photo


def _edits(photo: Image.Image) -> list[Image.Image]:
    width, height = photo.size
    return [
        photo.crop((20, 15, width - 30, height - 10)).resize((200, 150)),
        ImageOps.mirror(photo),
        ImageOps.expand(photo, border=30, fill="white"),
    ]


@pytest.fixture(scope="module")
def built_directory(tmp_path_factory, effnet):
    directory = tmp_path_factory.mktemp("scale") / "index"
    with Engine.create(directory, effnet) as engine:
        for start in (40, 50, 60):  # three commits: three segments
            for seed in range(start, start + 10):
                engine.add(synthetic_photo(seed), f"photo_{seed}.jpg", save=False)
            engine.save()
    return directory


@pytest.fixture()
def directory(built_directory, tmp_path):
    copy = tmp_path / "index"
    shutil.copytree(built_directory, copy)
    return copy


def _top(engine: Engine, image: Image.Image) -> tuple[int | None, float]:
    result = engine.query(image)
    return (result.best.ref_id, round(result.best.score, 5)) if result.best else (None, 0.0)


def test_read_only_engine_refuses_changes_and_follows_the_writer(directory, effnet):
    query = _edits(synthetic_photo(45))[0]
    with Engine.open(directory, effnet) as writer, Engine.open(directory, effnet, read_only=True) as reader:
        assert writer.info().vector_index["segments"] == 3
        found = reader.query(query).best
        assert found.path == "photo_45.jpg" and found.verdict == "copy"
        assert _top(reader, query) == _top(writer, query)
        for change in (lambda: reader.add(synthetic_photo(1), "new.jpg"), lambda: reader.remove(ref_ids=[found.ref_id]),
                       lambda: reader.set_thresholds({"copy": 1.2}), lambda: reader.compact()):
            with pytest.raises(ReadOnlyIndexError):
                change()
        assert writer.remove(paths=["photo_45.jpg"]) == 1
        assert all(match.path != "photo_45.jpg" for match in reader.query(query).matches)
        added = writer.add(synthetic_photo(80), "photo_80.jpg")
        assert reader.query(_edits(synthetic_photo(80))[0]).best.ref_id == added


def test_preload_reads_the_files_queries_scan(directory, effnet):
    with Engine.open(directory, effnet, read_only=True) as reader:
        scanned = [path for path in (directory / "segments").iterdir() if path.suffix in (".vec", ".pdq")]
        assert reader.preload() == sum(path.stat().st_size for path in scanned) > 0


def test_compaction_merges_and_reopened_index_answers_identically(directory, effnet, monkeypatch):
    queries = [edit for seed in (47, 58) for edit in _edits(synthetic_photo(seed))]
    with Engine.open(directory, effnet) as live:
        live.remove(paths=["photo_50.jpg"])
        before = [_top(live, query) for query in queries]
        old = sorted(path.name for path in (directory / "segments").iterdir())
        live.compact()  # one segment, without the removed reference
        new = sorted(path.name for path in (directory / "segments").iterdir())
        assert len(new) == 3 and not set(new) & set(old)
        assert live.info().vectors == 29 * len(live.regions) and live.info().vector_index["segments"] == 1
        assert [_top(live, query) for query in queries] == before
    with Engine.open(directory, effnet, read_only=True) as reopened:
        assert [_top(reopened, query) for query in queries] == before


def test_saves_merge_segments_of_one_tier(directory, effnet, monkeypatch):
    monkeypatch.setattr(store_module, "MERGE_FACTOR", 4)
    with Engine.open(directory, effnet) as engine:
        for seed in range(90, 100):  # a fourth segment of the three's size
            engine.add(synthetic_photo(seed), f"photo_{seed}.jpg", save=False)
        engine.save()
        assert engine.info().vector_index["segments"] == 1 and engine.info().references == 40
        assert engine.query(_edits(synthetic_photo(52))[0]).best.path == "photo_52.jpg"
