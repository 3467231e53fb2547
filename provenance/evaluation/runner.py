"""The evaluation run: index, query (engine and baselines on identical queries), score, report."""

from __future__ import annotations

import math
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from PIL import Image

from ..errors import BadInputError
from ..report.evidence import explain
from ..results import Match
from ..search.batch import query_stream
from . import metrics as M
from .baselines import HashBaseline, make_baseline
from .html import write_html
from .queries import (DEFAULT_PER_FAMILY, QuerySpec, Row, build_query, load_rgb, plan_queries, read_partial_copies, read_rows,
                      relabel, resolve_families)
from .report import write_outputs

Progress = Optional[Callable[[str, int, int], None]]
ENGINE = "engine"


@dataclass
class EvalConfig:
    """What to evaluate and where to write the results.

    ``limit`` caps queries for quick runs: at most ``limit`` positives per family and
    ``limit`` negatives per kind. ``partial_copies``: a CSV (``path``, ``ref``) of images
    that share pixels with a reference (another crop of the same photograph); they are
    scored in a block of their own (:func:`~.metrics.partial_copy_block`), outside µAP and
    the false-positive rates. ``hard_negatives``: CSVs (``path``, ``kind``) that relabel
    some negatives with a kind of their own (e.g. ``shared_backdrop``, ``same_shoot``).
    ``negative_families``: (family, kind) pairs; ``per_family`` negatives of that kind are put
    through the family as a negative kind of their own
    (:func:`~.queries.transformed_kind`). ``index_dir``: an index to reuse (missing references
    are added to it) or to create; ``None`` builds a throwaway index in a temporary folder.
    """

    refs: Path
    out_dir: Path
    negatives: Path | None = None
    partial_copies: Path | None = None
    hard_negatives: Sequence[Path] = ()
    negative_families: Sequence[tuple[str, str]] = ()
    seed: int = 0
    families: Sequence[str] | None = None
    per_family: int = DEFAULT_PER_FAMILY
    limit: int | None = None
    index_dir: Path | None = None
    baselines: Sequence[str] = ("pdq", "phash")
    embedder: str = "effnet-lite0"
    embedder_options: dict[str, Any] = field(default_factory=dict)
    top_k: int = 5
    examples_per_family: int = 3
    worst_examples: int = 12


@dataclass
class EvalSummary:
    """The outcome of :func:`run_evaluation`: per-system metrics and where files went."""

    out_dir: Path
    systems: dict[str, dict]
    run: dict[str, Any]
    markdown: str
    seconds: float
    files: list[Path] = field(default_factory=list)


@dataclass
class _SystemRun:
    """Per-query answers and timings of one system."""

    index_seconds: float | None = None
    seconds: list[float] = field(default_factory=list)


def run_evaluation(config: EvalConfig, progress: Progress = None, *, engine: Any = None) -> EvalSummary:
    """Run the whole evaluation described by ``config`` and write its files.

    ``progress(stage, done, total)`` is called as work advances. ``engine`` may be an
    already open engine-like object (``query(image, top_k)``); the references must then
    already be in it. Library code: never prints.

    Building the index uses worker processes (spawn), so a script calling this
    must guard its entry point with ``if __name__ == "__main__":``.
    """
    started = time.perf_counter()
    report = progress or (lambda stage, done, total: None)
    refs = read_rows(config.refs)
    negatives = read_rows(config.negatives, ("path", "kind")) if config.negatives else []
    for hard in config.hard_negatives:
        negatives = relabel(negatives, read_rows(hard, ("path", "kind")))
    partials = read_partial_copies(config.partial_copies) if config.partial_copies else []
    families = resolve_families(config.families)
    if config.limit is not None and config.limit < 1:
        raise BadInputError("limit must be at least 1")
    specs = plan_queries(len(refs), negatives, families, config.seed, config.per_family, config.limit,
                         tuple(config.negative_families))
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs: dict[str, _SystemRun] = {ENGINE: _SystemRun()}
    with ExitStack() as stack:
        if engine is None:
            engine = _open_engine(config, stack, runs[ENGINE], report)
        baselines = _build_baselines(config.baselines, refs, runs, report)
        records = _run_queries(specs, refs, negatives, config, engine, baselines, runs, report)
        partial_records = _run_partial_copies(partials, engine, config.top_k, report)
    systems = {name: _score(records, name, run) for name, run in runs.items()}
    if partials:
        systems[ENGINE]["partial_copies"] = M.partial_copy_block(partial_records)
    run_info = _run_info(config, refs, negatives, families, specs, started)
    markdown = write_outputs(out_dir, systems, run_info, records + partial_records)
    report("report", 0, 1)
    page = write_html(
        out_dir, records, ENGINE, systems[ENGINE]["threshold_at_p99"],
        query_image=lambda record: build_query(_spec_of(record), refs, negatives, config.seed),
        ref_image=_ref_loader(refs), per_family=config.examples_per_family, worst=config.worst_examples,
    )
    report("report", 1, 1)
    files = [out_dir / "metrics.json", out_dir / "metrics.md", out_dir / "queries.jsonl", page]
    run_info["seconds"] = time.perf_counter() - started
    return EvalSummary(out_dir, systems, run_info, markdown, run_info["seconds"], files)


