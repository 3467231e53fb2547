"""Every benchmark script runs once, on a tiny generated bench and index, so that none can rot
(the reliability scripts run in tests/test_reliability.py).

The figures they print are not checked (benchmarks measure, tests do not time); what is
checked is that each runs to the end and prints the lines its documentation promises.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import synthetic_photo, write_bench

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, effnet):
    """A bench in the layout of ../shared/bench (refs, negatives) and its index, with codecs."""
    import provenance.index.codecs as codecs
    from provenance import Engine

    references = [(synthetic_photo(number, size=(250, 250)), f"Person {number % 5}",
                   "public-figures" if number % 4 else "general") for number in range(16)]
    negatives = [(synthetic_photo(100 + number, size=(250, 250)), "general" if number % 2 else "unreferenced_person")
                 for number in range(6)]
    root = write_bench(tmp_path_factory.mktemp("tiny-bench"), references, negatives)
    saved = codecs.MIN_TRAIN_REFERENCES
    codecs.MIN_TRAIN_REFERENCES = 8  # the index codes its data, as one of 200 references would
    try:
        with Engine.create(root / "index", effnet) as engine:
            engine.reindex(root / "refs.csv", workers=0)
            assert engine._store.snapshot.codecs is not None
    finally:
        codecs.MIN_TRAIN_REFERENCES = saved
    return root


def run(script: str, *arguments, cwd: Path, timeout: float = 600) -> str:
    environment = dict(os.environ, PYTHONPATH=str(SCRIPTS.parent))
    done = subprocess.run([sys.executable, str(SCRIPTS / script), *map(str, arguments)], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_bench_query_with_recall_and_memory(tiny, tmp_path):
    out = run("bench_query.py", "--index", tiny / "index", "--bench", tiny, "--n", 6, "--batch", 3, "--recall", "--memory",
              cwd=tmp_path)
    for line in ("single      p50", "batch 3", "cpu ", "recall@10", "start       open", "memory      read-only", "disk "):
        assert line in out, out


def test_pad_index_then_bench_query_on_the_padded_index(tiny, tmp_path):
    out = run("pad_index.py", "--index", tiny / "index", "--out", tmp_path / "padded", "--refs", 400, cwd=tmp_path)
    assert "padded" in out and "400 references" in out, out
    queried = run("bench_query.py", "--index", tmp_path / "padded", "--bench", tiny, "--n", 4, "--batch", 2, "--recall",
                  cwd=tmp_path)
    assert "400 references" in queried and "recall@10" in queried, queried


def test_bench_reindex(tiny, tmp_path):
    out = run("bench_reindex.py", "--refs", tiny / "refs.csv", "--limit", 8, "--stages", 2, cwd=tmp_path)
    assert "img/s" in out, out


def test_bench_shards(tiny, tmp_path):
    out = run("bench_shards.py", "--refs", tiny / "refs.csv", "--out", tmp_path / "shards", "--queries", 4, cwd=tmp_path)
    assert "merge" in out, out


def test_ablation(tiny, tmp_path):
    out = run("ablation.py", "--index", tiny / "index", "--bench", tiny, "--limit", 1, "--families", "blur,crop_tight",
              "--out", tmp_path / "ablation", cwd=tmp_path)
    assert "| configuration |" in out, out


def test_find_same_shoot_ranks_the_pair_that_keeps_its_backdrop(tmp_path):
    """Two people with another photo each: one taken against the reference's backdrop (the
    same shoot), one against another; the same-shoot pair must rank first."""
    import csv

    from PIL import Image, ImageDraw

    def portrait(backdrop, face):
        image = Image.new("RGB", (250, 250), backdrop)
        ImageDraw.Draw(image).ellipse((80, 50, 170, 190), fill=face)
        return image

    root = write_bench(tmp_path / "bench", [(portrait((30, 90, 200), (220, 180, 150)), "Ann Lee", "public-figures"),
                                            (portrait((200, 60, 40), (150, 110, 90)), "Bo Ray", "public-figures")],
                       [])
    with open(root / "negatives.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "kind", "subject"])
        for number, (image, subject) in enumerate([(portrait((35, 95, 205), (200, 160, 140)), "Ann Lee"),
                                                    (portrait((20, 160, 60), (150, 110, 90)), "Bo Ray")]):
            image.save(root / "negatives" / f"o{number}.jpg", quality=92)
            writer.writerow([f"negatives/o{number}.jpg", "same_subject_other_photo", subject])
    out = run("find_same_shoot.py", "--bench", root, "--sheet", tmp_path / "sheet.png", cwd=tmp_path)
    rows = list(csv.DictReader(out.splitlines()))
    assert [row["subject"] for row in rows] == ["Ann Lee", "Bo Ray"]
    assert float(rows[0]["ring_histogram_intersection"]) > 0.9 > float(rows[1]["ring_histogram_intersection"])
    assert (tmp_path / "sheet.png").stat().st_size > 0
