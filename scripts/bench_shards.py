"""Shards on this machine: build time, merge time, memory per reference, query latency by shard count.

    python scripts/bench_shards.py --refs ../shared/bench/refs.csv --out out/shards

Builds 4 shards of the references (``reindex --shard I/4``, one after another), merges them
pairwise into 2 and all into 1 (copies, no embedding), then queries the same crops of
references through 1, 2 and 4 shards (one process, read-only, warm), checking that the
answers are the same. Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import statistics
import time
from pathlib import Path

from PIL import Image


def folder_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--refs", type=Path, default=Path("../shared/bench/refs.csv"))
    parser.add_argument("--out", type=Path, default=Path("out/shards"))
    parser.add_argument("--queries", type=int, default=48)
    args = parser.parse_args()

    from provenance import Engine
    from provenance.shards import ShardedIndex, merge_shards
    from provenance.sources import scan_source

    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    figures: dict = {}
    started = time.perf_counter()
    shards = []
    for shard in range(4):
        directory = args.out / f"shard{shard}"
        with Engine.create(directory) as engine:
            engine.reindex(args.refs, shard=(shard, 4))
        shards.append(directory)
    figures["build_4_shards_s"] = round(time.perf_counter() - started, 1)
    timings = {}
    for name, parts in (("half0", shards[:2]), ("half1", shards[2:]), ("merged", shards)):
        started = time.perf_counter()
        merge_shards(parts, args.out / name)
        timings[name] = round(time.perf_counter() - started, 1)
    figures["merge_s"] = timings
    references = len(scan_source(args.refs))
    figures["disk_bytes_per_reference"] = round(folder_bytes(args.out / "merged") / references)
    records = random.Random(0).sample(scan_source(args.refs), args.queries)
    queries = []
    for record in records:
        image = Image.open(record.file).convert("RGB")
        width, height = image.size
        queries.append(image.crop((width // 10, height // 10, width - width // 10, height - height // 8)))
    layouts = {1: [args.out / "merged"], 2: [args.out / "half0", args.out / "half1"], 4: shards}
    answers = {}
    for count, directories in layouts.items():
        index = Engine.open(directories[0], read_only=True) if count == 1 else ShardedIndex(directories)
        with index:
            index.query(queries[0])  # load the model and warm the files
            latencies, found = [], []
            for query in queries:
                begun = time.perf_counter()
                result = index.query(query, top_k=5)
                latencies.append(time.perf_counter() - begun)
                found.append([(m.path, m.verdict, round(m.score, 5)) for m in result.matches])
        answers[count] = found
        figures[f"query_{count}_shards_ms"] = {"p50": round(1000 * statistics.median(latencies), 1),
                                               "mean": round(1000 * statistics.mean(latencies), 1),
                                               "max": round(1000 * max(latencies), 1)}
    figures["answers_equal_across_layouts"] = answers[1] == answers[2] == answers[4]
    figures["differing_queries"] = sum(1 for a, b in zip(answers[1], answers[4]) if a != b)
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    figures["references"] = references
    (args.out / "figures.json").write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
