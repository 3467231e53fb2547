"""Caption bands: full-width strips of text laid over a photo.

Scam copies carry captions ("DM me", a price, a handle) in bands across the photo: a solid
or semi-transparent strip, bounded above and below by straight full-width edges (or by the
picture's own edge), and dense with the small keypoints of its letters. Those keypoints have
no counterpart in the reference, yet each votes for every reference that holds text-like
visual words: on 5 of the dev eval's captioned copies the bands held 72-86 % of the query's
keypoints, and without them the true reference ranked first by votes where it had ranked
9th to 49th or below the 300th.

A band is found in two steps. Its edges: rows where the colour steps across most of the
width (the median over the columns of a two-row step), which a blend of the photo with a
flat colour makes and a photo's own content rarely does. Its text: among the strips between
two edges, or between an edge and the picture's border, of 4-35 % of the height, those whose
keypoints are more than :data:`DENSER` times as dense as the rest of the picture's, the
strips with the most keypoints beyond that density first. A strip that is
only a straight-edged part of the photo (a shelf, a horizon) is rarely that much denser; a
border or a flat banner has no keypoints at all.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from .keypoints import Keypoints

#: The median colour step (0-255, over two rows) across the width of a band's edge.
EDGE_STEP = 16.0
#: A band's height, as a share of the picture's.
MIN_BAND, MAX_BAND = 0.04, 0.35
#: Bands cover at most this share of the picture: a query is mostly photo.
MAX_COVERED = 0.5
#: A band's keypoints per pixel, against the rest of the picture's.
DENSER = 3.0
#: A band holds at least this many keypoints: letters, not a stray corner.
MIN_BAND_KEYPOINTS = 12
#: Columns sampled across the width to find the edges.
EDGE_COLUMNS = 96
#: Edges this close (rows) are one edge: JPEG spreads a step over two or three rows.
SAME_EDGE = 3


def band_edges(image: Image.Image) -> list[int]:
    """Rows where the colour steps across most of the width (between row y-1 and y+1)."""
    if image.height < 8 or image.width < 8:
        return []
    # every row, but only EDGE_COLUMNS columns: a median over the width needs no more
    columns = image.resize((min(EDGE_COLUMNS, image.width), image.height), Image.Resampling.NEAREST)
    pixels = np.asarray(columns.convert("RGB"), dtype=np.int16)
    steps = np.abs(pixels[2:] - pixels[:-2]).max(axis=2)
    middle = steps.shape[1] // 2
    median = np.partition(steps, middle, axis=1)[:, middle]
    edges: list[int] = []
    for row in np.flatnonzero(median >= EDGE_STEP):
        y = int(row) + 1
        if edges and y - edges[-1] <= SAME_EDGE:
            if median[row] > median[edges[-1] - 1]:
                edges[-1] = y
            continue
        edges.append(y)
    return edges


def caption_bands(image: Image.Image, keypoints: Keypoints) -> list[tuple[int, int]]:
    """The (top, bottom) rows of the caption bands over ``image``, whose ``keypoints`` are given."""
    height = image.height
    if len(keypoints) < MIN_BAND_KEYPOINTS or height < 8:
        return []
    rows = np.sort(keypoints.xy[:, 1])
    limits = [0] + band_edges(image) + [height]
    strips = []
    for i, top in enumerate(limits):
        for bottom in limits[i + 1:]:
            if MIN_BAND * height <= bottom - top <= MAX_BAND * height:
                inside = int(np.searchsorted(rows, bottom) - np.searchsorted(rows, top))
                outside = len(rows) - inside
                # the keypoints beyond DENSER times the rest's density: a strip grows by a row of
                # letters and shrinks by a row of photo, so the whole band wins over its parts
                excess = inside - DENSER * outside * (bottom - top) / (height - (bottom - top))
                if inside >= MIN_BAND_KEYPOINTS and excess > 0:
                    strips.append((excess, top, bottom))
    return _densest_apart(strips, MAX_COVERED * height)


def _densest_apart(strips: Sequence[tuple[float, int, int]], most_rows: float) -> list[tuple[int, int]]:
    """The strips of most excess keypoints that do not overlap, up to ``most_rows`` rows in
    all, top to bottom."""
    chosen: list[tuple[int, int]] = []
    for _, top, bottom in sorted(strips, key=lambda strip: (-strip[0], strip[1])):
        if all(bottom <= other_top or top >= other_bottom for other_top, other_bottom in chosen) \
                and sum(b - t for t, b in chosen) + bottom - top <= most_rows:
            chosen.append((top, bottom))
    return sorted(chosen)


def outside_bands(keypoints: Keypoints, bands: Sequence[tuple[int, int]]) -> Keypoints:
    """``keypoints`` without those inside ``bands`` (rows ``top <= y < bottom``)."""
    keep = np.ones(len(keypoints), bool)
    for top, bottom in bands:
        keep &= ~((keypoints.xy[:, 1] >= top) & (keypoints.xy[:, 1] < bottom))
    return Keypoints(keypoints.xy[keep], keypoints.descriptors[keep], keypoints.width, keypoints.height,
                     keypoints.method)
