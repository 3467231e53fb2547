"""The engine over an approximate index: same answers as exact search, read-only
(memory-mapped) query processes, removal seen at once, reopening."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from provenance import Engine
from provenance.errors import ReadOnlyIndexError
from provenance.index import vectors as vector_module

from .conftest import synthetic_photo

SWITCH_AT = 60  # vectors; the documented size is tested in test_vector_scale.py


def _edits(photo: Image.Image) -> list[Image.Image]:
    width, height = photo.size
    return [
        photo.crop((20, 15, width - 30, height - 10)).resize((200, 150)),
        ImageOps.mirror(photo),
        ImageOps.expand(photo, border=30, fill="white"),
    ]


@pytest.fixture(scope="module")
def exact_directory(tmp_path_factory, effnet):
    directory = tmp_path_factory.mktemp("scale") / "exact"
    with Engine.create(directory, effnet) as engine:
        for seed in range(40, 70):
            engine.add(synthetic_photo(seed), f"photo_{seed}.jpg", save=False)
        engine.save()
    return directory


@pytest.fixture()
def approximate_directory(exact_directory, tmp_path, effnet, monkeypatch):
    directory = tmp_path / "approximate"
    shutil.copytree(exact_directory, directory)
    monkeypatch.setattr(vector_module, "APPROXIMATE_FROM_VECTORS", SWITCH_AT)
    with Engine.open(directory, effnet) as engine:
        engine.compact()  # any save re-decides the index type
        assert engine.info().vector_index["type"] == "ivf-pq"
    return directory


def _top(engine: Engine, image: Image.Image) -> tuple[int | None, float]:
    result = engine.query(image)
    return (result.best.ref_id, round(result.best.score, 5)) if result.best else (None, 0.0)


def test_approximate_index_gives_the_exact_index_answers(exact_directory, approximate_directory, effnet):
    queries = [edit for seed in (41, 52, 63) for edit in _edits(synthetic_photo(seed))] + [synthetic_photo(999)]
    with Engine.open(exact_directory, effnet) as exact, Engine.open(approximate_directory, effnet) as approximate:
        assert exact.info().vector_index["type"] == "flat-ip"
        exact_top = [_top(exact, query) for query in queries]
        approximate_top = [_top(approximate, query) for query in queries]
        assert [ref_id for ref_id, _ in approximate_top] == [ref_id for ref_id, _ in exact_top]
        # re-ranking uses float16 copies of the vectors: cosines agree to about 1e-4
        assert [score for _, score in approximate_top] == pytest.approx([score for _, score in exact_top], abs=1e-3)


def test_read_only_engine_refuses_changes_and_follows_the_writer(approximate_directory, effnet):
    query = _edits(synthetic_photo(45))[0]
    with Engine.open(approximate_directory, effnet) as writer, \
            Engine.open(approximate_directory, effnet, read_only=True) as reader:
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


def test_preload_reads_the_files_queries_read_from_disk(exact_directory, approximate_directory, effnet):
    query = _edits(synthetic_photo(45))[0]
    with Engine.open(approximate_directory, effnet, read_only=True) as approximate:
        before = _top(approximate, query)
        (rows,) = approximate_directory.glob("rerank-*.f16")
        assert approximate.preload() == rows.stat().st_size > 0
        assert _top(approximate, query) == before
    with Engine.open(exact_directory, effnet, read_only=True) as mapped:
        (vectors,) = exact_directory.glob("vectors-*.faiss")
        assert mapped.preload() == vectors.stat().st_size
    with Engine.open(exact_directory, effnet) as in_memory:
        assert in_memory.preload() == 0  # a writable exact index holds its vectors in RAM


def test_reopened_approximate_index_answers_identically(approximate_directory, effnet):
    queries = [edit for seed in (47, 58) for edit in _edits(synthetic_photo(seed))]
    with Engine.open(approximate_directory, effnet) as live:
        live.remove(paths=["photo_50.jpg"])
        old_rows = sorted(path.name for path in approximate_directory.glob("rerank-*"))
        live.compact()  # rewrites the rows without the removed reference's, drops the old files
        new_rows = sorted(path.name for path in approximate_directory.glob("rerank-*"))
        assert len(new_rows) == 6 and not set(new_rows) & set(old_rows)
        assert live.info().vectors == 29 * len(live.regions)  # 30 photos, one removed
        before = [_top(live, query) for query in queries]
    with Engine.open(approximate_directory, effnet, read_only=True) as reopened:
        assert [_top(reopened, query) for query in queries] == before
    with Engine.open(approximate_directory, effnet) as writer:
        trained_at = writer.info().vector_index["trained_at"]
        writer.compact(retrain=True)
        assert writer.info().vector_index["trained_at"] > trained_at and writer.info().vectors == 29 * len(writer.regions)
        assert [_top(writer, query) for query in queries] == before


BENCH = Path(os.environ.get("PROVENANCE_BENCH", Path(__file__).resolve().parents[2] / "shared" / "bench"))


@pytest.mark.skipif(not (BENCH / "golden" / "augly").is_dir(), reason="needs the development set (../shared/bench)")
def test_approximate_top1_equals_exact_on_golden_queries(tmp_path, effnet, monkeypatch):
    augly, pdq = BENCH / "golden" / "augly", BENCH / "golden" / "pdq"
    originals = [augly / "dfdc_1.jpg", pdq / "bridge-1-original.jpg"]
    others = sorted((BENCH / "refs").glob("*.jpg"))[::40]  # unrelated references as neighbours
    queries = [path for path in sorted(augly.glob("*.jpg")) + sorted(pdq.glob("bridge-*.jpg")) if path not in originals]
    exact_directory, approximate_directory = tmp_path / "exact", tmp_path / "approximate"
    with Engine.create(exact_directory, effnet) as engine:
        for path in originals + others:
            engine.add(path, path.name, save=False)
        engine.save()
    shutil.copytree(exact_directory, approximate_directory)
    monkeypatch.setattr(vector_module, "APPROXIMATE_FROM_VECTORS", 60)
    with Engine.open(approximate_directory, effnet) as engine:
        engine.compact()
    with Engine.open(exact_directory, effnet, read_only=True) as exact, \
            Engine.open(approximate_directory, effnet, read_only=True) as approximate:
        assert approximate.info().vector_index["type"] == "ivf-pq"
        for query in queries:
            assert approximate.query(query).best.ref_id == exact.query(query).best.ref_id, query.name
