"""`provenance scan` over the evaluation's queries: are the suspects filed under the right victim?

    python scripts/scan_eval.py --index indexes/dev --out out/scan-eval        # dev set in ../shared/bench

Writes the eval's positive queries (every transform family, ``--per-family`` references
each, seed 0: the same 760 queries as ``provenance eval``) as JPEG files (quality 95), a
sample of the negatives, and scam networks: ``--networks`` photos of people who are NOT in
the index, each posted by ``--network-size`` accounts with a different edit (crop, mirror,
caption, round avatar, filter). Then runs the scan (resumable: rerunning continues) and
prints how the summary files them: positives under their true subject, negatives under
none, each network as one unknown-victim group.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from provenance import Engine  # noqa: E402
from provenance.evaluation.queries import (build_query, load_rgb, plan_queries, read_rows,  # noqa: E402
                                           resolve_families)
from provenance.evaluation.transforms import apply_family, family_rng  # noqa: E402
from provenance.scan import read_results, run_scan  # noqa: E402

NETWORK_EDITS = ("as_is", "crop", "mirror", "caption", "avatar_circle", "filter")


def network_copy(image: Image.Image, edit: str, rng: random.Random) -> Image.Image:
    width, height = image.size
    if edit == "crop":
        margin = rng.uniform(0.08, 0.18)
        return image.crop((int(width * margin), int(height * margin * 0.5), int(width * (1 - margin)), int(height * (1 - margin))))
    if edit == "mirror":
        return ImageOps.mirror(image)
    if edit == "caption":
        framed = ImageOps.expand(image, border=(0, 0, 0, height // 5), fill=(255, 255, 255))
        ImageDraw.Draw(framed).text((6, height + 6), "DM for prices", fill=(0, 0, 0))
        return framed
    if edit == "avatar_circle":
        return apply_family("avatar_circle", image, family_rng(rng.randrange(10**6), 0, "avatar_circle"))[0]
    if edit == "filter":
        return ImageEnhance.Color(ImageEnhance.Contrast(image).enhance(1.3)).enhance(0.6)
    return image


def write_suspects(args) -> Path:
    folder = args.out / "suspects"
    folder.mkdir(parents=True, exist_ok=True)
    manifest = args.out / "suspects.csv"
    if manifest.exists():
        return manifest
    refs = read_rows(args.refs)
    negatives = read_rows(args.negatives, ("path", "kind"))
    specs = plan_queries(len(refs), [], resolve_families(None), 0, args.per_family)
    rng = random.Random(0)
    by_kind: dict[str, list] = {}
    for row in negatives:
        by_kind.setdefault(row.kind or "negative", []).append(row)
    chosen_negatives = [row for kind in sorted(by_kind) for row in rng.sample(by_kind[kind], min(args.negatives_per_kind, len(by_kind[kind])))]
    unindexed = [row for row in negatives if row.kind == "unreferenced_person" and row not in chosen_negatives]
    networks = rng.sample(unindexed, min(args.networks, len(unindexed)))
    rows = []
    for number, spec in enumerate(specs):
        name = f"pos_{number:04d}.jpg"
        build_query(spec, refs, [], 0).convert("RGB").save(folder / name, quality=95)
        rows.append({"path": f"suspects/{name}", "account": f"acct_{number:04d}", "truth": refs[spec.index].subject or refs[spec.index].path,
                     "kind": f"positive:{spec.group}"})
    for number, row in enumerate(chosen_negatives):
        name = f"neg_{number:04d}.jpg"
        load_rgb(row).save(folder / name, quality=95)
        rows.append({"path": f"suspects/{name}", "account": f"neg_{number:04d}", "truth": "", "kind": f"negative:{row.kind}"})
    for network, row in enumerate(networks):
        photo = load_rgb(row)
        for member in range(args.network_size):
            name = f"net_{network:02d}_{member}.jpg"
            edit = NETWORK_EDITS[member % len(NETWORK_EDITS)]
            network_copy(photo, edit, rng).convert("RGB").save(folder / name, quality=90)
            rows.append({"path": f"suspects/{name}", "account": f"net{network:02d}_{member}", "truth": f"network{network}",
                         "kind": f"network:{edit}"})
    with open(manifest, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "account", "truth", "kind"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def measure(out: Path) -> dict:
    lines = read_results(out / "results.jsonl")
    groups = json.loads((out / "groups.json").read_text())
    filed = Counter()
    for line in lines:
        kind, truth = line["extra"]["kind"], line["extra"]["truth"]
        best = line["matches"][0] if line["matches"] else {}
        # a reference without a subject (a general photo) is its own victim, by path
        victim = (best.get("subject") or best.get("path")) if line["verdict"] in ("copy", "owner") else None
        if kind.startswith("positive"):
            filed["positives"] += 1
            filed["positive under its true subject"] += victim == truth
            filed["positive under another subject"] += victim is not None and victim != truth
            filed["positive unfiled (similar or no match)"] += victim is None
        elif kind.startswith("negative"):
            filed["negatives"] += 1
            filed[f"negative filed as a copy ({kind.split(':')[1]})"] += victim is not None
    key = {f"{line['n']}:{line['suspect']}": line["extra"]["truth"] for line in lines}
    networks = Counter(truth for truth in key.values() if truth.startswith("network"))
    exact = 0
    for group in groups:
        truths = {key[member] for member in group["members"]}
        if len(truths) == 1 and next(iter(truths)).startswith("network") and len(group["members"]) == networks[next(iter(truths))]:
            exact += 1
    members_in_groups = Counter(key[member] for group in groups for member in group["members"])
    return {"filed": dict(filed), "networks": len(networks), "network groups exact": exact, "groups": len(groups),
            "group sizes": sorted((len(group["members"]) for group in groups), reverse=True),
            "network members grouped": sum(count for truth, count in members_in_groups.items() if truth.startswith("network")),
            "network members": sum(networks.values()),
            "non-network suspects in groups": sum(count for truth, count in members_in_groups.items() if not truth.startswith("network"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True, help="An index of --refs.")
    parser.add_argument("--refs", type=Path, default=Path("../shared/bench/refs.csv"))
    parser.add_argument("--negatives", type=Path, default=Path("../shared/bench/negatives.csv"))
    parser.add_argument("--out", type=Path, default=Path("out/scan-eval"))
    parser.add_argument("--per-family", type=int, default=40)
    parser.add_argument("--negatives-per-kind", type=int, default=40)
    parser.add_argument("--networks", type=int, default=8)
    parser.add_argument("--network-size", type=int, default=6)
    args = parser.parse_args()
    manifest = write_suspects(args)
    started = time.perf_counter()
    last = {}

    def progress(stage: str, done: int, total: int) -> None:
        if done == total or done - last.get(stage, 0) >= 100:
            last[stage] = done
            print(f"  {stage}: {done}/{total} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    with Engine.open(args.index, read_only=True) as engine:
        summary = run_scan(engine, manifest, args.out / "scan", progress=progress)
    figures = {"suspects": summary.suspects, "resumed": summary.resumed, "verdicts": summary.verdicts,
               "seconds": round(summary.seconds, 1), **measure(args.out / "scan")}
    (args.out / "figures.json").write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
