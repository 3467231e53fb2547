"""A small victims-and-scammers scene in generated images: an index of portfolios and suspect accounts.

References: photos 0-5 of "Person 0".."Person 5". Suspects: copies of indexed photos (a crop,
a mirrored shrink, a captioned copy), the victim's own account posting one, one photo that is
not indexed (photo 7) reused by three accounts, an unrelated picture and a broken file.
"""

from __future__ import annotations

import csv
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from .conftest import synthetic_photo

SUBJECTS = [f"Person {number}" for number in range(6)]
#: (file, account, what it is)
SUSPECTS = [
    ("crop_p0.jpg", "scam_alpha", "copy of Person 0"),
    ("mirror_p1.jpg", "scam_beta", "copy of Person 1"),
    ("caption_p0.jpg", "scam_gamma", "copy of Person 0"),
    ("own_p2.jpg", "person2.official", "owner of Person 2"),
    ("shared_a.jpg", "net_one", "unknown victim"),
    ("shared_b.jpg", "net_two", "unknown victim"),
    ("shared_c.jpg", "net_three", "unknown victim"),
    ("unrelated.jpg", "loner", "nothing"),
    ("broken.jpg", "broken_account", "unreadable"),
]


def captioned(image: Image.Image, text: str) -> Image.Image:
    framed = ImageOps.expand(image, border=(0, 0, 0, 40), fill=(255, 255, 255))
    ImageDraw.Draw(framed).text((8, image.size[1] + 10), text, fill=(0, 0, 0))
    return framed


def build_scene(root: Path) -> dict[str, Path]:
    """Write the references (with ``refs.csv``), the suspects (with ``suspects.csv``) and an allowlist."""
    refs, suspects = root / "refs", root / "suspects"
    refs.mkdir(parents=True)
    suspects.mkdir()
    photos = [synthetic_photo(seed, size=(320, 240)) for seed in range(9)]
    with open(root / "refs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "subject", "source_url", "collection"])
        for number, subject in enumerate(SUBJECTS):
            photos[number].save(refs / f"p{number}.jpg", quality=92)
            writer.writerow([f"refs/p{number}.jpg", subject, f"https://portfolio.example/p{number}", "models"])
    photos[0].crop((40, 30, 300, 220)).save(suspects / "crop_p0.jpg", quality=85)
    ImageOps.mirror(photos[1]).resize((240, 180)).save(suspects / "mirror_p1.jpg", quality=80)
    captioned(photos[0], "DM for bookings").save(suspects / "caption_p0.jpg", quality=85)
    photos[2].save(suspects / "own_p2.jpg", quality=90)
    photos[7].save(suspects / "shared_a.jpg", quality=90)
    ImageOps.mirror(photos[7].crop((20, 10, 300, 230))).save(suspects / "shared_b.jpg", quality=80)
    captioned(photos[7], "new account, add me").save(suspects / "shared_c.jpg", quality=85)
    photos[8].save(suspects / "unrelated.jpg", quality=90)
    (suspects / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with open(root / "suspects.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "account", "profile_url", "seen_at", "platform"])
        for number, (name, account, _) in enumerate(SUSPECTS):
            writer.writerow([f"suspects/{name}", account, f"https://social.example/{account}", f"2026-11-{number + 1:02d}", "example"])
    (root / "allowlist.csv").write_text("subject,account\nPerson 2,person2.official\n")
    return {"refs": root / "refs.csv", "suspects": root / "suspects.csv", "allowlist": root / "allowlist.csv"}


def build_index(root: Path, scene: dict[str, Path]) -> Path:
    from provenance import Engine

    index = root / "index"
    with Engine.create(index) as engine:
        summary = engine.reindex(scene["refs"], workers=0)
    assert summary.added == len(SUBJECTS) and summary.failed == 0
    return index
