"""Reindex throughput next to the bare model forward pass, on the same images, in one run.

Usage: python scripts/bench_reindex.py [--refs ../shared/bench/refs.csv] [--limit N] [--keep DIR] [--stages N]
                                      [--onnx] [--ray] [--prepare-alone]

Two bare-forward baselines, both on images decoded and preprocessed beforehand:
one model input per image (the whole image), and every input the index embeds per
image (the whole image and its indexed regions). Then the CPU cost of each stage of a
reference on one thread, over the first ``--stages`` images, and the throughput that
this machine's cores could reach with perfect overlap and no contention: the ceiling
for any scheduling of the same work. Prints figures; asserts nothing about time.

``--prepare-alone`` also runs the prepare stage alone over every reference (the decode
worker pool, no model), so the pipeline can be set against its slowest stage run alone.
The baseline runs the model in torch; ``--onnx`` adds the ONNX Runtime forward (the
default runtime where it is installed) beside torch's (same inputs, same run) and a full
reindex with it. ``--ray`` adds a full reindex on a local Ray cluster of this machine's
cores, with ONNX Runtime when ``--onnx`` is given, set against the local reindex of the
same runtime.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--refs", default="../shared/bench/refs.csv")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N references (0 = all)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--keep", help="build the index here and keep it (default: a temporary directory)")
    parser.add_argument("--stages", type=int, default=100, help="images for the per-stage costs (0 = skip)")
    parser.add_argument("--onnx", action="store_true", help="also the ONNX Runtime forward and a reindex with it")
    parser.add_argument("--ray", action="store_true", help="also a reindex on a local Ray cluster")
    parser.add_argument("--prepare-alone", action="store_true", help="also the prepare stage alone (worker pool, no model)")
    args = parser.parse_args()

    from provenance import Engine
    from provenance.embedders import create_embedder
    from provenance.imageio import load_image
    from provenance.ingest import Preparer
    from provenance.sources import scan_source

    records = scan_source(args.refs)
    source = args.refs
    if args.limit:
        records = records[: args.limit]
        manifest = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False)
        import json

        for record in records:
            manifest.write(json.dumps({"path": os.path.abspath(record.file)}) + "\n")
        manifest.close()
        source = manifest.name
    embedder = create_embedder("effnet-lite0", runtime="torch")

    # bare forward pass: images decoded and preprocessed beforehand, model only
    preparer = Preparer(embedder.preprocessing)
    images = [load_image(r.file).image for r in records]
    whole = np.stack([embedder.preprocessing.to_array(image) for image in images])
    every_region = np.stack([array for image in images for array in preparer.region_arrays(image).values()])
    embedder.embed_arrays(whole[: args.batch])  # load and warm up
    forward_rate = _forward_rate(embedder, whole, args.batch)
    regions_per_image = len(every_region) // len(whole)
    region_forward_rate = _forward_rate(embedder, every_region, args.batch * regions_per_image) / regions_per_image
    onnx = None
    if args.onnx:
        onnx = create_embedder("effnet-lite0", runtime="onnx")
        onnx.embed_arrays(whole[: args.batch])  # export (or load), check against torch, warm up
        onnx_rate = _forward_rate(onnx, every_region, args.batch * regions_per_image) / regions_per_image
        torch_again = _forward_rate(embedder, every_region, args.batch * regions_per_image) / regions_per_image
        sample = every_region[: 8 * regions_per_image]
        cosines = (embedder.embed_arrays(sample) * onnx.embed_arrays(sample)).sum(axis=1)
        print(f"forward, every input: torch {region_forward_rate:.1f} then {torch_again:.1f} img/s, "
              f"ONNX Runtime {onnx_rate:.1f} img/s ({onnx_rate / torch_again:.2f}x); min cosine to torch {cosines.min():.7f}")
    if args.prepare_alone:
        prepare_rate = _prepare_alone_rate(records, preparer)
        print(f"prepare alone     {prepare_rate:.1f} img/s (decode worker pool, every core, no model)")

    summary, wall = _timed_reindex(Engine, source, embedder, args.keep)
    reindex_rate = summary.added / wall
    print(f"references        {len(records)} (added {summary.added}, failed {summary.failed})")
    print(f"bare forward      {forward_rate:.1f} img/s, whole image only (preprocessed in memory, {args.batch} per call)")
    print(f"bare forward      {region_forward_rate:.1f} img/s, all {regions_per_image} indexed inputs per image")
    print(f"full reindex      {reindex_rate:.1f} img/s ({wall:.1f} s wall: read, hash, decode, regions, keypoints, "
          f"PDQ, embed, index, save)")
    print(f"ratio             {reindex_rate / forward_rate:.2f} of the whole-image forward, "
          f"{reindex_rate / region_forward_rate:.2f} of the forward over every indexed input")
    if args.prepare_alone:
        slowest = min(prepare_rate, region_forward_rate)
        print(f"stage ceiling     {slowest:.1f} img/s (the slower of prepare alone and the forward alone); "
              f"the reindex runs at {reindex_rate / slowest:.2f} of it")
    runtime, local_rate = "torch", reindex_rate
    if onnx is not None:
        onnx_summary, onnx_wall = _timed_reindex(Engine, source, onnx, None)
        runtime, local_rate = "onnx", onnx_summary.added / onnx_wall
        print(f"reindex, ONNX     {local_rate:.1f} img/s ({onnx_wall:.1f} s): {local_rate / reindex_rate:.2f}x the torch reindex")
        if args.prepare_alone:
            slowest = min(prepare_rate, onnx_rate)
            print(f"stage ceiling     {slowest:.1f} img/s with ONNX Runtime; its reindex runs at {local_rate / slowest:.2f} of it")
    if args.ray:
        from provenance.distributed import RayRunner
        from provenance.ingest import available_cores

        # by name and options: the actors build their own model from what the index records
        ray_summary, ray_wall = _timed_reindex(Engine, source, "effnet-lite0", None, RayRunner(None, num_cpus=available_cores()),
                                               options={"runtime": runtime})
        print(f"reindex, Ray      {ray_summary.added / ray_wall:.1f} img/s ({ray_wall:.1f} s, {runtime}, local cluster of "
              f"{available_cores()} cores, start-up included): {ray_summary.added / ray_wall / local_rate:.2f} of the local "
              f"reindex with {runtime}")
    if args.stages:
        report_stages(stage_costs(embedder, preparer, records[: args.stages], args.batch), region_forward_rate)


def _timed_reindex(Engine, source, embedder, keep, runner=None, options=None):
    with tempfile.TemporaryDirectory() as scratch:
        engine = Engine.create(keep or scratch, embedder, embedder_options=options, overwrite=bool(keep))
        started = time.perf_counter()
        summary = engine.reindex(source, runner=runner)
        wall = time.perf_counter() - started
        engine.close()
    return summary, wall


def _prepare_alone_rate(records, preparer) -> float:
    from provenance.ingest import available_cores, prepare_all

    started = time.perf_counter()
    count = sum(1 for _ in prepare_all(records, preparer, workers=available_cores()))
    return count / (time.perf_counter() - started)


def stage_costs(embedder, preparer, records, batch: int) -> dict[str, float]:
    """Seconds per reference of each stage, on one thread (torch and OpenCV limited to one)."""
    import cv2
    import torch

    from provenance.imageio import load_image, read_source_bytes
    from provenance.verify.keypoints import extract_keypoints
    from provenance.verify.pdq import pdq_hash

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    costs: dict[str, float] = {}

    def timed(stage, work):
        started = time.perf_counter()
        outcome = work()
        costs[stage] = costs.get(stage, 0.0) + (time.perf_counter() - started) / len(records)
        return outcome

    inputs = []
    for record in records:
        data = timed("read", lambda: read_source_bytes(record.file))
        image = timed("decode", lambda: load_image(data, target_size=600).image)
        inputs.extend(timed("region crops", lambda: preparer.region_arrays(image)).values())
        timed("PDQ", lambda: pdq_hash(image, max_side=512))
        keypoints = timed("SIFT keypoints", lambda: extract_keypoints(image))
        timed("keypoint serialisation", keypoints.to_bytes)
    arrays = np.stack(inputs)
    timed("forward, every input, 1 thread", lambda: _forward_rate(embedder, arrays, batch))
    torch.set_num_threads(threads)
    return costs


def report_stages(costs: dict[str, float], region_forward_rate: float) -> None:
    from provenance.ingest import available_cores

    cores = available_cores()
    for stage, seconds in costs.items():
        print(f"  {stage:32s} {1000 * seconds:6.1f} ms/ref")
    total = sum(costs.values())
    ceiling = cores / total
    forward = costs["forward, every input, 1 thread"]
    budget = cores / (0.9 * region_forward_rate) - forward
    print(f"ceiling           {ceiling:.1f} img/s on {cores} cores, perfect overlap, no contention: "
          f"{ceiling / region_forward_rate:.2f} of the forward over every indexed input")
    # Threads on these cores slow each other (caches, memory bandwidth, the host), so the
    # cores add up to less than their count. If other work beside the forward gains what
    # the forward gains from more threads, the ceiling ratio is the forward's CPU share.
    print(f"forward share     {forward / total:.2f} of the CPU per reference; the ceiling ratio when the cores add up "
          f"as they do for the forward itself ({forward * region_forward_rate:.2f}x one thread on {cores})")
    print(f"for 0.9           everything but the forward would have to cost {1000 * budget:.1f} ms/ref of CPU "
          f"(it costs {1000 * (total - forward):.1f})")


def _forward_rate(embedder, arrays, batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(arrays), batch):
        embedder.embed_arrays(arrays[start : start + batch])
    return len(arrays) / (time.perf_counter() - started)


if __name__ == "__main__":
    main()
