"""Rank a bench's other photos of referenced people by how likely they come from the same shoot.

Usage: python scripts/find_same_shoot.py [--bench ../shared/bench] [--top 60] [--sheet out/same_shoot.png]

A same-shoot non-copy is another frame of the same session: same person, clothes and
backdrop, a slightly different pose. It shares a scene with the reference, not pixels. The
bench has no session labels, so this script ranks each ``same_subject_other_photo``
negative against the references of its subject by what a session keeps and a face does not
show: the colour histogram (CIE Lab, 8x8x8 bins) of the ring around the face (the image
outside its central 110x170 pixels, less the black margins of LFW's alignment), compared by
intersection. It uses nothing of the engine. The top of the ranking is a shortlist, not a
label: ``scripts/data/same_shoot.csv`` keeps the pairs of the top 60 that show the same
clothes and backdrop by eye (30 of 60; the others share only a colour scheme), as
``--sheet`` draws them. Prints CSV (``path,kind,subject,ref,ring_histogram_intersection``).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from provenance.evaluation.queries import Row, read_rows

SIDE = 250  # LFW's size; other sizes are resized to it


def ring_histogram(path: Path) -> np.ndarray:
    """The normalised Lab histogram of the ring around the face."""
    import cv2

    pixels = np.asarray(Image.open(path).convert("RGB").resize((SIDE, SIDE)))
    lab = cv2.cvtColor(pixels, cv2.COLOR_RGB2LAB)
    mask = np.ones((SIDE, SIDE), bool)
    mask[40:210, 70:180] = False
    mask &= pixels.sum(axis=2) > 15  # the alignment's black margins
    histogram = cv2.calcHist([lab], [0, 1, 2], mask.astype(np.uint8), [8, 8, 8], [0, 256] * 3).ravel()
    return histogram / max(histogram.sum(), 1.0)


def rank(bench: Path) -> list[tuple[float, Row, str]]:
    """(intersection, negative row, reference path) for every negative/reference pair of one subject, best first."""
    by_subject: dict[str, list[Row]] = {}
    for row in read_rows(bench / "refs.csv"):
        if row.subject:
            by_subject.setdefault(row.subject, []).append(row)
    negatives = [row for row in read_rows(bench / "negatives.csv", ("path", "kind"))
                 if row.kind == "same_subject_other_photo"]
    pairs = []
    for row in negatives:
        own = ring_histogram(row.file)
        for ref in by_subject.get(row.subject or "", []):
            pairs.append((float(np.minimum(own, ring_histogram(ref.file)).sum()), row, ref.path))
    return sorted(pairs, key=lambda pair: -pair[0])


def contact_sheet(bench: Path, pairs: list, out: Path, side: int = 120) -> None:
    """Each pair side by side, four pairs a row, for reviewing the shortlist by eye."""
    rows = (len(pairs) + 3) // 4
    sheet = Image.new("RGB", (4 * (2 * side + 10), rows * (side + 5)), "white")
    for number, (_, row, ref) in enumerate(pairs):
        x, y = (number % 4) * (2 * side + 10), (number // 4) * (side + 5)
        sheet.paste(Image.open(row.file).convert("RGB").resize((side, side)), (x, y))
        sheet.paste(Image.open(bench / ref).convert("RGB").resize((side, side)), (x + side, y))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=Path("../shared/bench"))
    parser.add_argument("--top", type=int, default=60)
    parser.add_argument("--sheet", type=Path, default=None, help="write the shortlist's contact sheet here")
    args = parser.parse_args()
    pairs = rank(args.bench)[: args.top]
    writer = csv.writer(sys.stdout)
    writer.writerow(["path", "kind", "subject", "ref", "ring_histogram_intersection"])
    for score, row, ref in pairs:
        writer.writerow([row.path, "same_shoot", row.subject, ref, f"{score:.3f}"])
    if args.sheet:
        contact_sheet(args.bench, pairs, args.sheet)


if __name__ == "__main__":
    main()
