"""Reindex a hostile corpus and query every file of it, counting crashes, hangs and tracebacks.

    python scripts/hostile_corpus.py /tmp/hostile
    python scripts/hostile_run.py /tmp/hostile --out out/hostile [--timeout 60] [--address-space-gib 6]

Runs the installed ``provenance`` command as a user would, each process under a wall-clock
timeout, and reads each process's peak resident memory (with its worker processes) from
``wait4``. Queries go in batches; a batch that fails or hangs is re-run file by file, so
every outcome names its file. Prints one summary and writes ``summary.json`` and
``outcomes.csv`` under ``--out``. Without ``expected.csv`` (a corpus not made by
``hostile_corpus.py``) a refused file counts as neither right nor wrong.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Run:
    returncode: int | None  # None: killed at the timeout
    seconds: float
    peak_rss_mb: float  # the largest single process (wait4)
    peak_tree_rss_mb: float  # the process and its workers together (sampled every 50 ms)
    stdout: str
    stderr: str

    @property
    def hung(self) -> bool:
        return self.returncode is None

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.stderr or "Traceback" in self.stdout


def run_measured(command: list[str], timeout: float, cwd: Path, address_space: int | None = None) -> Run:
    """Run ``command``; its peak RSS (with waited-for descendants) comes from wait4."""
    def limit() -> None:
        os.setsid()
        if address_space:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        process = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=cwd, preexec_fn=limit)
        status = usage = None
        tree_peak = 0
        while time.monotonic() - started < timeout:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            tree_peak = max(tree_peak, group_rss_kb(process.pid))
            time.sleep(0.05)
        else:
            os.killpg(process.pid, signal.SIGKILL)
            _, status, usage = os.wait4(process.pid, 0)
            status = None
        process.returncode = 0  # reaped here; keep Popen from waiting again
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        code = None if status is None else os.waitstatus_to_exitcode(status)
        return Run(code, seconds, usage.ru_maxrss / 1024, max(tree_peak, usage.ru_maxrss) / 1024, out.read().decode("utf-8", "replace"),
                   err.read().decode("utf-8", "replace"))


def group_rss_kb(group: int) -> int:
    """Resident kB of every process in process group ``group`` now."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
            if int(fields[2]) != group:  # pgrp is the 5th field; 3rd after the command name
                continue
            with open(f"/proc/{entry.name}/status", encoding="ascii", errors="replace") as handle:
                total += next((int(line.split()[1]) for line in handle if line.startswith("VmRSS:")), 0)
        except (OSError, ValueError, IndexError):
            continue
    return total


def load_expected(corpus: Path, files: Path) -> dict[str, tuple[str, str]]:
    table = corpus / "expected.csv"
    if table.is_file():
        with open(table, newline="", encoding="utf-8", errors="surrogateescape") as handle:
            return {row["name"]: (row["kind"], row["expect"]) for row in csv.DictReader(handle)}
    return {path.name: ("unknown", "unknown") for path in files.iterdir()}


def query_outcomes(provenance: str, index: Path, files: Path, names: list[str], args, cwd: Path) -> tuple[dict, list[Run]]:
    """name -> outcome dict, for every file, querying in batches (singly after a failed batch)."""
    outcomes: dict[str, dict] = {}
    runs: list[Run] = []
    pending = [names[i : i + args.batch] for i in range(0, len(names), args.batch)]
    while pending:
        batch = pending.pop(0)
        command = [provenance, "query", "--json", "--index", str(index), "--", *(str(files / name) for name in batch)]
        run = run_measured(command, args.timeout * len(batch), cwd, args.address_space_gib and int(args.address_space_gib * 2**30))
        runs.append(run)
        answers = _parse_answers(run.stdout, files)
        clean = run.returncode in (0, 3) and not run.traceback and set(answers) == set(batch)
        if not clean and len(batch) > 1:
            pending[:0] = [[name] for name in batch]  # attribute the failure to its file
            continue
        for name in batch:
            answer = answers.get(name, {})
            outcomes[name] = {
                "status": "hang" if run.hung else "crash" if run.returncode not in (0, 3) else
                          "traceback" if run.traceback else "refused" if "error" in answer else "answered",
                "reason": answer.get("error", "") or (run.stderr.strip().splitlines() or [""])[-1][:200],
                "verdict": answer.get("verdict", ""),
                "seconds": round(run.seconds / len(batch), 3), "batch_peak_rss_mb": round(run.peak_rss_mb, 1),
            }
    return outcomes, runs


