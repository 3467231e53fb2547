"""Readers while a writer reindexes, removes and compacts: every answer from one committed state.

    python scripts/concurrent_readers.py --refs ../shared/bench/refs.csv --out out/readers   # the dev set
    python scripts/concurrent_readers.py --synthetic 48 --out out/readers-small            # generated

Builds an index of the first half of the references, then runs three writers one after
another in a child process (``provenance reindex`` of all references, ``provenance remove``
of some subjects, ``provenance compact``) while this process queries crops of
references in a loop through a read-only engine. A probe of a reference that every state
holds must be answered ``copy`` of it; a probe of a reference being added or removed
must be a copy of it or no match of it (the state before or after), never an error. During
each writer a second writer is started and must be refused at once (exit 4).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from crash_trials import provenance_command, synthetic  # noqa: E402


def reference_rows(args) -> list[dict]:
    if args.synthetic:
        folder = args.out / "images"
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for number in range(args.synthetic):
            path = folder / f"ref_{number:03d}.jpg"
            synthetic(number).save(path, quality=90)
            rows.append({"path": str(path), "subject": f"subject-{number % 8}"})
        return rows
    with open(args.refs, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    base = args.refs.parent
    return [{"path": str((base / row["path"]).resolve()), "subject": row.get("subject") or ""} for row in rows]


def write_manifest(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def probe_of(path: str) -> Image.Image:
    image = Image.open(path).convert("RGB")
    width, height = image.size
    return image.crop((width // 12, height // 12, width - width // 12, height - height // 12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refs", type=Path, default=Path("../shared/bench/refs.csv"))
    parser.add_argument("--synthetic", type=int, default=0, help="Use this many generated references instead.")
    parser.add_argument("--out", type=Path, default=Path("out/readers"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out = args.out.resolve()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    rows = reference_rows(args)
    half = len(rows) // 2
    index = args.out / "index"
    first = write_manifest(args.out / "first.jsonl", rows[:half])
    everything = write_manifest(args.out / "all.jsonl", rows)
    subprocess.run(provenance_command(["reindex", str(first), "--index", str(index), "--quiet"]), check=True,
                   stdout=subprocess.DEVNULL)
    subjects = sorted({row["subject"] for row in rows[:half] if row["subject"]})
    removed_subjects = random.Random(args.seed).sample(subjects, max(1, len(subjects) // 20))
    removed = {row["path"] for row in rows if row["subject"] in removed_subjects}
    added = {row["path"] for row in rows[half:]} - removed
    writers = [
        ("reindex", ["reindex", str(everything), "--index", str(index), "--quiet", "--checkpoint-every", "64"], added, set()),
        ("remove", ["remove", "--index", str(index), *(arg for subject in removed_subjects for arg in ("--subject", subject))],
         set(), removed),
        ("compact", ["compact", "--index", str(index)], set(), set()),
    ]
    report = {"references": len(rows), "removed_subjects": len(removed_subjects), "writers": []}
    from provenance import Engine

    stable = [row["path"] for row in rows[:half] if row["path"] not in removed]
    rng = random.Random(args.seed)
    with Engine.open(index, read_only=True) as reader:
        for name, arguments, appearing, disappearing in writers:
            report["writers"].append(run_writer(reader, name, arguments, index, stable, appearing, disappearing, rng))
            stable = sorted(set(stable) | appearing)
    report["wrong_or_failed"] = sum(writer["wrong"] + writer["failed"] for writer in report["writers"])
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    sys.exit(0 if report["wrong_or_failed"] == 0 and all(w["second_writer_refused"] is not False for w in report["writers"]) else 1)


def run_writer(reader, name, arguments, index, stable, appearing, disappearing, rng) -> dict:
    writer = subprocess.Popen(provenance_command(arguments), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    started = time.monotonic()
    counts = {"writer": name, "answers": 0, "wrong": 0, "failed": 0, "generations_seen": set(), "examples": []}
    refused = None
    changing = sorted(appearing | disappearing)
    batches_after = 0  # keep reading after the writer's last commit, to see the state it left
    while batches_after < 2:
        batches_after += writer.poll() is not None
        if refused is None:
            refused = second_writer_refused(index, reader.embedder)
        paths = rng.sample(stable, min(3, len(stable))) + rng.sample(changing, min(1, len(changing)))
        try:
            results = reader.query_batch([probe_of(path) for path in paths], top_k=3)
        except Exception as exc:  # a failed answer is what this script exists to catch
            counts["failed"] += len(paths)
            counts["examples"].append(f"{type(exc).__name__}: {exc}"[:300])
            continue
        counts["generations_seen"].add(reader._store.snapshot.generation)  # the state these answers came from
        for path, result in zip(paths, results):
            counts["answers"] += 1
            if not answer_is_consistent(path, result, path in stable):
                counts["wrong"] += 1
                counts["examples"].append(f"{Path(path).name}: {result.verdict} {result.best and result.best.path}")
    counts["writer_exit"] = writer.returncode
    counts["seconds"] = round(time.monotonic() - started, 1)
    counts["second_writer_refused"] = refused if refused is not None else "never saw the writer hold the lock"
    counts["generations_seen"] = len(counts["generations_seen"])
    return counts


def answer_is_consistent(path: str, result, always_present: bool) -> bool:
    is_copy_of_it = result.verdict == "copy" and result.best is not None and result.best.path == path
    if always_present:
        return is_copy_of_it
    # being added or removed: the state before or after, nothing else
    return is_copy_of_it or all(match.path != path or match.verdict != "copy" for match in result.matches)


def second_writer_refused(index: Path, embedder) -> bool | None:
    """None while no writer holds the index yet; else whether a second writer was refused at once."""
    import fcntl
    import os

    from provenance import Engine
    from provenance.errors import IndexLockedError

    descriptor = os.open(index / "write.lock", os.O_RDWR)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return None  # free: the writer has not opened the index yet (or is done)
    except BlockingIOError:
        pass
    finally:
        os.close(descriptor)
    started = time.monotonic()
    try:
        Engine.open(index, embedder).close()
    except IndexLockedError as exc:
        return "another writer" in str(exc) and time.monotonic() - started < 1.0
    return False

if __name__ == "__main__":
    main()
