"""End-to-end query latency (decode, views, embedding, search, PDQ, verification).

Usage: python scripts/bench_query.py --index DIR [--bench ../shared/bench] [--n 120] [--batch 16]
Queries are the eval's seeded transformed copies plus negatives; prints p50/p95 for single
queries and the per-image time of query_batch. Asserts nothing about time.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", required=True)
    parser.add_argument("--bench", default="../shared/bench")
    parser.add_argument("--n", type=int, default=120)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    import numpy as np

    from provenance import Engine
    from provenance.evaluation.queries import build_query, plan_queries, read_rows, resolve_families

    refs = read_rows(f"{args.bench}/refs.csv")
    negatives = read_rows(f"{args.bench}/negatives.csv", ("path", "kind"))
    specs = plan_queries(len(refs), negatives, resolve_families(None), args.seed, per_family=4)
    rng = np.random.default_rng(args.seed)
    positives = [spec for spec in specs if spec.positive]
    negative_specs = [spec for spec in specs if not spec.positive]
    half = args.n // 2
    picked = [positives[i] for i in rng.permutation(len(positives))[:half]]
    picked += [negative_specs[i] for i in rng.permutation(len(negative_specs))[: args.n - half]]
    images = [build_query(spec, refs, negatives, args.seed) for spec in picked]

    engine = Engine.open(args.index)
    engine.query(images[0])  # load the model and the PDQ index before timing
    single = []
    for image in images:
        started = time.perf_counter()
        engine.query(image)
        single.append(time.perf_counter() - started)
    started = time.perf_counter()
    for start in range(0, len(images), args.batch):
        engine.query_batch(images[start : start + args.batch])
    batched = (time.perf_counter() - started) / len(images)
    single_ms = np.array(single) * 1000
    print(f"index       {args.index}: {engine.info().references} references")
    print(f"queries     {len(images)} ({sum(s.positive for s in picked)} transformed copies, rest negatives)")
    print(f"single      p50 {np.percentile(single_ms, 50):.0f} ms, p95 {np.percentile(single_ms, 95):.0f} ms, "
          f"mean {statistics.fmean(single_ms):.0f} ms")
    print(f"batch {args.batch:<4}  {batched * 1000:.0f} ms per image ({statistics.fmean(single) / batched:.2f}x single)")


if __name__ == "__main__":
    main()
