"""Ablation: the eval's metrics as the engine's components are switched on one by one.

Usage: python scripts/ablation.py --index DIR [--bench ../shared/bench] [--limit 20] [--families a,b] [--out out/ablation]
    [--hard-negatives scripts/data/shared_backdrop.csv --hard-negatives scripts/data/same_shoot.csv]
    [--negative-family avatar_tiny:same_subject_other_photo]
The index must hold the bench references (built with the default regions: whole image,
two centred crops, two face squares). Each step
runs `run_evaluation` on the same seeded queries with the engine configured as listed.
Prints markdown tables (overall, per family, and the false-positive rate at the P99 threshold
per negative kind, the hard negatives' kinds included); asserts nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

STEPS = [
    ("whole-image embedding only", dict(regions=False, strip_borders=False, photo_regions=False, faces=False,
                                         discs=False, circles=False, pdq=False, keypoint_votes=False, thumbnails=False,
                                         verify=False, verify_more=False, cascade=False)),
    ("+ centred reference crops", dict(regions=frozenset({0, 1, 2}))),
    ("+ border-stripped query views", dict(strip_borders=True)),
    ("+ photo-region views (screenshots, avatars)", dict(photo_regions=True)),
    ("+ face squares of the references", dict(regions=True)),
    ("+ face, avatar-disc and circle query views", dict(faces=True, discs=True, circles=True)),
    ("+ PDQ near-exact path", dict(pdq=True)),
    ("+ geometric verification of the best 6", dict(verify=True)),
    ("+ 6 more when none verifies", dict(verify_more=True)),
    ("+ keypoint votes", dict(keypoint_votes=True)),
    ("+ thumbnail correlation of small avatars", dict(thumbnails=True)),
    ("+ the cascade", dict(cascade=True)),
    ("- the 6 more (the engine's defaults)", dict(verify_more=False)),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", required=True)
    parser.add_argument("--bench", default="../shared/bench")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--families", default=None, help="comma-separated families (default: all)")
    parser.add_argument("--out", default="out/ablation")
    parser.add_argument("--hard-negatives", action="append", default=[], type=Path,
                        help="CSV (path,kind) relabelling negatives, as for provenance eval; repeatable")
    parser.add_argument("--negative-family", action="append", default=[],
                        help="FAMILY:KIND negatives put through a family, as for provenance eval; repeatable")
    args = parser.parse_args()

    from provenance import Engine
    from provenance.errors import BadInputError
    from provenance.evaluation.queries import parse_negative_family
    from provenance.evaluation.runner import EvalConfig, run_evaluation

    try:
        negative_families = tuple(parse_negative_family(value) for value in args.negative_family)
    except BadInputError as exc:
        parser.error(str(exc))

    engine = Engine.open(args.index)
    rows, families, kinds = [], {}, {}
    for number, (label, settings) in enumerate(STEPS):
        engine.configure(**settings)
        config = EvalConfig(refs=Path(args.bench) / "refs.csv", negatives=Path(args.bench) / "negatives.csv",
                            out_dir=Path(args.out) / f"step{number}", seed=args.seed, limit=args.limit, baselines=(),
                            families=args.families.split(",") if args.families else None,
                            hard_negatives=tuple(args.hard_negatives),
                            negative_families=negative_families)
        metrics = run_evaluation(config, engine=engine).systems["engine"]
        rows.append((label, metrics))
        families[label] = metrics.get("per_family", {})
        kinds[label] = metrics.get("negatives_fpr", {})
        print(f"done: {label}: µAP {metrics['micro_ap']:.3f}", flush=True)
    print()
    print("| configuration | µAP | R@P90 | R@P99 | recall@1 | median ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, m in rows:
        print(f"| {label} | {m['micro_ap']:.3f} | {m['recall_at_p90']:.3f} | {m['recall_at_p99']:.3f} | "
              f"{m['recall_at_1']:.3f} | {m['timing']['median_ms']:.0f} |")
    names = sorted(next(iter(families.values())))
    print()
    print("| family | " + " | ".join(f"step {i}" for i in range(len(rows))) + " |")
    print("| --- |" + " ---: |" * len(rows))
    for family in names:
        cells = [f"{families[label][family]['recall_at_p99']:.2f}" for label, _ in rows]
        print(f"| {family} | " + " | ".join(cells) + " |")
    print()
    print("| negative kind (FPR at P99) | " + " | ".join(f"step {i}" for i in range(len(rows))) + " |")
    print("| --- |" + " ---: |" * len(rows))
    for kind in sorted(next(iter(kinds.values()))):
        cells = [f"{kinds[label][kind].get('fpr_at_p99', float('nan')):.3f}" for label, _ in rows]
        print(f"| {kind} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
