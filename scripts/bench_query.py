"""End-to-end query latency (decode, views, embedding, search, PDQ, verification).

Usage: python scripts/bench_query.py --index DIR [--bench ../shared/bench] [--n 120] [--batch 16]
                                     [--recall] [--memory] [--cold]

Queries are the eval's seeded transformed copies plus negatives, half each. Prints p50/p95
for single queries and the per-image time of query_batch; with ``--recall``, recall@10 of
the index's search against exhaustive search on the queries' real view embeddings; with
``--memory``, the start of a fresh read-only query process (opening the index, its first
query, from a cold page cache: the index's files are evicted first) and its resident
memory per reference after 40 queries, and the index's size on disk. The index files that
queries scan are preloaded into the page cache first (``Engine.preload``), as a
long-running query service would; ``--cold`` evicts them instead. Asserts nothing about
time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

def bench_images(bench: str, n: int, seed: int) -> tuple[list, int]:
    from provenance.evaluation.queries import build_query, plan_queries, read_rows, resolve_families

    refs = read_rows(f"{bench}/refs.csv")
    negatives = read_rows(f"{bench}/negatives.csv", ("path", "kind"))
    specs = plan_queries(len(refs), negatives, resolve_families(None), seed, per_family=4)
    rng = np.random.default_rng(seed)
    positives = [spec for spec in specs if spec.positive]
    negative_specs = [spec for spec in specs if not spec.positive]
    half = n // 2
    picked = [positives[i] for i in rng.permutation(len(positives))[:half]]
    picked += [negative_specs[i] for i in rng.permutation(len(negative_specs))[: n - half]]
    return [build_query(spec, refs, negatives, seed) for spec in picked], sum(spec.positive for spec in picked)


def evict_from_page_cache(path: Path) -> None:
    import os

    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


def rss() -> dict[str, int]:
    """VmRSS, RssAnon and RssFile of this process, in bytes."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def memory_probe(index: str, bench: str, seed: int) -> None:
    """Run in a fresh process: start-up time and resident memory before and after opening the index read-only."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from provenance import Engine
    from provenance.embedders import create_embedder
    from provenance.index.manifest import read_manifest
    from provenance.search.pipeline import JUDGE_THREADS
    from provenance.verify.keypoints import extract_keypoints_with_mirror

    images, _ = bench_images(bench, 40, seed)
    stored = read_manifest(Path(index)).embedder
    embedder = create_embedder(stored["name"], **stored.get("options", {}))
    embedder.embed([Image.new("RGB", (300, 300), "gray")] * 8)  # model and activations in memory
    # SIFT's scratch memory, in the threads a single query verifies on (each holds its
    # own malloc arena): a per-process cost like the model's, not a per-reference one
    with ThreadPoolExecutor(JUDGE_THREADS) as pool:
        list(pool.map(extract_keypoints_with_mirror, images[:8]))
    before = rss()
    started = time.perf_counter()
    engine = Engine.open(index, embedder=embedder, read_only=True)
    opened = time.perf_counter() - started
    engine.query(images[0])
    first = time.perf_counter() - started
    for image in images:
        engine.query(image)
    after = rss()
    print(json.dumps({"before": before, "after": after, "references": engine.info().references,
                      "open_seconds": opened, "first_query_seconds": first}))


def recall_at_10(engine, images: list) -> tuple[float, float]:
    """(recall@10, top-1 agreement) of the index's vector search against exhaustive search
    over the stored vectors, on the first-stage views of the queries."""
    from provenance.imageio import load_image
    from provenance.regions import query_views
    from provenance.search.pipeline import QUERY_DECODE_SIZE

    views = [view.embedding_image for image in images for view in query_views(load_image(image, target_size=QUERY_DECODE_SIZE).image)]
    queries = engine.embedder.embed(views)
    snapshot = engine._store.snapshot  # benchmark: the store's own search against brute force
    _, found = snapshot.search_vectors(queries, 10)
    _, exact = exhaustive(snapshot, queries, 10)
    recall = [len(set(a[a >= 0]) & set(e[e >= 0])) / max(1, (e >= 0).sum()) for a, e in zip(found, exact)]
    return float(np.mean(recall)), float(np.mean(found[:, 0] == exact[:, 0]))


def exhaustive(snapshot, queries: np.ndarray, k: int, chunk: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` over every live vector, decoded in chunks (the reference for recall)."""
    from provenance.index.vectors import reference_ids

    best_scores = np.full((len(queries), k), -np.inf, np.float32)
    best_ids = np.full((len(queries), k), -1, np.int64)
    for segment in snapshot.segments:
        for start in range(0, len(segment.vector_ids), chunk):
            rows = np.arange(start, min(start + chunk, len(segment.vector_ids)))
            ids = segment.vector_ids[rows]
            scores = queries @ segment.decode_vectors(rows).T
            scores[:, np.isin(reference_ids(ids), snapshot.removed)] = -np.inf
            merged_scores = np.concatenate([best_scores, scores], axis=1)
            merged_ids = np.concatenate([best_ids, np.broadcast_to(ids, scores.shape)], axis=1)
            order = np.lexsort((merged_ids, -merged_scores), axis=1)[:, :k]
            best_scores = np.take_along_axis(merged_scores, order, axis=1)
            best_ids = np.take_along_axis(merged_ids, order, axis=1)
    return best_scores, best_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True)
    parser.add_argument("--bench", default="../shared/bench")
    parser.add_argument("--n", type=int, default=120)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--recall", action="store_true", help="recall@10 against exhaustive search")
    parser.add_argument("--memory", action="store_true", help="resident memory per reference, size on disk")
    parser.add_argument("--cold", action="store_true",
                        help="evict the files queries read from the page cache instead of preloading them")
    parser.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(args.index, args.bench, args.seed)
        return

    from provenance import Engine
    from provenance.ingest import available_cores

    images, positives = bench_images(args.bench, args.n, args.seed)
    engine = Engine.open(args.index, read_only=True)
    info = engine.info()
    if args.cold:
        for path in engine._store.files_read_per_query():  # benchmark: reaches into the store on purpose
            evict_from_page_cache(path)
        print("cold        the files queries read from disk were evicted from the page cache")
    else:
        started = time.perf_counter()
        loaded = engine.preload()
        print(f"preload     {loaded / 2**20:.0f} MiB in {time.perf_counter() - started:.1f} s (Engine.preload)")
    engine.query(images[0])  # load the model and the PDQ index before timing
    single = []
    cpu_started = time.process_time()
    for image in images:
        started = time.perf_counter()
        engine.query(image)
        single.append(time.perf_counter() - started)
    single_cpu = (time.process_time() - cpu_started) / len(images)
    started, cpu_started = time.perf_counter(), time.process_time()
    for start in range(0, len(images), args.batch):
        engine.query_batch(images[start : start + args.batch])
    batched = (time.perf_counter() - started) / len(images)
    batched_cpu = (time.process_time() - cpu_started) / len(images)
    single_ms = np.array(single) * 1000
    print(f"index       {args.index}: {info.references} references, {info.vectors} vectors, "
          f"{info.vector_index.get('segments')} segments, {info.vector_index.get('codes')} codes")
    print(f"queries     {len(images)} ({positives} transformed copies, rest negatives)")
    print(f"single      p50 {np.percentile(single_ms, 50):.0f} ms, p95 {np.percentile(single_ms, 95):.0f} ms, "
          f"mean {statistics.fmean(single_ms):.0f} ms")
    print(f"batch {args.batch:<4}  {batched * 1000:.0f} ms per image ({statistics.fmean(single) / batched:.2f}x single)")
    # CPU time of every thread: a batch near cores x wall is at the machine's floor for its work
    print(f"cpu         {single_cpu * 1000:.0f} ms per single query, {batched_cpu * 1000:.0f} ms per batched image "
          f"(all threads; {available_cores()} cores)")
    if args.recall:
        recall, top1 = recall_at_10(engine, images)
        print(f"recall@10   {recall:.4f} against exhaustive search (top-1 agreement {top1:.4f})")
    if args.memory:
        engine.close()  # its maps would keep the pages it touched cached (see report_memory)
        report_memory(args, info)