def _open_engine(config: EvalConfig, stack: ExitStack, run: _SystemRun, report) -> Any:
    from .. import Engine  # deferred: loads torch/FAISS

    if config.index_dir is None:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="provenance-eval-"))) / "index"
    else:
        directory = Path(config.index_dir)
    if (directory / "manifest.json").exists():
        engine = Engine.open(directory)
    else:
        engine = Engine.create(directory, embedder=config.embedder, embedder_options=config.embedder_options)
    stack.callback(engine.close)
    summary = engine.reindex(config.refs, progress=lambda done, total: report("index", done, total))
    run.index_seconds = float(summary.seconds)
    if summary.failed:
        raise BadInputError(f"{summary.failed} reference(s) failed to index: {'; '.join(summary.errors[:3])}")
    return engine


def _build_baselines(names: Sequence[str], refs: list[Row], runs: dict, report) -> dict[str, HashBaseline]:
    baselines = {}
    for name in names:
        baseline = make_baseline(name)
        if name == ENGINE or name in baselines:
            raise BadInputError(f"baseline {name!r} given twice")
        started = time.perf_counter()
        for done, row in enumerate(refs, 1):
            baseline.add(load_rgb(row))
            if done % 50 == 0 or done == len(refs):
                report(f"hash refs ({name})", done, len(refs))
        runs[name] = _SystemRun(index_seconds=time.perf_counter() - started)
        baselines[name] = baseline
    return baselines


def _run_queries(specs, refs, negatives, config, engine, baselines, runs, report) -> list[dict]:
    records = []
    for done, spec in enumerate(specs, 1):
        image = build_query(spec, refs, negatives, config.seed)
        truth = refs[spec.index].path if spec.positive else None
        source = refs[spec.index].path if spec.positive else negatives[spec.index].path
        answers = {ENGINE: _ask_engine(engine, image, config.top_k, runs[ENGINE])}
        for name, baseline in baselines.items():
            answers[name] = _ask_baseline(baseline, image, config.top_k, refs, runs[name])
        for answer in answers.values():
            _judge(answer, truth)
        records.append({"qid": spec.qid, "positive": spec.positive, "group": spec.group, "index": spec.index,
                        "source": source, "truth": truth, "params": spec.params, "systems": answers})
        report("queries", done, len(specs))
    return records


def _run_partial_copies(partials: list[tuple[Row, str]], engine, top_k: int, report) -> list[dict]:
    records = []
    for done, (row, truth) in enumerate(partials, 1):
        result = _query_one(engine, load_rgb(row), top_k)
        best = result.matches[0] if result.matches else None
        box = getattr(best, "box", None)
        answer = {**_engine_answer(result), "box": list(box) if box else None, "coverage": getattr(best, "coverage", None)}
        _judge(answer, truth)
        records.append({"qid": f"partial/{done - 1}", "positive": False, "partial": True,
                        "group": M.PARTIAL_COPY_GROUP, "index": done - 1, "source": row.path, "truth": truth,
                        "params": {}, "systems": {ENGINE: answer}})
        report("partial copies", done, len(partials))
    return records


