"""Sharded indexes: a query over 4 shards answers as one index holding them all; merging shards."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import ImageOps
from typer.testing import CliRunner

from provenance import Engine
from provenance.cli import app
from provenance.shards import ShardedIndex, merge_shards, split_id

from .conftest import synthetic_photo

runner = CliRunner()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    images = root / "images"
    images.mkdir()
    photos = [synthetic_photo(seed, size=(320, 240)) for seed in range(12)]
    for number, photo in enumerate(photos):
        photo.save(images / f"p{number:02d}.jpg", quality=90)
    with Engine.create(root / "single") as single:
        single.reindex(images, workers=0)
    for shard in range(4):
        with Engine.create(root / "sharded" / f"shard{shard}") as engine:
            assert engine.reindex(images, workers=0, shard=(shard, 4)).added == 3
    queries = [photos[1].crop((30, 20, 290, 220)), ImageOps.mirror(photos[6]), photos[10].resize((160, 120)),
               synthetic_photo(99), photos[3].rotate(4, expand=True)]
    return {"root": root, "images": images, "queries": queries, "shards": [root / "sharded" / f"shard{n}" for n in range(4)]}


def _answers(results):
    return [[(m.path, m.verdict, round(m.score, 6), round(m.similarity, 6), m.box) for m in result.matches] for result in results]


def test_query_over_four_shards_equals_one_index(built):
    with Engine.open(built["root"] / "single", read_only=True) as single, ShardedIndex(built["shards"]) as sharded:
        expected = single.query_batch(built["queries"], top_k=5)
        got = sharded.query_batch(built["queries"], top_k=5)
        assert _answers(got) == _answers(expected)
        assert [r.verdict for r in got][:3] == ["copy", "copy", "copy"]
        best = got[0].best
        shard, local = split_id(best.ref_id)
        assert sharded.reference(best.ref_id).path == best.path and best.path.endswith("p01.jpg")
        assert sharded.reference_thumbnail(best.ref_id)[8:12] == b"WEBP" and shard == 1 and local == 0


def test_merged_shards_answer_as_one_index(built, tmp_path):
    assert merge_shards(built["shards"], tmp_path / "merged") == 12
    assert merge_shards(built["shards"], tmp_path / "merged") == 0  # already there: skipped
    with Engine.open(built["root"] / "single", read_only=True) as single, \
            Engine.open(tmp_path / "merged", read_only=True) as merged:
        assert _answers(merged.query_batch(built["queries"])) == _answers(single.query_batch(built["queries"]))
        by_path = {merged.reference(i).path: i for i in range(12)}
        single_ids, single_vectors = single._store.snapshot.vectors()
        merged_ids, merged_vectors = merged._store.snapshot.vectors()
        for path, ref_id in by_path.items():  # vectors copied, not recomputed
            original = next(i for i in range(12) if single.reference(i).path == path)
            assert np.array_equal(merged_vectors[(merged_ids >> 4) == ref_id], single_vectors[(single_ids >> 4) == original])


def test_cli_reindexes_a_shard_and_queries_shards_together(built, tmp_path):
    made = runner.invoke(app, ["reindex", str(built["images"]), "-i", str(tmp_path / "s"), "--shard", "2/4", "-q", "--workers", "0"])
    assert made.exit_code == 0 and "added 3" in made.output
    bad = runner.invoke(app, ["reindex", str(built["images"]), "-i", str(tmp_path / "t"), "--shard", "4/4"])
    assert bad.exit_code == 3 and "I/N" in bad.output
    query = str(built["images"] / "p05.jpg")
    args = ["query", query, "--json"] + [arg for shard in built["shards"] for arg in ("--index", str(shard))]
    answered = runner.invoke(app, args)
    assert answered.exit_code == 0 and '"verdict": "copy"' in answered.output and "p05.jpg" in answered.output
    # a folder of shards is one index too
    together = runner.invoke(app, ["query", query, "--json", "--index", str(built["root"] / "sharded")])
    assert together.exit_code == 0
    first, second = (json.loads(result.stdout.splitlines()[0]) for result in (answered, together))
    first.pop("seconds"), second.pop("seconds")
    assert first == second


def test_merging_shards_coded_with_different_codecs(tmp_path, monkeypatch):
    import provenance.index.codecs as codecs

    monkeypatch.setattr(codecs, "MIN_TRAIN_REFERENCES", 4)  # each shard trains codecs of its own
    photos = [synthetic_photo(seed) for seed in range(200, 212)]
    shards = []
    for number in range(2):
        folder = tmp_path / f"images{number}"
        folder.mkdir()
        for index, photo in enumerate(photos[number * 6:(number + 1) * 6]):
            photo.save(folder / f"s{number}_{index}.jpg", quality=90)
        with Engine.create(tmp_path / f"shard{number}") as engine:
            engine.reindex(folder, workers=0)
            assert engine._store.snapshot.codecs is not None
        shards.append(tmp_path / f"shard{number}")
    assert merge_shards(shards, tmp_path / "merged") == 12
    with Engine.open(tmp_path / "merged", read_only=True) as merged:
        assert merged._store.snapshot.codecs is not None  # the first shard's, adopted
        for number, photo in enumerate(photos):
            best = merged.query(photo.crop((20, 15, 300, 225))).best
            assert best.verdict == "copy" and best.path.endswith(f"s{number // 6}_{number % 6}.jpg")
