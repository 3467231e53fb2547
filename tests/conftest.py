"""Shared fixtures: synthetic photos generated in code, so no test needs ../shared."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter


def synthetic_photo(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A textured, photo-like RGB image that differs strongly between seeds."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [np.sin(x / rng.uniform(8, 40) + rng.uniform(0, 6)) * np.cos(y / rng.uniform(8, 40)) for _ in range(3)], axis=-1
    )
    array = ((base * 0.5 + 0.5) * rng.uniform(80, 200, size=3)).astype(np.uint8)
    image = Image.fromarray(array, "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(25):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(10, width // 2)), y0 + int(rng.integers(10, height // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x1, y1], fill=colour, outline=(0, 0, 0))
        else:
            draw.rectangle([x0, y0, x1, y1], fill=colour, outline=(255, 255, 255))
    noise = rng.normal(0, 6, size=(height, width, 3))
    noisy = np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(noisy, "RGB").filter(ImageFilter.SMOOTH)


def write_bench(root, references, negatives):
    """A bench in the layout of ../shared/bench under ``root``: ``references`` as
    (image, subject, collection) and ``negatives`` as (image, kind) become refs/ and
    negatives/ with their CSVs. Returns ``root``."""
    import csv

    (root / "refs").mkdir(parents=True)
    (root / "negatives").mkdir()
    with open(root / "refs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "subject", "source_url", "collection"])
        for number, (image, subject, collection) in enumerate(references):
            image.save(root / "refs" / f"r{number}.jpg", quality=92)
            writer.writerow([f"refs/r{number}.jpg", subject, f"https://example.org/{number}", collection])
    with open(root / "negatives.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "kind", "subject"])
        for number, (image, kind) in enumerate(negatives):
            image.save(root / "negatives" / f"n{number}.jpg", quality=92)
            writer.writerow([f"negatives/n{number}.jpg", kind, ""])
    return root


@pytest.fixture(scope="session")
def photos() -> list[Image.Image]:
    return [synthetic_photo(seed) for seed in range(8)]


@pytest.fixture(scope="session")
def effnet():
    from provenance.embedders import create_embedder

    return create_embedder("effnet-lite0")


@pytest.fixture()
def photo_folder(tmp_path, photos):
    folder = tmp_path / "refs"
    (folder / "nested").mkdir(parents=True)
    for number, photo in enumerate(photos[:6]):
        target = folder / ("nested" if number % 2 else "") / f"photo_{number}.{'JPG' if number == 3 else 'jpg'}"
        photo.save(target, quality=92)
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="session")
def indexed_scene(tmp_path_factory):
    """The victims-and-scammers scene of :mod:`tests.scenes`, with its index built once."""
    from .scenes import build_index, build_scene

    root = tmp_path_factory.mktemp("scene")
    paths = build_scene(root)
    paths["index"] = build_index(root, paths)
    paths["root"] = root
    return paths
