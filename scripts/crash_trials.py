"""kill -9 during reindex, remove and compact; then check the index and finish the job.

    python scripts/crash_trials.py --trials 200 --out out/crash      # the full run
    python scripts/crash_trials.py --trials 20 --images 24            # the CI-sized form

Each trial starts from the same committed index (references A), then runs one writer as
``provenance`` would (a reindex adding references B, a removal of one subject, or a
compaction) in a child process and kills it with SIGKILL:

* at a named moment, half the trials: before or after decoding, embedding, training the
  codecs, writing a segment (or with the segment's data file cut to half), the SQLite
  commit, the manifest write (or half-way), deleting stale files, or a merge. The child
  wraps that function and kills itself on its n-th call;
* at a random time, the other half, from outside, like an operator or the OOM killer.

After the kill the index must open, hold one committed state (for a reindex: A plus a
prefix of B's checkpoints; for a removal: before or after it; for a compaction: A), have
every reference's vectors and stored data, and answer probes of its references
(a copy is found, removed ones are not). Then the job is run again to completion and
the index must hold exactly the expected references, none twice.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

#: (module, attribute path, what the moment is); the child kills itself on the n-th call.
MOMENTS = {
    "decode": ("provenance.ingest", "Preparer.prepare"),
    "embed": ("provenance.embedders.effnet", "EfficientNetLite0Embedder.embed_arrays"),
    "train-codecs": ("provenance.index.writing", "train_codecs"),
    "segment-write": ("provenance.index.segments", "SegmentWriter.write"),
    "sqlite-commit": ("provenance.index.metadata", "MetadataStore.commit"),
    "manifest-write": ("provenance.index.manifest", "atomic_write_bytes"),
    "stale-delete": ("provenance.index.store", "IndexStore._delete_stale_files"),
    "merge": ("provenance.index.writing", "merge"),
    "remove-rows": ("provenance.index.store", "IndexStore.remove_references"),
}
#: moments that can also be torn: half the new file written, the kill before its commit
TORN = {"segment-write", "manifest-write"}
#: References at which the trial indexes train their codecs (the reindex of B crosses it).
TRAIN_AT = 30
OPERATIONS = ("reindex", "remove", "compact")
REMOVED_SUBJECT = "subject-1"


def synthetic(seed: int, size=(288, 216)) -> Image.Image:
    rng = np.random.default_rng(seed)
    height, width = size[1], size[0]
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([np.sin(x / rng.uniform(7, 40) + rng.uniform(0, 6)) * np.cos(y / rng.uniform(7, 40))
                     for _ in range(3)], axis=-1)
    array = (base * 0.5 + 0.5) * rng.uniform(60, 230, 3) + rng.normal(0, 6, (height, width, 3))
    image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "RGB")
    for _ in range(12):
        x0, y0 = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 20))
        patch = Image.new("RGB", (int(rng.integers(10, 90)), int(rng.integers(10, 90))),
                          tuple(int(c) for c in rng.integers(0, 256, 3)))
        image.paste(patch, (x0, y0))
    return image


def write_references(root: Path, count: int) -> tuple[Path, Path, list[dict]]:
    """Images and two manifests: A (the committed start) and A+B (the reindex to kill)."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for number in range(2 * count):
        path = images / f"ref_{number:03d}.jpg"
        synthetic(number).save(path, quality=90)
        rows.append({"path": str(path), "subject": f"subject-{number % 4}"})
    first, both = root / "a.jsonl", root / "ab.jsonl"
    first.write_text("".join(json.dumps(row) + "\n" for row in rows[:count]))
    both.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return first, both, rows


def provenance_command(arguments: list[str]) -> list[str]:
    # the trial indexes train their codecs at TRAIN_AT references instead of 200
    setup = f"import provenance.index.codecs as c; c.MIN_TRAIN_REFERENCES = {TRAIN_AT}"
    return [sys.executable, "-c", f"import sys; {setup}; from provenance.cli import main; sys.argv[0] = 'provenance'; main()",
            *arguments]


def operation_arguments(operation: str, index: Path, both: Path) -> list[str]:
    if operation == "reindex":
        return ["reindex", str(both), "--index", str(index), "--quiet", "--workers", "0", "--checkpoint-every", "4"]
    if operation == "remove":
        return ["remove", "--index", str(index), "--subject", REMOVED_SUBJECT]
    return ["compact", "--index", str(index)]


