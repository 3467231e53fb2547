"""The ``provenance`` command line: parses, calls one library function, formats."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .errors import ImageLoadError, ProvenanceError

from .cli_common import _MAX_FILE_MB, _MAX_MEGAPIXELS, DEFAULT_INDEX, EXIT_BAD_INPUT, EXIT_OK
from .cli_common import _fail, _limits, _progress_bar, app


@app.command()
def reindex(
    source: Path = typer.Argument(..., help="Folder of images, or a CSV/JSONL manifest with a 'path' column."),
    index: Path = typer.Option(DEFAULT_INDEX, "--index", "-i", help="Index directory."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Delete the index and start over."),
    embedder: str = typer.Option("effnet-lite0", help="Embedder for a new index."),
    embedder_option: List[str] = typer.Option([], "--embedder-option", "-E", help="KEY=VALUE for a new index's embedder "
                                              "(repeatable), e.g. -E model=ViT-B-32 -E pretrained=weights.safetensors."),
    regions: str = typer.Option("default", "--regions", help="Regions indexed per reference, for a new index: "
                                "'default' (whole image, 2 centred crops, 2 face squares) or 'centred' (no face squares: 3 vectors instead of 5)."),
    workers: Optional[int] = typer.Option(None, help="Decode worker processes (default: cores - 1)."),
    file_timeout: float = typer.Option(60.0, "--file-timeout", min=0.1,
                                       help="Seconds a file may take to read and prepare before it is skipped."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    max_file_mb: float = _MAX_FILE_MB,
    max_megapixels: float = _MAX_MEGAPIXELS,
    checkpoint_every: int = typer.Option(512, "--checkpoint-every", min=1,
                                         help="Commit after this many new references (a killed run resumes from there)."),
    ray: Optional[str] = typer.Option(None, "--ray", help="Prepare and embed on Ray: 'auto' (this machine's cluster), "
                                      "HOST:PORT, or 'local' (a cluster started for the job); needs the 'ray' extra."),
    ray_cpus: Optional[int] = typer.Option(None, "--ray-cpus", min=1, help="Cores of a --ray local cluster (default: all)."),
    ray_actors: Optional[int] = typer.Option(None, "--ray-actors", min=1, help="Embedding actors on Ray, a core each "
                                             "(default 1; about one per four cores of the cluster)."),
    shard: Optional[str] = typer.Option(None, "--shard", help="I/N: index only every N-th record from position I "
                                        "(one shard of a collection split over N indexes; query them together)."),
) -> None:
    """Index every image of SOURCE; already-indexed images are skipped, changed ones re-embedded.

    SOURCE may also be img2dataset output: webdataset .tar shards (or their folder), or a
    .parquet / key,url CSV of downloaded files."""
    from .embedders import parse_embedder_options
    from .engine import Engine
    from .regions import REGION_SETS

    if regions not in REGION_SETS:
        typer.echo(f"error: --regions must be one of {', '.join(REGION_SETS)}", err=True)
        raise typer.Exit(2)
    try:
        region_specs = REGION_SETS[regions]
        options = parse_embedder_options(embedder_option)
        engine = (Engine.create(index, embedder, options, overwrite=True, regions=region_specs) if rebuild
                  else Engine.open_or_create(index, embedder, embedder_options=options, regions=region_specs))
        engine.image_limits = _limits(max_file_mb, max_megapixels)
        bar = None if quiet else _progress_bar(None, "reindex")

        def progress(done: int, total: int) -> None:
            if bar is not None:
                bar.total = total
                bar.update(done - bar.n)

        def report_error(message: str) -> None:
            (bar.write if bar is not None else typer.echo)(f"skipped bad image: {message}", file=sys.stderr)

        shard_of = _parse_shard(shard) if shard else None
        runner = None
        if ray is not None:
            from .distributed import RayRunner

            ray_bar = None if quiet else _progress_bar(None, "prepare and embed on ray")

            def ray_progress(done: int, total: int) -> None:
                if ray_bar is not None:
                    ray_bar.total = total
                    ray_bar.update(done - ray_bar.n)

            runner = RayRunner(None if ray == "local" else ray, num_cpus=ray_cpus, actors=ray_actors, progress=ray_progress)
        with engine:
            summary = engine.reindex(source, progress=progress, workers=workers, on_error=report_error,
                                     file_timeout=file_timeout, checkpoint_every=checkpoint_every, runner=runner,
                                     shard=shard_of)
        if bar is not None:
            bar.close()
    except ProvenanceError as exc:
        raise _fail(exc)
    typer.echo(f"added {summary.added}, skipped {summary.skipped}, replaced {summary.replaced}, "
               f"failed {summary.failed} in {summary.seconds:.1f} s ({summary.images_per_second:.1f} img/s)")
    if summary.failed:
        typer.echo(f"failures are listed in {index / 'errors.jsonl'}", err=True)


def _parse_shard(text: str) -> tuple[int, int]:
    from .errors import BadInputError

    first, _, second = text.partition("/")
    if not (first.strip().isdigit() and second.strip().isdigit()):
        raise BadInputError(f"--shard must read I/N (got {text!r})")
    return int(first), int(second)


def _open_for_queries(indexes: List[Path]):
    """One index read-only, or several (the shards of one collection) searched as one; a folder
    without a manifest whose subfolders are indexes is taken as the shards of one index."""
    from .engine import Engine
    from .shards import ShardedIndex, shard_directories

    if len(indexes) == 1:
        shards = shard_directories(indexes[0])
        return ShardedIndex(shards) if shards else Engine.open(indexes[0], read_only=True)
    return ShardedIndex(indexes)


@app.command()
def merge(
    shards: List[Path] = typer.Argument(..., help="Shard index directories (exact indexes)."),
    into: Path = typer.Option(..., "--into", help="Index to merge them into (created when absent)."),
) -> None:
    """Merge shard indexes into one, copying vectors, keypoints and hashes (no embedding)."""
    from .shards import merge_shards

    try:
        added = merge_shards(shards, into)
    except ProvenanceError as exc:
        raise _fail(exc)
    typer.echo(f"merged {len(shards)} shard(s) into {into}: {added} reference(s) added")


@app.command()
def query(
    images: List[Path] = typer.Argument(..., help="Suspect image file(s)."),
    index: List[Path] = typer.Option([DEFAULT_INDEX], "--index", "-i", help="Index directory; repeat it to search "
                                     "several shards of one collection as one index."),
    top_k: int = typer.Option(5, "--top-k", "-k", min=1, help="Matches to report per query."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per query per line."),
    report: Optional[Path] = typer.Option(None, "--report", help="Also write a self-contained HTML evidence page here."),
    max_file_mb: float = _MAX_FILE_MB,
    max_megapixels: float = _MAX_MEGAPIXELS,
) -> None:
    """Which references each IMAGE may have been copied from, best first."""
    from .search.batch import query_stream

    try:
        engine = _open_for_queries(index)
    except ProvenanceError as exc:
        raise _fail(exc)
    engine.image_limits = _limits(max_file_mb, max_megapixels)
    exit_code = EXIT_OK
    answered = []
    with engine:
        try:
            for name, outcome in query_stream(engine, [str(image) for image in images], top_k=top_k):
                if isinstance(outcome, ImageLoadError):
                    exit_code = EXIT_BAD_INPUT
                    if as_json:
                        typer.echo(json.dumps({"query": name, "error": outcome.reason}))
                    else:
                        typer.echo(f"error: {outcome}", err=True)
                    continue
                answered.append(outcome)
                typer.echo(json.dumps(outcome.to_dict()) if as_json else _format_result(outcome))
            if report is not None:
                from .report import write_evidence_page

                write_evidence_page(report, answered, engine, limits=engine.image_limits)
                typer.echo(f"evidence page: {report}", err=True)
        except ProvenanceError as exc:
            raise _fail(exc)
    raise typer.Exit(exit_code)


def _format_result(result) -> str:
    lines = [f"{result.query}: {result.verdict}"]
    lines.append(f"  {'#':>2}  {'score':>6}  {'verdict':<9} {'subject':<24} path")
    for rank, match in enumerate(result.matches, start=1):
        subject = (match.subject or "-")[:24]
        lines.append(f"  {rank:>2}  {match.score:6.3f}  {match.verdict:<9} {subject:<24} {match.path}")
    return "\n".join(lines)


@app.command()
def info(
    index: Path = typer.Option(DEFAULT_INDEX, "--index", "-i", help="Index directory."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """What is in an index: embedder, counts, size on disk."""
    from .engine import Engine

    try:
        with Engine.open(index, read_only=True) as engine:
            details = engine.info()
    except ProvenanceError as exc:
        raise _fail(exc)
    if as_json:
        typer.echo(json.dumps(details.__dict__, indent=2, default=str))
        return
    typer.echo(f"index       {details.directory}")
    typer.echo(f"embedder    {details.embedder['name']} (fingerprint {details.embedder['fingerprint']}, dim {details.embedder['dim']})")
    typer.echo(f"references  {details.references}")
    kind = details.vector_index.get("type")
    if details.vector_index.get("factory"):
        kind += f", {details.vector_index['factory']}, nprobe {details.vector_index.get('nprobe')}"
    typer.echo(f"vectors     {details.vectors} ({kind})")
    for collection, count in sorted(details.collections.items()):
        typer.echo(f"  {collection or '(none)':<20} {count}")
    typer.echo(f"disk        {details.disk_bytes / 1e6:.1f} MB")
    typer.echo(f"thresholds  {details.thresholds or 'defaults'}")


@app.command()
def remove(
    index: Path = typer.Option(DEFAULT_INDEX, "--index", "-i", help="Index directory."),
    ref_id: List[int] = typer.Option([], "--id", help="Reference id to remove (repeatable)."),
    path: List[str] = typer.Option([], "--path", help="Reference path as ingested (repeatable)."),
    subject: List[str] = typer.Option([], "--subject", help="Remove every reference of this subject (repeatable)."),
) -> None:
    """Remove references (an owner's opt-out); takes effect for the next query."""
    from .engine import Engine

    if not (ref_id or path or subject):
        typer.echo("error: give at least one --id, --path or --subject", err=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    try:
        with Engine.open(index) as engine:
            removed = engine.remove(ref_ids=ref_id, paths=path, subjects=subject)
    except ProvenanceError as exc:
        raise _fail(exc)
    typer.echo(f"removed {removed} reference(s)")


@app.command()
def compact(
    index: Path = typer.Option(DEFAULT_INDEX, "--index", "-i", help="Index directory."),
) -> None:
    """Merge the index's segments into one now, reclaiming removed references' space (saves merge by size tier)."""
    from .engine import Engine

    try:
        with Engine.open(index) as engine:
            before = engine.info().disk_bytes
            engine.compact()
            info = engine.info()
    except ProvenanceError as exc:
        raise _fail(exc)
    typer.echo(f"compacted: {before / 1e6:.1f} MB -> {info.disk_bytes / 1e6:.1f} MB, "
               f"{info.vector_index['segments']} segment(s)")


@app.command()
def calibrate(
    negatives: Path = typer.Option(..., "--negatives", help="CSV/JSONL or folder of images that are NOT copies."),
    index: Path = typer.Option(DEFAULT_INDEX, "--index", "-i", help="Index directory."),
    target_fpr: float = typer.Option(0.001, "--target-fpr", help="Share of negatives allowed above each threshold."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Measure known non-copies and store data-driven thresholds in the index manifest."""
    from .calibration import calibrate as run_calibration
    from .engine import Engine

    try:
        with Engine.open(index) as engine:
            bar = None if quiet else _progress_bar(None, "calibrate")

            def progress(done: int, total: int) -> None:
                if bar is not None:
                    bar.total = total
                    bar.update(done - bar.n)

            report = run_calibration(engine, negatives, target_fpr, progress=progress)
            if bar is not None:
                bar.close()
    except ProvenanceError as exc:
        raise _fail(exc)
    typer.echo(f"{report.negatives} negatives ({report.failed} unreadable), target FPR {report.target_fpr}")
    typer.echo(f"thresholds stored: similar >= {report.thresholds['similar']:.4f}, copy score >= {report.thresholds['copy']:.4f}")
    for kind, counts in sorted(report.flagged_by_kind.items()):
        typer.echo(f"  {kind:<28} {counts['total']:>5}  copy {counts['copy']:>3}  similar {counts['similar']:>3}")


@app.command()
def hashes(index: Path = typer.Option(DEFAULT_INDEX, "--index", "-i", help="Index directory.")) -> None:
    """Print every reference's PDQ hash as 'hash,quality,path' (ThreatExchange's hex format)."""
    from .engine import Engine

    try:
        with Engine.open(index, read_only=True) as engine:
            for reference, digest, quality in engine.pdq_hashes():
                typer.echo(f"{digest},{quality},{reference.path}")
    except ProvenanceError as exc:
        raise _fail(exc)


def _register_optional_commands() -> None:
    from . import cli_interfaces  # noqa: F401  (report, scan, serve register themselves)

    try:
        from .cli_eval import eval_command
    except ImportError:
        return
    app.command("eval")(eval_command)


_register_optional_commands()


EXIT_OUT_OF_MEMORY = 6


def main() -> None:
    """Console-script entry point."""
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 is shown escaped, never a crash
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):
            pass
    try:
        app()
    except MemoryError:
        _out_of_memory("")
    except RuntimeError as exc:  # torch reports a failed allocation as a RuntimeError
        if "allocate memory" not in str(exc):
            raise
        _out_of_memory(f" ({' '.join(str(exc).split())[:160]})")


def _out_of_memory(detail: str) -> None:
    typer.echo(f"error: out of memory{detail}. A provenance process needs about 1.2 GiB resident; one that loads the "
               "pinned PyTorch build (reindex, runtime=torch) needs an address-space limit (ulimit -v) of at least 5 GiB",
               err=True)
    sys.exit(EXIT_OUT_OF_MEMORY)
