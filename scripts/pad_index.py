"""Copy an index and pad it with synthetic distractor references, for scale benchmarks.

Usage: python scripts/pad_index.py --index DEV_INDEX --out DIR --refs 100000 [--seed 0]

Distractor vectors are drawn to resemble the real ones: each is a Dirichlet mix of three
real vectors of the same region, with multiplicative log-normal noise (GeM features are
non-negative), re-normalised. The script prints how close distractors come to their
nearest real vector next to how close real vectors come to each other, so the
resemblance can be checked. Each distractor gets a metadata row and a PDQ hash (a real
hash with a third of its bits flipped: never a match, but searched like one); it gets
no keypoints (bench_query lends it a real reference's). The padded index is built the
way a growing index switches: IVF-PQ trained on the collection's own vectors.
The save that follows applies the index's own size policy, so a padding that stays
below half the switch size (provenance.index.vectors) ends up exact again.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np

NOISE_SIGMA = 0.6
CHUNK_REFS = 20000


def synthetic_vectors(real: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` unit vectors mixed from rows of ``real`` (one region's vectors)."""
    parents = rng.integers(0, len(real), size=(count, 3))
    weights = rng.dirichlet(np.ones(3), size=count).astype(np.float32)
    mixed = np.einsum("np,npd->nd", weights, real[parents])
    mixed *= np.exp(NOISE_SIGMA * rng.standard_normal(mixed.shape, dtype=np.float32))
    return (mixed / np.linalg.norm(mixed, axis=1, keepdims=True)).astype(np.float32)


def nearest_real(sample: np.ndarray, real: np.ndarray, exclude_self: bool) -> np.ndarray:
    similarity = sample @ real.T
    if exclude_self:
        np.fill_diagonal(similarity, -1.0)
    return similarity.max(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True, help="a built index of real references (exact)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--refs", type=int, required=True, help="total references after padding")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from provenance.index.store import PDQ_BLOB, IndexStore
    from provenance.index.vectors import REGION_BITS, build_approximate, vector_ids

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(args.index, out)
    store = IndexStore.open(out)
    ids, vectors = store.vectors.contents()
    regions = ids & ((1 << REGION_BITS) - 1)
    region_numbers = sorted(set(regions.tolist()))
    real_count = store.metadata.count()
    pad = args.refs - real_count
    if pad <= 0:
        raise SystemExit(f"{args.index} already holds {real_count} references")
    rng = np.random.default_rng(args.seed)
    whole = vectors[regions == 0]
    probe = synthetic_vectors(whole, 500, rng)
    print(f"nearest-real cosine, median / p95: distractors {np.median(nearest_real(probe, whole, False)):.3f} / "
          f"{np.percentile(nearest_real(probe, whole, False), 95):.3f}; real vs other real "
          f"{np.median(nearest_real(whole, whole, True)):.3f} / {np.percentile(nearest_real(whole, whole, True), 95):.3f}")

    real_pdq = [blob[:32] for _, blob in store.metadata.blobs(PDQ_BLOB)]
    first_id = store.metadata.next_id()
    started = time.perf_counter()

    def chunks():
        yield ids, vectors
        for start in range(0, pad, CHUNK_REFS):
            refs = np.arange(first_id + start, first_id + min(pad, start + CHUNK_REFS), dtype=np.int64)
            block = np.stack([synthetic_vectors(vectors[regions == r], len(refs), rng) for r in region_numbers], axis=1)
            region_ids = np.broadcast_to(np.array(region_numbers), (len(refs), len(region_numbers)))
            yield vector_ids(np.repeat(refs, len(region_numbers)), region_ids.ravel()), block.reshape(-1, vectors.shape[1])
            _add_metadata(store, refs, real_pdq, rng)
            print(f"  {start + len(refs)}/{pad} distractors ({time.perf_counter() - started:.0f} s)", flush=True)

    total_vectors = len(ids) + pad * len(region_numbers)
    store.vectors = build_approximate(vectors.shape[1], out, "rerank-padded", chunks(), total_vectors)
    store.save()
    print(f"padded {out}: {store.metadata.count()} references, {store.vectors.ntotal} vectors, "
          f"{store.vectors.describe().get('factory', store.vectors.kind)}, built in {time.perf_counter() - started:.0f} s")


def _add_metadata(store, refs: np.ndarray, real_pdq: list[bytes], rng) -> None:
    from provenance.index.metadata import Reference
    from provenance.index.store import PDQ_BLOB

    now = time.time()
    store.metadata.insert_many(
        Reference(int(ref_id), f"synthetic-{ref_id}", f"synthetic/{ref_id}", None, None, "synthetic-distractor",
                       250, 250, now, {}) for ref_id in refs)
    for ref_id in refs:
        base = np.frombuffer(real_pdq[int(rng.integers(len(real_pdq)))], np.uint8)
        flips = np.packbits(rng.random(256) < 1 / 3)
        store.metadata.put_blob(int(ref_id), PDQ_BLOB, (base ^ flips).tobytes() + bytes([100]))


if __name__ == "__main__":
    main()
