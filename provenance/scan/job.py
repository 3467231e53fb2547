"""A bulk scan of suspect images: one results line each, resumable, then the links and the summary.

``results.jsonl`` is append-only and written in input order, one batch at a time (flushed
and synced), so a scan killed at any moment resumes where it stopped: a torn last line is
cut off and every suspect already answered is skipped. The finished file is the same as
an uninterrupted run's.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import BadInputError, ImageLoadError, IndexLockedError
from ..index.manifest import atomic_write_bytes
from ..results import VERDICT_COPY
from ..search.batch import DEFAULT_BATCH, query_stream
from .links import link_suspects
from .suspects import Suspect, is_owner, read_allowlist, read_suspects, suspects_fingerprint

RESULTS_NAME = "results.jsonl"
GROUPS_NAME = "groups.json"
SUMMARY_NAME = "summary.html"
STATE_NAME = "scan.json"
#: The verdict of a copy posted by the victim's own (allowlisted) account.
VERDICT_OWNER = "owner"
VERDICT_ERROR = "error"


@dataclass(frozen=True)
class ScanSummary:
    """What a scan did; ``resumed`` suspects were answered by an earlier, interrupted run."""

    out_dir: Path
    suspects: int
    answered: int
    resumed: int
    verdicts: dict[str, int]
    unknown_groups: int
    seconds: float

    @property
    def results(self) -> Path:
        return self.out_dir / RESULTS_NAME

    @property
    def summary_page(self) -> Path:
        return self.out_dir / SUMMARY_NAME


def run_scan(engine: Any, suspects_source: str | os.PathLike, out_dir: str | os.PathLike, *,
             allowlist: str | os.PathLike | None = None, top_k: int = 5, batch_size: int = DEFAULT_BATCH,
             link: bool = True, restart: bool = False, progress: Callable[[str, int, int], None] | None = None,
             on_error: Callable[[str], None] | None = None) -> ScanSummary:
    """Query every suspect of ``suspects_source`` against ``engine``'s index, link the suspects
    that copy each other, and write ``results.jsonl``, ``groups.json`` and ``summary.html`` to ``out_dir``.

    ``progress(stage, done, total)`` reports each stage; ``on_error(message)`` each unreadable
    suspect (logged in its results line too, never fatal). ``restart`` discards an earlier
    scan in ``out_dir``; without it a scan of other suspects, another index or other settings
    there is refused rather than mixed in.
    """
    from ..report.summary import write_scan_summary

    started = time.perf_counter()
    report = progress or (lambda stage, done, total: None)
    suspects = read_suspects(suspects_source)
    owners = read_allowlist(allowlist) if allowlist else frozenset()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with _exclusive(out):
        settings = {**suspects_fingerprint(suspects_source), "index": str(Path(engine.directory).resolve()),
                    "top_k": top_k, "allowlist": sorted(map(list, owners))}
        _check_state(out, settings, restart)
        done = _completed_keys(out / RESULTS_NAME)
        todo = [suspect for suspect in suspects if suspect.key not in done]
        answered = _answer(engine, todo, out / RESULTS_NAME, owners, top_k, batch_size,
                           lambda count: report("query", len(done) + count, len(suspects)), on_error)
        lines = read_results(out / RESULTS_NAME)
        groups = link_suspects(engine, lines, out / "suspects-index", batch_size, report) if link else []
        _write_json(out / GROUPS_NAME, groups)
        report("summary", 0, 1)
        write_scan_summary(out / SUMMARY_NAME, lines, groups, engine, limits=getattr(engine, "image_limits", None))
        report("summary", 1, 1)
    verdicts: dict[str, int] = {}
    for line in lines:
        verdicts[line["verdict"]] = verdicts.get(line["verdict"], 0) + 1
    return ScanSummary(out, len(suspects), answered, len(suspects) - len(todo), verdicts, len(groups),
                       time.perf_counter() - started)


def _answer(engine, todo: list[Suspect], results: Path, owners, top_k: int, batch_size: int,
            counted: Callable[[int], None], on_error) -> int:
    count = 0
    with open(results, "a", encoding="utf-8") as handle:
        for suspect, outcome in query_stream(engine, todo, top_k=top_k, batch_size=batch_size,
                                             image_of=lambda suspect: suspect.file):
            line = result_line(suspect, outcome, owners)
            if line["verdict"] == VERDICT_ERROR and on_error is not None:
                on_error(f"{suspect.path}: {line['error']}")
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")
            count += 1
            if count % batch_size == 0 or count == len(todo):
                handle.flush()
                os.fsync(handle.fileno())
                counted(count)
    return count


def result_line(suspect: Suspect, outcome: Any, owners: frozenset[tuple[str, str]]) -> dict[str, Any]:
    """The results line of one suspect: its own fields, then the verdict and the matches (no timings,
    so that a resumed scan writes what an uninterrupted one would)."""
    line = suspect.describe()
    if isinstance(outcome, ImageLoadError):
        return {**line, "verdict": VERDICT_ERROR, "error": outcome.reason, "matches": []}
    answer = outcome.to_dict()
    answer.pop("seconds", None)
    best = outcome.best
    verdict = outcome.verdict
    if verdict == VERDICT_COPY and best is not None and is_owner(owners, best.subject, suspect.account):
        verdict = VERDICT_OWNER
        line["owner_of"] = best.subject
    return {**line, **answer, "verdict": verdict}


def read_results(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a results file, in input order."""
    if not path.exists():
        return []
    lines = []
    with open(path, encoding="utf-8") as handle:
        for text in handle:
            if text.endswith("\n") and text.strip():
                lines.append(json.loads(text))
    return sorted(lines, key=lambda line: line["n"])


def _completed_keys(path: Path) -> set[str]:
    """Keys already answered; a torn or unreadable tail (a killed write) is cut off first."""
    if not path.exists():
        return set()
    keys, good_bytes = set(), 0
    with open(path, "rb") as handle:
        for raw in handle:
            try:
                if not raw.endswith(b"\n"):
                    raise ValueError("torn line")
                line = json.loads(raw)
                keys.add(f"{line['n']}:{line['suspect']}")
            except (ValueError, KeyError, TypeError):
                break
            good_bytes += len(raw)
    if good_bytes != path.stat().st_size:
        with open(path, "r+b") as handle:
            handle.truncate(good_bytes)
    return keys


def _check_state(out: Path, settings: dict[str, Any], restart: bool) -> None:
    state = out / STATE_NAME
    if restart:
        for name in (RESULTS_NAME, GROUPS_NAME, SUMMARY_NAME, STATE_NAME):
            (out / name).unlink(missing_ok=True)
        import shutil

        shutil.rmtree(out / "suspects-index", ignore_errors=True)
    if state.exists():
        try:
            previous = json.loads(state.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if previous != settings:
            raise BadInputError(f"{out} holds a scan of other suspects, another index or other settings; "
                                "pass --restart to discard it, or choose another --out")
        return
    _write_json(state, settings)


def _write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, json.dumps(value, indent=1, ensure_ascii=False).encode("utf-8"))


class _exclusive:
    """Holds ``scan.lock`` in the output folder: two scans never write one results file."""

    def __init__(self, out: Path):
        self.path = out / "scan.lock"

    def __enter__(self):
        self.handle = open(self.path, "a")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise IndexLockedError(f"{self.path.parent}: another scan is writing there") from None
        return self

    def __exit__(self, *exc_info):
        self.handle.close()


__all__ = ["ScanSummary", "run_scan", "read_results", "result_line", "VERDICT_OWNER", "VERDICT_ERROR"]
