"""``provenance eval``: measure the engine (and hash baselines) on transformed copies.

Registered by the main CLI with ``app.command("eval")(eval_command)``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from .errors import ProvenanceError

DEFAULT_REFS = Path("../shared/bench/refs.csv")


class _StageBars:
    """One tqdm bar per progress stage, on stderr."""

    def __init__(self) -> None:
        self._stage: str | None = None
        self._bar = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if stage != self._stage:
            self.close()
            self._stage = stage
            self._bar = tqdm(total=total, desc=stage, file=sys.stderr, unit="img", leave=True, dynamic_ncols=True)
        if self._bar is not None:
            if self._bar.total != total:
                self._bar.total = total
            self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _split(value: Optional[str]) -> list[str]:
    if not value or value.strip().lower() == "none":
        return []
    return [part.strip() for part in value.split(",") if part.strip()]


def eval_command(
    out: Annotated[Path, typer.Option("--out", help="Folder for metrics.json, metrics.md, report.html.")],
    refs: Annotated[Path, typer.Option("--refs", help="Reference manifest CSV (path,subject,source_url,collection).")] = DEFAULT_REFS,
    negatives: Annotated[Optional[Path], typer.Option("--negatives", help="Negatives CSV (path,kind,subject): queries that must not match.")] = None,
    partial_copies: Annotated[Optional[Path], typer.Option("--partial-copies", help="CSV (path,ref) of images sharing pixels with a reference, scored on their own; default: shared_pixels.csv beside --negatives, if present.")] = None,
    hard_negatives: Annotated[Optional[list[Path]], typer.Option("--hard-negatives", help="CSV (path,kind) relabelling some negatives with a kind of their own (scripts/data/shared_backdrop.csv, scripts/data/same_shoot.csv); repeatable.")] = None,
    negative_family: Annotated[Optional[list[str]], typer.Option("--negative-family", help="FAMILY:KIND: put --per-family negatives of KIND through FAMILY, as a negative kind of their own (e.g. avatar_tiny:same_subject_other_photo); repeatable.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the reference sample and every transform.")] = 0,
    families: Annotated[Optional[str], typer.Option("--families", help="Comma-separated transform families (default: all).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Quick run: at most N queries per family and N negatives per kind.")] = None,
    per_family: Annotated[int, typer.Option("--per-family", min=1, help="References sampled per family.")] = 40,
    index: Annotated[Optional[Path], typer.Option("--index", help="Reuse (or create and keep) the index in DIR; default: a temporary index.")] = None,
    baselines: Annotated[str, typer.Option("--baselines", help="Comma-separated hash baselines: pdq, phash; 'none' for none.")] = "pdq,phash",
    embedder: Annotated[str, typer.Option("--embedder", help="Embedder for a new index.")] = "effnet-lite0",
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Candidates per query (recall@k needs >= 5).")] = 5,
    embedder_option: Annotated[Optional[List[str]], typer.Option("--embedder-option", "-E", help="KEY=VALUE for the embedder of a new index (repeatable).")] = None,
) -> None:
    """Index the references, query seeded transformed copies and negatives, and score them."""
    from .embedders import parse_embedder_options
    from .evaluation import EvalConfig, run_evaluation
    from .evaluation.queries import parse_negative_family

    if partial_copies is None and negatives is not None and (negatives.parent / "shared_pixels.csv").is_file():
        partial_copies = negatives.parent / "shared_pixels.csv"
    config = EvalConfig(
        refs=refs, out_dir=out, negatives=negatives, partial_copies=partial_copies, hard_negatives=tuple(hard_negatives or ()),
        seed=seed, families=_split(families) or None,
        per_family=per_family, limit=limit, index_dir=index, baselines=tuple(_split(baselines)),
        embedder=embedder, top_k=top_k,
    )
    bars = _StageBars()
    try:
        config.negative_families = tuple(parse_negative_family(value) for value in negative_family or ())
        config.embedder_options = parse_embedder_options(embedder_option or [])
        summary = run_evaluation(config, progress=bars)
    except (ProvenanceError, ValueError, KeyError) as exc:
        bars.close()
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(getattr(exc, "exit_code", 3)) from None
    bars.close()
    typer.echo(summary.markdown)
    typer.echo(f"Wrote {summary.out_dir / 'report.html'} and metrics in {summary.out_dir} "
               f"({summary.seconds:.0f} s).", err=True)


if __name__ == "__main__":  # ``python -m provenance.cli_eval --out DIR`` before the main CLI registers it
    typer.run(eval_command)
