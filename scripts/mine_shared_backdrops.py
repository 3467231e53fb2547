"""Mine hard negatives: photos of one person that share a backdrop or a logo with a reference
photo of *another* person (LFW holds many photos taken at one event).

For each negative, the references an index proposes (best by embedding similarity, other
subjects only) are matched with a deliberately loose geometric test: at least
``--min-inliers`` RANSAC inliers of one similarity transform, none of the copy rules
applied. A pair that passes shares a rigid structure (a backdrop, a banner, a logo)
without being a copy. Pairs that the engine's strict verifier calls a copy are listed
too, marked, so that a person can look at them (two crops of one news photo are copies,
see shared_pixels.csv; a backdrop alone is not).

    python scripts/mine_shared_backdrops.py --index DIR [--bench ../shared/bench] [--out scripts/data/shared_backdrop.csv]

The output CSV (path, kind, subject, ref, ref_subject, inliers, strict_copy) relabels
those negatives for ``provenance eval --hard-negatives``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from functools import lru_cache
from pathlib import Path

KIND = "shared_backdrop"
LOOSE = dict(min_inlier_ratio=0.0, max_near_miss_ratio=1e9, clean_ratio=0.0, min_hull_fraction=0.0,
             min_second_motion=10**9, max_second_motion_ratio=1e9)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", required=True, type=Path, help="index built from BENCH/refs.csv")
    parser.add_argument("--bench", type=Path, default=Path("../shared/bench"))
    parser.add_argument("--out", type=Path, default=Path("scripts/data/shared_backdrop.csv"))
    parser.add_argument("--candidates", type=int, default=10, help="references tried per negative")
    parser.add_argument("--min-inliers", type=int, default=10)
    args = parser.parse_args()

    from provenance import Engine
    from provenance.evaluation.queries import load_rgb, read_rows
    from provenance.verify.geometry import Thresholds, verify_with_mirror
    from provenance.verify.keypoints import extract_keypoints, extract_keypoints_with_mirror

    refs = {row.path: row for row in read_rows(args.bench / "refs.csv")}
    # people's photos only: the general photos have no subject to differ from
    negatives = [row for row in read_rows(args.bench / "negatives.csv", ("path", "kind")) if row.subject]
    loose = Thresholds(min_inliers=args.min_inliers, **LOOSE)

    @lru_cache(maxsize=4096)
    def ref_keypoints(path: str):
        return extract_keypoints(load_rgb(refs[path]))

    found = []
    with Engine.open(args.index, read_only=True) as engine:
        for number, row in enumerate(negatives, 1):
            image = load_rgb(row)
            plain, mirrored = extract_keypoints_with_mirror(image)
            result = engine.query(image, top_k=args.candidates)
            for match in result.matches:
                other = refs.get(match.path)
                if other is None or not other.subject or other.subject == row.subject:
                    continue
                outcome = verify_with_mirror(plain, mirrored, ref_keypoints(match.path), thresholds=loose)
                if outcome.verified:
                    found.append({"path": row.path, "kind": KIND, "subject": row.subject or "", "ref": match.path,
                                  "ref_subject": other.subject, "inliers": outcome.inliers,
                                  "strict_copy": match.verdict == "copy"})
                    break
            if number % 100 == 0:
                print(f"{number}/{len(negatives)} negatives, {len(found)} pairs", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(found[0]) if found else ["path", "kind"])
        writer.writeheader()
        writer.writerows(found)
    print(f"{len(found)} negatives share a rigid structure with another person's reference -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
