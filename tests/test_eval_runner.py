"""End-to-end evaluation on a tiny generated benchmark with a stand-in engine."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from provenance.evaluation import EvalConfig, run_evaluation

from .conftest import write_bench
from .test_eval_transforms import portrait

FAMILIES = ["crop_mild", "grayscale", "profile_post", "combo"]


@dataclass
class FakeMatch:
    path: str
    score: float
    verdict: str


@dataclass
class FakeResult:
    verdict: str
    matches: list


class TinyEngine:
    """Cosine similarity of 16x16 grayscale thumbnails; 'match' above 0.9."""

    def __init__(self, files: dict[str, Path]):
        self.paths = list(files)
        self.vectors = np.stack([self._embed(Image.open(files[p])) for p in self.paths])

    @staticmethod
    def _embed(image: Image.Image) -> np.ndarray:
        vector = np.asarray(image.convert("L").resize((16, 16)), dtype=np.float64).ravel()
        vector -= vector.mean()
        return vector / (np.linalg.norm(vector) or 1.0)

    def query(self, image, top_k=5):
        scores = self.vectors @ self._embed(image)
        order = np.argsort(-scores, kind="stable")[:top_k]
        matches = [FakeMatch(self.paths[i], float(scores[i]), "match" if scores[i] >= 0.9 else "no_match")
                   for i in order]
        return FakeResult(matches[0].verdict, matches)

    def query_batch(self, images, top_k=5, errors="raise"):
        return [self.query(image, top_k) for image in images]


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    references = [(portrait(seed=100 + i), f"Person {i}", "public-figures") for i in range(8)]
    kinds = ["general", "unreferenced_person", "same_subject_other_photo"] * 2
    return write_bench(tmp_path_factory.mktemp("bench"), references,
                       [(portrait(seed=200 + i), kind) for i, kind in enumerate(kinds)])


def evaluate(bench: Path, out: Path, seed: int = 0):
    config = EvalConfig(refs=bench / "refs.csv", negatives=bench / "negatives.csv", out_dir=out, seed=seed,
                        families=FAMILIES, per_family=3, baselines=("pdq", "phash"))
    files = {f"refs/r{i}.jpg": bench / f"refs/r{i}.jpg" for i in range(8)}
    stages = []
    summary = run_evaluation(config, progress=lambda stage, done, total: stages.append(stage),
                             engine=TinyEngine(files))
    return summary, stages


def test_run_writes_metrics_and_report(bench, tmp_path):
    summary, stages = evaluate(bench, tmp_path / "out")
    assert set(summary.systems) == {"engine", "pdq", "phash"}
    engine = summary.systems["engine"]
    assert engine["positives"] == 12 and engine["negatives"] == 6
    assert set(engine["per_family"]) == set(FAMILIES)
    assert set(engine["negatives_fpr"]) == {"general", "unreferenced_person", "same_subject_other_photo"}
    assert engine["verdict"] is not None and summary.systems["pdq"]["verdict"] is None
    assert 0.0 <= engine["micro_ap"] <= 1.0
    assert engine["timing"]["median_ms"] is not None
    assert {"queries", "hash refs (pdq)", "hash refs (phash)", "report"} <= set(stages)

    out = tmp_path / "out"
    payload = json.loads((out / "metrics.json").read_text())
    assert payload["run"]["positive_queries"] == 12
    markdown = (out / "metrics.md").read_text()
    assert "| metric | engine | pdq | phash |" in markdown and "µAP" in markdown
    page = (out / "report.html").read_text()
    thumbs = [part.split('"')[0] for part in page.split('src="')[1:]]
    assert thumbs and all((out / src).is_file() for src in thumbs)
    records = [json.loads(line) for line in (out / "queries.jsonl").read_text().splitlines()]
    assert len(records) == 18
    assert all(r["params"] for r in records if r["positive"])


def test_same_seed_same_queries_and_numbers(bench, tmp_path):
    first, _ = evaluate(bench, tmp_path / "a")
    second, _ = evaluate(bench, tmp_path / "b")
    assert (tmp_path / "a/queries.jsonl").read_bytes() == (tmp_path / "b/queries.jsonl").read_bytes()
    strip = lambda systems: {n: {k: v for k, v in m.items() if k != "timing"} for n, m in systems.items()}  # noqa: E731
    assert strip(first.systems) == strip(second.systems)
    third, _ = evaluate(bench, tmp_path / "c", seed=1)
    assert (tmp_path / "c/queries.jsonl").read_bytes() != (tmp_path / "a/queries.jsonl").read_bytes()


def test_cli_command_has_the_documented_options():
    import typer
    from typer.testing import CliRunner

    from provenance.cli_eval import eval_command

    app = typer.Typer()
    app.command("eval")(eval_command)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["eval", "--help"])
    assert result.exit_code == 0
    for option in ("--refs", "--negatives", "--out", "--seed", "--families", "--limit", "--index", "--baselines",
                   "--negative-family"):
        assert option in result.output


def test_cli_reports_bad_family_as_an_error(bench, tmp_path):
    import typer
    from typer.testing import CliRunner

    from provenance.cli_eval import eval_command

    app = typer.Typer()
    app.command("eval")(eval_command)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["eval", "--refs", str(bench / "refs.csv"), "--out", str(tmp_path / "o"),
                                      "--families", "nope"])
    assert result.exit_code == 3
    assert "unknown transform family" in result.output


class FakeEngineClass:
    """Stands in for provenance.Engine: records how the runner opens and fills it."""

    calls: list = []

    def __init__(self, directory: Path, refs_csv: Path | None = None):
        self.directory = directory
        self.inner = None

    @classmethod
    def create(cls, directory, embedder="x", embedder_options=None):
        cls.calls.append(("create", Path(directory), embedder))
        Path(directory).mkdir(parents=True)
        (Path(directory) / "manifest.json").write_text("{}")
        return cls(Path(directory))

    @classmethod
    def open(cls, directory):
        cls.calls.append(("open", Path(directory)))
        return cls(Path(directory))

    def reindex(self, source, progress=None):
        rows = list(csv.DictReader(open(source)))
        self.inner = TinyEngine({row["path"]: Path(source).parent / row["path"] for row in rows})
        if progress:
            progress(len(rows), len(rows))

        class Summary:
            seconds, failed, errors = 1.5, 0, []

        return Summary()

    def query(self, image, top_k=5):
        return self.inner.query(image, top_k)

    def query_batch(self, images, top_k=5, errors="raise"):
        return self.inner.query_batch(images, top_k, errors)

    def close(self):
        self.calls.append(("close", self.directory))


def test_runner_creates_then_reuses_an_index_dir(bench, tmp_path, monkeypatch):
    import provenance

    monkeypatch.setattr(provenance, "Engine", FakeEngineClass, raising=False)
    FakeEngineClass.calls = []
    index = tmp_path / "index"
    config = EvalConfig(refs=bench / "refs.csv", out_dir=tmp_path / "out", families=["blur"], per_family=2,
                        index_dir=index, baselines=())
    summary = run_evaluation(config)
    assert summary.systems["engine"]["timing"]["index_seconds"] == 1.5
    assert set(summary.systems) == {"engine"}
    run_evaluation(config)
    assert [call[0] for call in FakeEngineClass.calls] == ["create", "close", "open", "close"]
    assert FakeEngineClass.calls[0][1] == index


def test_runner_uses_a_temporary_index_by_default(bench, tmp_path, monkeypatch):
    import provenance

    monkeypatch.setattr(provenance, "Engine", FakeEngineClass, raising=False)
    FakeEngineClass.calls = []
    config = EvalConfig(refs=bench / "refs.csv", out_dir=tmp_path / "out", families=["blur"], per_family=2,
                        baselines=("phash",))
    run_evaluation(config)
    temporary = FakeEngineClass.calls[0][1]
    assert FakeEngineClass.calls[0][0] == "create" and not temporary.exists()
    assert not (tmp_path / "out" / "index").exists()


def test_partial_copies_scored_apart_and_hard_negatives_relabelled(bench, tmp_path):
    # the stand-in engine only knows thumbnails: the "partial copy" is r0 re-encoded
    Image.open(bench / "refs/r0.jpg").convert("RGB").save(tmp_path / "partial0.jpg", quality=90)
    portrait(seed=999).save(tmp_path / "partial1.jpg", quality=95)
    (tmp_path / "partials.csv").write_text(f"path,ref\n{tmp_path / 'partial0.jpg'},refs/r0.jpg\n"
                                           f"{tmp_path / 'partial1.jpg'},refs/r1.jpg\n")
    (tmp_path / "hard.csv").write_text("path,kind\nnegatives/n1.jpg,shared_backdrop\n")
    config = EvalConfig(refs=bench / "refs.csv", negatives=bench / "negatives.csv", out_dir=tmp_path / "out",
                        families=["grayscale"], per_family=2, baselines=(), partial_copies=tmp_path / "partials.csv",
                        hard_negatives=(tmp_path / "hard.csv",))
    files = {f"refs/r{i}.jpg": bench / f"refs/r{i}.jpg" for i in range(8)}
    summary = run_evaluation(config, engine=TinyEngine(files))
    engine = summary.systems["engine"]
    block = engine["partial_copies"]
    assert block["queries"] == 2
    assert block["copy_of_shared_reference"] + block["not_flagged"] + block["copy_of_other_reference"] == 2
    assert block["copy_of_shared_reference"] == 1
    assert engine["positives"] == 2 and engine["negatives"] == 6  # partial copies count in neither
    assert engine["negatives_fpr"]["shared_backdrop"]["queries"] == 1
    assert "Partial copies of the same photograph" in summary.markdown
    lines = [json.loads(line) for line in (tmp_path / "out" / "queries.jsonl").read_text().splitlines()]
    assert sum(1 for line in lines if line.get("partial")) == 2
    bad = EvalConfig(refs=bench / "refs.csv", negatives=bench / "negatives.csv", out_dir=tmp_path / "bad",
                     families=["grayscale"], per_family=1, baselines=(), hard_negatives=(tmp_path / "partials.csv",))
    with pytest.raises(Exception, match="kind"):
        run_evaluation(bad, engine=TinyEngine(files))


def test_engine_answers_carry_the_evidence_sentence():
    from provenance.evaluation.runner import _engine_answer
    from provenance.results import Match, QueryResult

    logo = Match(ref_id=1, path="refs/a.jpg", score=0.9, verdict="similar", similarity=0.9,
                 refusal="compact_support", support=0.012)
    answer = _engine_answer(QueryResult("q.jpg", "similar", [logo], thresholds={"similar": 0.85}))
    assert answer["verdict"] == "similar" and "logo" in answer["why"]
    assert _engine_answer(QueryResult("q.jpg", "no_match", []))["why"] is None


def test_negatives_put_through_a_family_are_a_kind_of_their_own(bench, tmp_path):
    from provenance.errors import BadInputError
    from provenance.evaluation.queries import (build_query, load_rgb, plan_queries, read_rows, transform_of,
                                               transformed_kind)

    config = EvalConfig(refs=bench / "refs.csv", negatives=bench / "negatives.csv", out_dir=tmp_path / "out",
                        families=["grayscale"], per_family=2, baselines=(),
                        negative_families=(("avatar_tiny", "same_subject_other_photo"),))
    files = {f"refs/r{i}.jpg": bench / f"refs/r{i}.jpg" for i in range(8)}
    summary = run_evaluation(config, engine=TinyEngine(files))
    kind = transformed_kind("avatar_tiny", "same_subject_other_photo")
    assert transform_of(kind) == "avatar_tiny" and transform_of("same_subject_other_photo") is None
    engine = summary.systems["engine"]
    assert engine["negatives_fpr"][kind]["queries"] == 2 and engine["negatives"] == 6 + 2
    lines = [json.loads(line) for line in (tmp_path / "out" / "queries.jsonl").read_text().splitlines()]
    transformed = [line for line in lines if line["group"] == kind]
    assert len(transformed) == 2 and all(not line["positive"] and line["params"]["layout"] for line in transformed)
    # the query is the negative as the family shows it (a row with the avatar), not the photo itself
    negatives = read_rows(bench / "negatives.csv", ("path", "kind"))
    spec = next(s for s in plan_queries(8, negatives, [], 0, 2, None, (("avatar_tiny", "same_subject_other_photo"),))
                if s.group == kind)
    assert build_query(spec, [], negatives, 0).size != load_rgb(negatives[spec.index]).size
    for pair in (("nope", "same_subject_other_photo"), ("avatar_tiny", "nope")):
        with pytest.raises(BadInputError):
            plan_queries(8, negatives, [], 0, 2, None, (pair,))
