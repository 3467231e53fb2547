"""Reindex throughput next to the bare model forward pass, on the same images, in one run.

Usage: python scripts/bench_reindex.py [--refs ../shared/bench/refs.csv] [--limit N]
Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--refs", default="../shared/bench/refs.csv")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N references (0 = all)")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    from provenance import Engine
    from provenance.embedders import create_embedder
    from provenance.imageio import load_image
    from provenance.sources import scan_source

    records = scan_source(args.refs)
    source = args.refs
    if args.limit:
        records = records[: args.limit]
        manifest = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False)
        import json

        for record in records:
            manifest.write(json.dumps({"path": record.file}) + "\n")
        manifest.close()
        source = manifest.name
    embedder = create_embedder("effnet-lite0")

    # bare forward pass: images decoded and preprocessed beforehand, model only
    arrays = np.stack([embedder.preprocessing.to_array(load_image(r.file).image) for r in records])
    embedder.embed_arrays(arrays[: args.batch])  # load and warm up
    started = time.perf_counter()
    for start in range(0, len(arrays), args.batch):
        embedder.embed_arrays(arrays[start : start + args.batch])
    forward_rate = len(arrays) / (time.perf_counter() - started)

    with tempfile.TemporaryDirectory() as directory:
        engine = Engine.create(directory, embedder)
        started = time.perf_counter()
        summary = engine.reindex(source)
        wall = time.perf_counter() - started
        engine.close()
    reindex_rate = summary.added / wall
    print(f"references        {len(records)} (added {summary.added}, failed {summary.failed})")
    print(f"bare forward      {forward_rate:.1f} img/s (batch {args.batch}, preprocessed in memory)")
    print(f"full reindex      {reindex_rate:.1f} img/s ({wall:.1f} s wall: read, hash, decode, embed, index, save)")
    print(f"ratio             {reindex_rate / forward_rate:.2f}")


if __name__ == "__main__":
    main()
