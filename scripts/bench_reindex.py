"""Reindex throughput next to the bare model forward pass, on the same images, in one run.

Usage: python scripts/bench_reindex.py [--refs ../shared/bench/refs.csv] [--limit N] [--keep DIR]

Two bare-forward baselines, both on images decoded and preprocessed beforehand:
one model input per image (the whole image), and every input the index embeds per
image (the whole image and its indexed regions). Prints figures; asserts nothing about time.
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
    embedder = create_embedder("effnet-lite0")

    # bare forward pass: images decoded and preprocessed beforehand, model only
    preparer = Preparer(embedder.preprocessing)
    images = [load_image(r.file).image for r in records]
    whole = np.stack([embedder.preprocessing.to_array(image) for image in images])
    every_region = np.stack([array for image in images for array in preparer.region_arrays(image).values()])
    embedder.embed_arrays(whole[: args.batch])  # load and warm up
    forward_rate = _forward_rate(embedder, whole, args.batch)
    regions_per_image = len(every_region) // len(whole)
    region_forward_rate = _forward_rate(embedder, every_region, args.batch * regions_per_image) / regions_per_image

    with tempfile.TemporaryDirectory() as scratch:
        engine = Engine.create(args.keep or scratch, embedder, overwrite=bool(args.keep))
        started = time.perf_counter()
        summary = engine.reindex(source)
        wall = time.perf_counter() - started
        engine.close()
    reindex_rate = summary.added / wall
    print(f"references        {len(records)} (added {summary.added}, failed {summary.failed})")
    print(f"bare forward      {forward_rate:.1f} img/s, whole image only (preprocessed in memory, {args.batch} per call)")
    print(f"bare forward      {region_forward_rate:.1f} img/s, all {regions_per_image} indexed inputs per image")
    print(f"full reindex      {reindex_rate:.1f} img/s ({wall:.1f} s wall: read, hash, decode, regions, keypoints, "
          f"PDQ, embed, index, save)")
    print(f"ratio             {reindex_rate / forward_rate:.2f} of the whole-image forward, "
          f"{reindex_rate / region_forward_rate:.2f} of the forward over every indexed input")


def _forward_rate(embedder, arrays, batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(arrays), batch):
        embedder.embed_arrays(arrays[start : start + batch])
    return len(arrays) / (time.perf_counter() - started)


if __name__ == "__main__":
    main()
