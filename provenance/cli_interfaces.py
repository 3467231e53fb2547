"""The ``provenance`` commands for people and platforms: ``report``, ``scan``, ``serve``.

Registered on the main app by :mod:`provenance.cli`; like every command, they parse, call
one library function and format.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .cli_common import _MAX_FILE_MB, _MAX_MEGAPIXELS, DEFAULT_INDEX, EXIT_BAD_INPUT, _fail, _limits, _progress_bar, app
from .errors import ProvenanceError


@app.command()
def report(
    results: Path = typer.Argument(..., help="Saved `provenance query --json` output (JSON lines)."),
    out: Path = typer.Option(..., "--out", "-o", help="HTML file to write."),
    index: Path = typer.Option(DEFAULT_INDEX, "--index", "-i", help="The index the queries ran on (reference pictures, dates)."),
) -> None:
    """Write the evidence page for saved query results (suspects are read from the paths they name)."""
    from .engine import Engine
    from .report import read_query_results, write_evidence_page

    try:
        answers = read_query_results(results)
        with Engine.open(index, read_only=True) as engine:
            write_evidence_page(out, answers, engine, limits=engine.image_limits)
    except ProvenanceError as exc:
        raise _fail(exc)
    typer.echo(f"evidence page for {len(answers)} suspect(s): {out}")


@app.command()
def scan(
    suspects: Path = typer.Argument(..., help="Folder of suspect images, or a CSV/JSONL with 'path' and optional "
                                    "'account', 'profile_url', 'seen_at' (other columns are kept)."),
    index: Path = typer.Option(DEFAULT_INDEX, "--index", "-i", help="Index directory."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for results.jsonl, groups.json and summary.html."),
    allowlist: Optional[Path] = typer.Option(None, "--allowlist", help="CSV (subject, account) of victims' own accounts: "
                                             "their copies are 'owner', never 'copy'."),
    top_k: int = typer.Option(5, "--top-k", "-k", min=1, help="Matches kept per suspect."),
    no_links: bool = typer.Option(False, "--no-links", help="Do not look for suspects that copy each other."),
    restart: bool = typer.Option(False, "--restart", help="Discard an earlier scan in --out instead of resuming it."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    max_file_mb: float = _MAX_FILE_MB,
    max_megapixels: float = _MAX_MEGAPIXELS,
) -> None:
    """Triage many suspects: which accounts use whose photos; resumes a killed scan."""
    from .engine import Engine
    from .scan import run_scan

    bars: dict = {}  # the stage shown now -> its bar (one at a time)

    def progress(stage: str, done: int, total: int) -> None:
        if quiet:
            return
        if stage not in bars:
            for finished in bars.values():
                finished.close()
            bars.clear()
            bars[stage] = _progress_bar(total, stage)
        bar = bars[stage]
        bar.total = total
        bar.update(done - bar.n)

    def report_error(message: str) -> None:
        writer = next(iter(bars.values())).write if bars else typer.echo
        writer(f"skipped bad image: {message}", file=sys.stderr)

    try:
        with Engine.open(index, read_only=True) as engine:
            engine.image_limits = _limits(max_file_mb, max_megapixels)
            summary = run_scan(engine, suspects, out, allowlist=allowlist, top_k=top_k, link=not no_links,
                               restart=restart, progress=progress, on_error=report_error)
    except ProvenanceError as exc:
        raise _fail(exc)
    finally:
        for bar in bars.values():
            bar.close()
    counts = ", ".join(f"{verdict} {count}" for verdict, count in sorted(summary.verdicts.items()))
    typer.echo(f"{summary.suspects} suspects ({summary.resumed} from an earlier run): {counts}; "
               f"{summary.unknown_groups} unknown-victim group(s) in {summary.seconds:.1f} s")
    typer.echo(f"results: {summary.results}\nsummary: {summary.summary_page}")


@app.command()
def serve(
    index: Path = typer.Option(DEFAULT_INDEX, "--index", "-i", help="Index directory (opened read-only)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535),
    api_key_file: Optional[Path] = typer.Option(None, "--api-key-file", help="File holding the API key clients must send "
                                                "(Authorization: Bearer KEY, or X-API-Key)."),
    max_upload_mb: float = typer.Option(32.0, "--max-upload-mb", min=0.001, help="Larger request bodies get 413."),
    running: int = typer.Option(2, "--max-running", min=1, help="Queries answered at once."),
    waiting: int = typer.Option(8, "--max-waiting", min=0, help="Queries allowed to wait; beyond that, 503."),
    timeout: float = typer.Option(30.0, "--timeout", min=0.1, help="Seconds a query may take before 504."),
    max_megapixels: float = _MAX_MEGAPIXELS,
) -> None:
    """Serve queries over HTTP (POST /v1/query); needs the 'serve' extra."""
    import importlib.util

    from .service import ServiceSettings, serve as run_service

    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        typer.echo("error: the service needs its extra: pip install -e '.[serve]'", err=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    api_key = None
    if api_key_file is not None:
        try:
            api_key = api_key_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            typer.echo(f"error: cannot read the API key file ({exc})", err=True)
            raise typer.Exit(EXIT_BAD_INPUT)
        if not api_key:
            typer.echo(f"error: {api_key_file} is empty", err=True)
            raise typer.Exit(EXIT_BAD_INPUT)
    settings = ServiceSettings(api_key=api_key, max_upload_bytes=int(max_upload_mb * (1 << 20)), running=running,
                               waiting=waiting, timeout_s=timeout, limits=_limits(max_upload_mb, max_megapixels))
    if host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        typer.echo(f"warning: serving on {host} without --api-key-file: anyone who reaches it can query", err=True)
    try:
        run_service(str(index), host=host, port=port, settings=settings)
    except ProvenanceError as exc:
        raise _fail(exc)