# -- the child: a provenance command that kills itself at a named moment -------------------
def run_child(moment: str, nth: int, when: str, arguments: list[str]) -> None:
    import importlib

    module_name, attribute = MOMENTS[moment]
    module = importlib.import_module(module_name)
    owner, name = (module, attribute) if "." not in attribute else (getattr(module, attribute.split(".")[0]), attribute.split(".")[1])
    original = getattr(owner, name)
    calls = {"n": 0}
    after, torn = when in ("after", "torn"), when == "torn"

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == nth and (not after or moment == "manifest-write" and torn):
            if moment == "manifest-write" and torn:  # the temporary file half written, never renamed
                path, data = args[0], args[1]
                path.with_name(f".{path.name}.tmp-{os.getpid()}").write_bytes(data[: len(data) // 2])
            die()
        result = original(*args, **kwargs)
        if calls["n"] == nth:
            if moment == "segment-write" and torn:  # the new segment's data file half on disk, never committed
                data = args[0].directory / f"{args[0].name}.dat"
                data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
            die()
        return result

    setattr(owner, name, wrapped)
    import provenance.index.codecs as codecs

    codecs.MIN_TRAIN_REFERENCES = TRAIN_AT
    from provenance.cli import main

    sys.argv = ["provenance", *arguments]
    main()


# -- the driver --------------------------------------------------------------------------
class Checker:
    """Opens trial indexes read-only with one shared model and checks what they hold."""

    def __init__(self, rows: list[dict]):
        from provenance.embedders import create_embedder

        self.embedder = create_embedder("effnet-lite0")
        self.rows = rows
        self.probes = {row["path"]: _probe(Image.open(row["path"]).convert("RGB")) for row in rows}
        self.reliable = set(self.probes)

    def calibrate(self, complete: Path) -> None:
        """Probe only references the engine finds in the complete index: the trials judge
        consistency after a kill, not retrieval (a miss there is not the kill's doing)."""
        from provenance import Engine

        paths = sorted(self.probes)
        with Engine.open(complete, self.embedder, read_only=True) as engine:
            results = engine.query_batch([self.probes[path] for path in paths], top_k=3)
        self.reliable = {path for path, result in zip(paths, results)
                         if result.verdict == "copy" and result.best.path == path}

    def check(self, index: Path, allowed_states: list[set[str]], rng: random.Random, prefix_of: list[str] | None) -> dict:
        from provenance import Engine
        from provenance.index.vectors import reference_ids, region_numbers

        with Engine.open(index, self.embedder, read_only=True) as engine:
            store = engine._store
            references = store.metadata.get(range(10_000))
            paths = [ref.path for ref in references.values()]
            problems = []
            if len(paths) != len(set(paths)):
                problems.append("a path is indexed twice")
            held = set(paths)
            if prefix_of is not None:
                base, extra = allowed_states[0], [path for path in prefix_of if path not in allowed_states[0]]
                added = held - base
                if not base <= held or added != set(extra[: len(added)]):
                    problems.append(f"holds {len(held)} references, not the start plus a prefix of the new ones")
            elif held not in allowed_states:
                problems.append(f"holds {len(held)} references, no committed state")
            snapshot = store.snapshot
            ids, _ = snapshot.vectors()
            if len(ids) != snapshot.vector_count:
                problems.append(f"the segments hold {len(ids)} live vectors, the commit says {snapshot.vector_count}")
            # every reference has its whole-image vector and at most one per region (a covered crop has none)
            owners, regions = reference_ids(ids), region_numbers(ids)
            if set(owners[regions == 0].tolist()) != set(references) or len(ids) > len(held) * len(engine.regions):
                problems.append(f"{snapshot.vector_count} vectors for {len(held)} references")
            for ref_id in references:
                data = snapshot.reference_data(ref_id)
                if data is None or not data["features"] or not data["thumb"]:
                    problems.append(f"reference {ref_id} lacks its stored data")
            problems += self._probe_answers(engine, held, rng)
        return {"references": len(held), "problems": problems}

    def _probe_answers(self, engine, held: set[str], rng: random.Random) -> list[str]:
        probed = sorted(held & self.reliable)
        present = rng.sample(probed, min(3, len(probed)))
        absent = rng.sample(sorted(set(self.probes) - held), min(2, len(set(self.probes) - held)))
        results = engine.query_batch([self.probes[path] for path in present + absent], top_k=3)
        problems = []
        for path, result in zip(present, results):
            if result.verdict != "copy" or result.best.path != path:
                problems.append(f"probe of {Path(path).name} answered {result.verdict} {result.best and result.best.path}")
        for path, result in zip(absent, results[len(present):]):
            if any(match.path == path for match in result.matches):
                problems.append(f"{Path(path).name} is not indexed but was matched")
        return problems


def _probe(image: Image.Image) -> Image.Image:
    width, height = image.size
    return image.crop((10, 8, width - 10, height - 8)).resize((width * 3 // 4, height * 3 // 4))


def timed_kill(command: list[str], delay: float) -> bool:
    """Run ``command`` and SIGKILL it after ``delay`` seconds; True when it was killed."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        process.wait(delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--images", type=int, default=24, help="References in A (B has as many).")
    parser.add_argument("--out", type=Path, default=Path("out/crash"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", nargs=3, metavar=("MOMENT", "NTH", "AFTER"), help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child:
        run_child(args.child[0], int(args.child[1]), args.child[2], rest[1:] if rest[:1] == ["--"] else rest)
        return
    report = run_trials(args)
    print(json.dumps({key: value for key, value in report.items() if key != "trials"}, indent=2))
    sys.exit(0 if report["inconsistent"] == 0 else 1)


def run_trials(args) -> dict:
    rng = random.Random(args.seed)
    args.out = args.out.resolve()  # the manifests name images by absolute path
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    first, both, rows = write_references(args.out, args.images)
    template = args.out / "template"
    subprocess.run(provenance_command(["reindex", str(first), "--index", str(template), "--quiet", "--workers", "0"]),
                   check=True, stdout=subprocess.DEVNULL)
    checker = Checker(rows)
    start = {row["path"] for row in rows[: args.images]}
    if checker.check(template, [start], rng, None)["problems"]:
        raise SystemExit(f"the starting index at {template} is not as built; nothing to try")
    full = {row["path"] for row in rows}
    removed = {row["path"] for row in rows[: args.images] if row["subject"] == REMOVED_SUBJECT}
    durations = {}
    for operation in OPERATIONS:
        durations[operation] = _duration(operation, template, both, args.out)
        if operation == "reindex":  # the scratch copy now holds A and B
            checker.calibrate(args.out / "timing")
    trials = []
    for number in range(args.trials):
        operation = OPERATIONS[number % 3]
        trial = _one_trial(number, operation, rng, args.out, template, both, durations[operation], checker,
                           start, full, removed, [row["path"] for row in rows])
        trials.append(trial)
        print(json.dumps(trial), file=sys.stderr, flush=True)
    report = {
        "trials": trials, "count": len(trials),
        "killed": sum(trial["killed"] for trial in trials),
        "inconsistent": sum(bool(trial["after_kill"]["problems"] or trial["after_rerun"]["problems"]) for trial in trials),
        "by_moment": {},
        "seconds_per_operation": {key: round(value, 2) for key, value in durations.items()},
        "probed_references": f"{len(checker.reliable)} of {len(checker.probes)}",
    }
    for trial in trials:
        counts = report["by_moment"].setdefault(f"{trial['operation']}:{trial['moment']}", [0, 0])
        counts[0] += 1
        counts[1] += int(trial["killed"])
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def _duration(operation: str, template: Path, both: Path, out: Path) -> float:
    scratch = out / "timing"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(template, scratch)
    started = time.monotonic()
    subprocess.run(provenance_command(operation_arguments(operation, scratch, both)), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def _one_trial(number, operation, rng, out, template, both, duration, checker, start, full, removed, order) -> dict:
    index = out / "trial"
    shutil.rmtree(index, ignore_errors=True)
    shutil.copytree(template, index)
    arguments = operation_arguments(operation, index, both)
    if number % 2 == 0:
        candidates = {"reindex": ["decode", "embed", "train-codecs", "segment-write", "sqlite-commit", "manifest-write",
                                  "stale-delete", "merge"],
                      "remove": ["remove-rows", "sqlite-commit", "manifest-write", "stale-delete"],
                      "compact": ["merge", "segment-write", "sqlite-commit", "manifest-write", "stale-delete"]}
        moment = rng.choice(candidates[operation])
        nth = rng.randint(1, 3) if operation == "reindex" else 1
        when = rng.choice(["before", "after", "torn"] if moment in TORN else ["before", "after"])
        process = subprocess.run([sys.executable, __file__, "--child", moment, str(nth), when, "--", *arguments],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        killed = process.returncode == -signal.SIGKILL
        label = f"{moment}#{nth}:{when}"
    else:
        delay = rng.uniform(0.2, duration * 1.05)
        killed = timed_kill(provenance_command(arguments), delay)
        label = f"timed:{delay:.1f}s"
        moment = "timed"
    states = {"reindex": [start], "remove": [start, start - removed], "compact": [start]}[operation]
    after_kill = checker.check(index, states, rng, order if operation == "reindex" else None)
    rerun = subprocess.run(provenance_command(arguments), capture_output=True, text=True)
    expected = {"reindex": full, "remove": start - removed, "compact": start}[operation]
    after_rerun = checker.check(index, [expected], rng, None)
    if rerun.returncode != 0 or after_rerun["problems"]:
        after_rerun["problems"].append(f"rerun exited {rerun.returncode}: {rerun.stdout[-200:]} {rerun.stderr[-600:]}")
    return {"trial": number, "operation": operation, "moment": moment, "at": label, "killed": killed,
            "after_kill": after_kill, "after_rerun": after_rerun}


if __name__ == "__main__":
    main()