def report_memory(args, info) -> None:
    # A touch of a mapped file maps the whole page-cache folio it falls in, and a file just
    # written or read in sequence sits in large folios: evicted first, the probe's resident
    # memory is the pages its queries touch, whatever happened to the files before.
    for path in Path(args.index).rglob("*"):
        if path.is_file():
            evict_from_page_cache(path)
    command = [sys.executable, __file__, "--index", args.index, "--bench", args.bench, "--seed", str(args.seed), "--memory-probe"]
    probe = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    before, after, count = probe["before"], probe["after"], probe["references"]
    per_ref = {key: (after[key] - before[key]) / count for key in after}
    print(f"start       open {probe['open_seconds'] * 1000:.0f} ms, open + first query {probe['first_query_seconds'] * 1000:.0f} ms "
          "(fresh read-only process, model already loaded)")
    print(f"memory      read-only process after 40 queries: +{(after['VmRSS'] - before['VmRSS']) / 2**20:.0f} MiB "
          f"= {per_ref['VmRSS']:.0f} B/reference (anonymous {per_ref['RssAnon']:.0f}, file-backed {per_ref['RssFile']:.0f})")
    files = [path for path in Path(args.index).rglob("*") if path.is_file()]
    by_kind: dict[str, int] = {}
    for path in files:
        kind = path.suffix if path.parent.name == "segments" else path.name
        by_kind[kind] = by_kind.get(kind, 0) + path.stat().st_size
    total = sum(by_kind.values())
    print(f"disk        {total / 2**20:.1f} MiB = {total / count:.0f} B/reference; "
          + ", ".join(f"{kind} {size / count:.0f}" for kind, size in sorted(by_kind.items(), key=lambda item: -item[1])))


if __name__ == "__main__":
    main()