def _parse_answers(stdout: str, files: Path) -> dict[str, dict]:
    answers = {}
    for line in stdout.splitlines():
        try:
            answer = json.loads(line)
        except ValueError:
            continue
        name = os.path.relpath(answer.get("query", ""), files)
        answers[name] = answer
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path, help="A folder with files/ (and expected.csv), or a plain folder of files.")
    parser.add_argument("--out", type=Path, default=Path("out/hostile"))
    parser.add_argument("--timeout", type=float, default=60.0, help="Seconds per file (reindex: per run, times 10).")
    parser.add_argument("--batch", type=int, default=16, help="Files per query process.")
    parser.add_argument("--address-space-gib", type=float, default=None, help="RLIMIT_AS for query processes.")
    parser.add_argument("--provenance", default=shutil.which("provenance") or str(Path(sys.executable).parent / "provenance"))
    args = parser.parse_args()
    files = args.corpus / "files" if (args.corpus / "files").is_dir() else args.corpus
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="hostile-cwd-"))  # where a `$(touch pwned)` would land
    index = args.out / "index"
    shutil.rmtree(index, ignore_errors=True)

    reindex = run_measured([args.provenance, "reindex", str(files), "--index", str(index), "--quiet"],
                           args.timeout * 10, workdir)
    expected = load_expected(args.corpus, files)
    names = sorted(expected)
    outcomes, runs = query_outcomes(args.provenance, index, files, names, args, workdir)
    summary = summarise(reindex, outcomes, runs, expected, [workdir, files])
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))  # json escapes odd names
    with open(args.out / "outcomes.csv", "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "kind", "expect", "status", "verdict", "seconds", "batch_peak_rss_mb", "reason"])
        for name in names:
            row = outcomes[name]
            writer.writerow([name, *expected[name], row["status"], row["verdict"], row["seconds"],
                             row["batch_peak_rss_mb"], row["reason"]])
    print(json.dumps(summary, indent=2))
    shutil.rmtree(workdir, ignore_errors=True)


def summarise(reindex: Run, outcomes: dict, runs: list[Run], expected: dict, watched: list[Path]) -> dict:
    def count(predicate) -> list[str]:
        return sorted(name for name, row in outcomes.items() if predicate(name, row))

    last_line = (reindex.stdout.strip().splitlines() or [""])[-1]
    return {
        "files": len(outcomes),
        "reindex": {"exit_code": reindex.returncode, "seconds": round(reindex.seconds, 1),
                    "peak_rss_mb": round(reindex.peak_rss_mb, 1), "peak_tree_rss_mb": round(reindex.peak_tree_rss_mb, 1),
                    "traceback": reindex.traceback,
                    "summary": last_line, "refusal_lines": reindex.stderr.count("skipped bad image: ")},
        "queries": {
            "crashes": count(lambda n, r: r["status"] == "crash"),
            "hangs": count(lambda n, r: r["status"] == "hang"),
            "tracebacks": count(lambda n, r: r["status"] == "traceback"),
            "answered": len(count(lambda n, r: r["status"] == "answered")),
            "refused": len(count(lambda n, r: r["status"] == "refused")),
            "valid_refused": count(lambda n, r: expected[n][1] == "answer" and r["status"] != "answered"),
            "invalid_accepted": count(lambda n, r: expected[n][1] == "refuse" and r["status"] == "answered"),
            "peak_rss_mb": round(max(run.peak_rss_mb for run in runs), 1),
            "peak_tree_rss_mb": round(max(run.peak_tree_rss_mb for run in runs), 1),
            "slowest_file_seconds": max(row["seconds"] for row in outcomes.values()),
            "processes": len(runs),
        },
        "executed_names": sorted(str(path) for folder in watched for path in folder.glob("pwned*")),
    }


if __name__ == "__main__":
    main()
