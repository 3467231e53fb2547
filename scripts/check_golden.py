"""Golden regression checks on ../shared/bench/golden (prints figures, exits 1 on a miss).

1. AugLy: against an index that also holds golden/augly/dfdc_1.jpg, every AugLy edit of
   it is queried; the mild edits must return dfdc_1.jpg first. All results are printed.
2. EXIF: each Landscape_N.jpg / Portrait_N.jpg (orientation tags 0-8) is embedded and
   compared with Landscape_1.jpg / Portrait_1.jpg. Each file also prints its own number
   N in large type in the middle of the photo, so the files differ by that label; the
   check prints the raw cosines and the cosines with the label box taken from file 1
   (the same pixels everywhere else), and passes when the latter are all >= 0.99.

Usage: python scripts/check_golden.py [--bench ../shared/bench] [--index DIR]
With --index, a copy of that index is used as the distractor set (it is not modified);
without it, only the 300 general reference photos are indexed as distractors.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

MILD = ("blur", "brightness", "contrast", "grayscale", "encoding_quality", "scale", "sharpen", "saturation")


def check_augly(bench: Path, index: str | None) -> bool:
    from provenance import Engine

    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch) / "index"
        if index:
            shutil.copytree(index, directory)
            engine = Engine.open(directory)
        else:
            engine = Engine.create(directory)
            manifest = Path(scratch) / "general.csv"
            rows = [line for line in (bench / "refs.csv").read_text().splitlines()[1:] if line.endswith(",general")]
            manifest.write_text("path\n" + "\n".join(str(bench / row.split(",")[0]) for row in rows) + "\n")
            engine.reindex(manifest)
        engine.add(bench / "golden/augly/dfdc_1.jpg", path="golden/augly/dfdc_1.jpg")
        ok = True
        for query in sorted((bench / "golden/augly").glob("test_*.jpg")):
            result = engine.query(query, top_k=1)
            best = result.best
            found = best is not None and best.path == "golden/augly/dfdc_1.jpg"
            mild = query.stem.removeprefix("test_") in MILD
            ok &= found or not mild
            print(f"{'MILD' if mild else '    '} {query.name:40s} first={best.path if best else '-':28s} "
                  f"verdict={result.verdict:8s} score={best.score if best else 0:.3f} {'ok' if found else 'MISS'}")
        engine.close()
    return ok


def check_exif(bench: Path) -> bool:
    from provenance.embedders import create_embedder
    from provenance.imageio import load_image

    embedder = create_embedder()
    ok = True
    for stem in ("Landscape", "Portrait"):
        images = [load_image(bench / f"golden/exif/{stem}_{n}.jpg").image for n in range(9)]
        raw = embedder.embed(images) @ embedder.embed([images[1]])[0]
        width, height = images[1].size
        label_box = (int(width * 0.38), int(height * 0.38), int(width * 0.62), int(height * 0.62))
        label = images[1].crop(label_box)
        same_label = [image.copy() for image in images]
        for image in same_label:
            image.paste(label, label_box[:2])
        masked = embedder.embed(same_label) @ embedder.embed([same_label[1]])[0]
        ok &= bool((masked >= 0.99).all())
        print(f"{stem} cosine to {stem}_1, orientations 0-8, raw:         " + " ".join(f"{v:.4f}" for v in raw))
        print(f"{stem} cosine to {stem}_1, orientations 0-8, same label:  " + " ".join(f"{v:.4f}" for v in masked))
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", default="../shared/bench", type=Path)
    parser.add_argument("--index", default=None, help="existing index to copy as distractors")
    args = parser.parse_args()
    augly_ok = check_augly(args.bench, args.index)
    exif_ok = check_exif(args.bench)
    print(f"augly mild edits found first: {'yes' if augly_ok else 'NO'}; exif (same label) within 0.99: {'yes' if exif_ok else 'NO'}")
    sys.exit(0 if augly_ok and exif_ok else 1)


if __name__ == "__main__":
    main()