def _ask_engine(engine, image: Image.Image, top_k: int, run: _SystemRun) -> dict:
    started = time.perf_counter()
    result = _query_one(engine, image, top_k)
    run.seconds.append(time.perf_counter() - started)
    return _engine_answer(result)


def _query_one(engine, image: Image.Image, top_k: int):
    # one query per batch: the benchmark reports each query's own latency
    ((_, result),) = query_stream(engine, [image], top_k=top_k, batch_size=1)
    if isinstance(result, Exception):
        raise result
    return result


def _engine_answer(result) -> dict:
    # the evidence page's sentence for the best match: why a false copy is a copy (inliers or
    # PDQ), why a shared logo is not (compact support)
    best = getattr(result, "best", None)
    why = explain(best, getattr(result, "thresholds", None) or {}) if isinstance(best, Match) else None
    return {"top": [m.path for m in result.matches], "scores": [float(m.score) for m in result.matches],
            "verdict": result.verdict, "why": why}


def _ask_baseline(baseline: HashBaseline, image: Image.Image, top_k: int, refs: list[Row], run: _SystemRun) -> dict:
    started = time.perf_counter()
    indices, scores = baseline.query(image, top_k)
    run.seconds.append(time.perf_counter() - started)
    return {"top": [refs[int(i)].path for i in indices], "scores": [float(s) for s in scores], "verdict": None}


def _judge(answer: dict, truth: str | None) -> None:
    answer["score"] = answer["scores"][0] if answer["scores"] else None
    answer["correct"] = truth is not None and bool(answer["top"]) and answer["top"][0] == truth
    answer["rank"] = answer["top"].index(truth) if truth in answer["top"] else -1


def _score(records: list[dict], name: str, run: _SystemRun) -> dict:
    answers = [record["systems"][name] for record in records]
    has_verdicts = name == ENGINE
    scored = M.summarize(
        positive=[record["positive"] for record in records],
        group=[record["group"] for record in records],
        correct=[answer["correct"] for answer in answers],
        scores=[math.nan if answer["score"] is None else answer["score"] for answer in answers],
        ranks=[answer["rank"] for answer in answers],
        verdicts=[answer["verdict"] for answer in answers] if has_verdicts else None,
    )
    scored["timing"] = {"index_seconds": run.index_seconds, **M.latency_stats(run.seconds)}
    groups = [record["group"] for record in records]
    scored["timing"]["per_group_median_ms"] = {
        group: M.latency_stats([s for g, s in zip(groups, run.seconds) if g == group])["median_ms"]
        for group in dict.fromkeys(groups)
    }
    return scored


def _run_info(config: EvalConfig, refs, negatives, families, specs, started) -> dict:
    return {
        "seed": config.seed, "refs": str(config.refs), "negatives": str(config.negatives) if config.negatives else None,
        "references": len(refs), "families": families, "per_family": config.per_family, "limit": config.limit,
        "positive_queries": sum(1 for s in specs if s.positive), "negative_queries": sum(1 for s in specs if not s.positive),
        "embedder": config.embedder, "embedder_options": config.embedder_options, "index_dir": str(config.index_dir) if config.index_dir else None,
        "baselines": list(config.baselines), "top_k": config.top_k,
        "negative_families": [list(pair) for pair in config.negative_families],
    }


def _spec_of(record: dict) -> QuerySpec:
    return QuerySpec(record["qid"], record["positive"], record["group"], record["index"])


def _ref_loader(refs: list[Row]) -> Callable[[str], Image.Image | None]:
    by_path = {row.path: row for row in refs}

    def load(path: str) -> Image.Image | None:
        row = by_path.get(path)
        return load_rgb(row) if row is not None else None

    return load
