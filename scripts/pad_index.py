"""Copy an index and pad it with synthetic distractor references, for scale benchmarks.

Usage: python scripts/pad_index.py --index DEV_INDEX --out DIR --refs 1000000 [--seed 0]

Distractors cost what real references cost on every path a query takes:

* **vectors**, one per indexed region (a region that real references lack, such as a centred
  crop a face square covers, is left out of as many distractors in proportion): each a
  Dirichlet mix of three real vectors of the same region with multiplicative log-normal
  noise (GeM features are non-negative),
  re-normalised. The script prints how close distractors come to their nearest real vector
  next to how close real vectors come to each other, so the resemblance can be checked;
* **local features, visual words, thumbnail** of a donor (a random real reference): the
  keypoints' positions are shuffled among them, so a donor's copy matches their descriptors
  as it matches the donor's (the same verification work) but never verifies; the words are
  the donor's, so posting lists grow as a real collection's do;
* **PDQ hash**: a donor's with a third of its bits flipped (searched, never a match).

The distractors are written as segments of :data:`SEGMENT_REFERENCES` (the size tier
merges stop at), then the index trains its IVF codec and gives every large segment its
companion, as a growing index does (``provenance.index.writing.maintain_ivf``).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import time
from pathlib import Path

import numpy as np

NOISE_SIGMA = 0.6
SEGMENT_REFERENCES = 1 << 17


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


def donors(store) -> list[dict]:
    """Per live reference of ``store``: its features record (positions shuffled), words, thumbnail, hash."""
    from provenance.features import shuffled_positions

    snapshot = store.snapshot
    found = []
    rng = np.random.default_rng(1)
    for segment in snapshot.segments:
        words, rows = segment.word_pairs()
        order = np.argsort(rows, kind="stable")
        words, rows = words[order], rows[order]
        bounds = np.searchsorted(rows, np.arange(len(segment) + 1))
        for row in range(len(segment)):
            found.append({"features": shuffled_positions(segment.features(row), rng), "thumb": segment.thumbnail(row),
                          "words": np.array(words[bounds[row]:bounds[row + 1]]), "pdq": segment.pdq_rows()[row].tobytes()})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True, help="a built index of real references (with trained codecs)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--refs", type=int, required=True, help="total references after padding")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from provenance.index import writing
    from provenance.index.store import IndexStore
    from provenance.index.vectors import REGION_BITS

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(args.index, out)
    store = IndexStore.open(out)
    if store.snapshot.codecs is None:
        raise SystemExit(f"{args.index} has no trained codecs (fewer than 200 references): nothing to pad like")
    ids, vectors = store.snapshot.vectors()
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
    by_region = {region: vectors[regions == region] for region in region_numbers}
    with_region0 = max(1, len(by_region.get(0, ())))
    presence = {region: min(1.0, len(rows) / with_region0) for region, rows in by_region.items()}
    pool = donors(store)
    started = time.perf_counter()
    first_id = store.metadata.next_id()
    for start in range(0, pad, SEGMENT_REFERENCES):
        refs = np.arange(first_id + start, first_id + min(pad, start + SEGMENT_REFERENCES), dtype=np.int64)
        _write_distractors(store, refs, by_region, presence, pool, rng)
        print(f"  {start + len(refs)}/{pad} distractors ({time.perf_counter() - started:.0f} s)", flush=True)
    trained = time.perf_counter()
    writing.maintain_ivf(store)
    info = store.describe_vectors()
    print(f"padded {out}: {store.metadata.count()} references, {store.snapshot.vector_count} vectors, "
          f"{info['segments']} segments ({info['approximate_segments']} with IVF, {info.get('ivf', {}).get('factory')}), "
          f"built in {time.perf_counter() - started:.0f} s (IVF training and companions {time.perf_counter() - trained:.0f} s)")
    store.close()


def _write_distractors(store, refs: np.ndarray, by_region: dict, presence: dict, pool: list[dict], rng) -> None:
    from provenance.index.metadata import Reference
    from provenance.index.segment_writer import SegmentInput
    from provenance.index.vectors import vector_ids

    regions = sorted(by_region)
    block = np.stack([synthetic_vectors(by_region[region], len(refs), rng) for region in regions], axis=1)
    kept = rng.random((len(refs), len(regions))) < np.array([presence[region] for region in regions])
    kept[:, 0] = True  # every reference has its first region (the whole image)
    picks = rng.integers(0, len(pool), len(refs))
    flips = np.packbits(rng.random((len(refs), 256)) < 1 / 3, axis=1)
    now = time.time()
    items, rows = [], []
    for offset, (ref_id, donor) in enumerate(zip(refs.tolist(), picks.tolist())):
        source = pool[donor]
        pdq = (np.frombuffer(source["pdq"][:32], np.uint8) ^ flips[offset]).tobytes() + source["pdq"][32:]
        own = np.array(regions)[kept[offset]]
        items.append(SegmentInput(ref_id, vector_ids(np.full(len(own), ref_id), own), block[offset][kept[offset]],
                                  pdq, source["features"], source["words"], source["thumb"]))
        digest = hashlib.sha256(f"synthetic-{ref_id}".encode()).hexdigest()  # a digest no real file has
        rows.append(Reference(ref_id, digest, f"synthetic/{ref_id}", None, None, "synthetic-distractor", 250, 250, now, {}))
    store.metadata.insert_many(rows)
    snapshot = store.snapshot
    frequency = snapshot.document_frequency.copy()
    for item in items:
        frequency[item.words.astype(np.int64)] += 1
    name = f"seg-{store.generation() + 1:08d}"
    info = store.segment_writer(name, snapshot.codecs).write(items, None, frequency, store.metadata.count())
    store.commit([info], [], set(), [], snapshot.codecs, int(kept.sum()))


if __name__ == "__main__":
    main()
