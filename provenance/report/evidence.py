"""The evidence page: for each suspect, the reference it was copied from and the proof.

Per query: the suspect beside its best reference, the shared part outlined on both (red),
where the whole suspect lands on the reference (blue, dashed), what was done to it in words,
the verdict with the score and the threshold it was judged against, the reference's
subject, source and date added, and the runners-up. A non-copy says plainly why not.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from ..errors import BadInputError, ImageLoadError
from ..imageio import ImageSource, load_image
from ..imagelimits import DEFAULT_LIMITS, ImageLimits
from ..index.manifest import atomic_write_bytes
from ..results import VERDICT_COPY, VERDICT_SIMILAR, Match, QueryResult
from ..verify.geometry import REFUSED_COMPACT
from .page import FOOTPRINT_COLOUR, MATCH_COLOUR, data_uri, document, esc, picture, thumbnail_uri, polygon, rect, verdict_badge

#: How a query view came about, in words (``Match.query_view``; numbered views by prefix).
VIEW_WORDS = {
    "stripped": "borders added", "disc": "round avatar", "circle": "round avatar inside a screenshot",
    "photo": "photo inside a larger picture (a screenshot or a post)",
}
#: Decoding size of a query picture on the page: the frame its boxes were found in.
QUERY_FRAME_SIZE = 512


def describe_transform(match: Match) -> str:
    """What was done to the reference, in words: "a 42 % crop, mirrored, rotated 3°, round avatar"."""
    words = []
    if match.transform is None:
        if match.pdq_distance is not None:
            return f"near-identical (PDQ hashes {match.pdq_distance} of 256 bits apart): re-encoded, resized or recoloured"
        return ""
    if match.coverage is not None:
        words.append("the whole picture" if match.coverage >= 0.97 else f"a {match.coverage * 100:.0f} % crop")
    if match.transform.mirrored:
        words.append("mirrored")
    if abs(match.transform.rotation_deg) >= 1.0:
        words.append(f"rotated {abs(match.transform.rotation_deg):.0f}°")
    if match.transform.model == "stretch":
        words.append("stretched")
    elif match.transform.model == "affine":
        words.append("skewed")
    elif match.transform.model == "perspective":
        words.append("seen at an angle (a photo of a screen or a print)")
    view = re.match(r"[a-z]*", match.query_view or "").group()  # photo1-inner -> photo, circle0 -> circle
    if view in VIEW_WORDS:
        words.append(VIEW_WORDS[view])
    return ", ".join(words)


def explain(match: Match | None, thresholds: dict[str, float]) -> str:
    """Why the verdict is what it is, in one sentence."""
    similar_at = thresholds.get("similar")
    if match is None:
        return "no match: nothing in the index came close"
    if match.verdict == VERDICT_COPY:
        if match.transform is not None:
            return (f"copy: {match.inliers} keypoints of the suspect land where one geometric transform "
                    f"puts them on the reference; the two share pixels")
        return f"copy: its PDQ perceptual hash is {match.pdq_distance} of 256 bits from the reference's"
    if match.refusal == REFUSED_COMPACT:
        return (f"{match.verdict.replace('_', ' ')}: keypoints agree, but only on a patch spanning "
                f"{(match.support or 0) * 100:.1f} % of the pictures (a logo, text or a sticker-sized detail); "
                "sharing that is not evidence that the photograph was copied")
    if match.verdict == VERDICT_SIMILAR:
        return (f"similar: same person or shoot, no shared pixels proven (similarity {match.similarity:.2f}"
                + (f" ≥ {similar_at:.2f}" if similar_at is not None else "") + ")")
    return ("no match: no shared pixels found and the pictures do not look alike (similarity "
            f"{match.similarity:.2f}" + (f" < {similar_at:.2f}" if similar_at is not None else "") + ")")


def footprint_on_reference(match: Match, query_size: Sequence[int] | None) -> list[tuple[float, float]] | None:
    """Corners of the whole suspect mapped onto the reference (a rotated copy gives a rotated outline)."""
    matrix, view = _affine(match), match.query_box
    if matrix is None or view is None or not query_size:
        return None
    width, height = query_size
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64) - np.array(view[:2])
    mapped = np.c_[corners, np.ones(4)] @ matrix.T
    return [(float(x), float(y)) for x, y in mapped]


def shared_part_on_query(match: Match) -> tuple[float, float, float, float] | None:
    """The part of the suspect that shows the reference: the reference mapped back, within the searched view."""
    matrix, view, frame = _affine(match), match.query_box, match.reference_frame
    if matrix is None or view is None or not frame:
        return None
    try:
        inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    except np.linalg.LinAlgError:
        return None
    corners = np.array([[0, 0], [frame[0], 0], [frame[0], frame[1]], [0, frame[1]]], dtype=np.float64)
    mapped = np.c_[corners, np.ones(4)] @ inverse.T + np.array(view[:2])
    x0, y0 = max(view[0], mapped[:, 0].min()), max(view[1], mapped[:, 1].min())
    x1, y1 = min(view[2], mapped[:, 0].max()), min(view[3], mapped[:, 1].max())
    return (float(x0), float(y0), float(x1), float(y1)) if x1 > x0 and y1 > y0 else None


def _affine(match: Match) -> np.ndarray | None:
    if match.transform is None or not match.transform.matrix or len(match.transform.matrix) != 6:
        return None
    return np.array(match.transform.matrix, dtype=np.float64).reshape(2, 3)


def query_picture(source: ImageSource | None, limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image | None:
    """The suspect decoded as it was searched (same frame as its boxes), or None when unreadable."""
    if source is None:
        return None
    if isinstance(source, Image.Image):
        return source.convert("RGB")
    try:
        return load_image(source, limits=limits, target_size=QUERY_FRAME_SIZE).image
    except (ImageLoadError, OSError):
        return None


def reference_picture(references: Any, match: Match) -> str | None:
    """``data:`` URI of the reference's stored thumbnail, or None (an index built before thumbnails)."""
    thumbnail = references.reference_thumbnail(match.ref_id) if references is not None else None
    return thumbnail_uri(thumbnail) if thumbnail else None


def _suspect_figure(result: QueryResult, image: Image.Image | None, best: Match | None) -> str:
    uri, frame, shapes = None, result.query_size, []
    if image is not None:
        uri = data_uri(image)
        frame = frame or image.size
    if best is not None and best.verdict == VERDICT_COPY:
        shared = shared_part_on_query(best)
        if shared is not None:
            shapes.append(rect(shared, MATCH_COLOUR, "query-shared"))
        if best.query_box is not None and best.query_view not in (None, "full"):
            shapes.append(rect(best.query_box, FOOTPRINT_COLOUR, "query-view", dashed=True))
    caption = f"<figcaption>suspect: {esc(result.query)}</figcaption>"
    return f"<figure>{picture(uri, frame, shapes, 'suspect', 'suspect')}{caption}</figure>"


def _reference_figure(best: Match | None, references: Any, query_size) -> str:
    if best is None:
        return ""
    shapes = []
    if best.verdict == VERDICT_COPY and best.box is not None:
        shapes.append(rect(best.box, MATCH_COLOUR, "reference-box"))
        outline = footprint_on_reference(best, query_size)
        if outline is not None:
            shapes.append(polygon(outline, FOOTPRINT_COLOUR, "reference-footprint"))
    caption = f"<figcaption>reference #{best.ref_id}: {esc(best.path)}</figcaption>"
    return f"<figure>{picture(reference_picture(references, best), best.reference_frame, shapes, 'reference', 'reference')}{caption}</figure>"


def _facts(result: QueryResult, best: Match | None, references: Any) -> str:
    rows = [("Verdict", f"{verdict_badge(result.verdict)} {esc(explain(best, result.thresholds))}")]
    if best is not None:
        if best.verdict == VERDICT_COPY:
            threshold = result.thresholds.get("copy")
            rows.append(("Score", f"{best.score:.3f}" + (f" (a copy needs ≥ {threshold:.3f})" if threshold is not None else "")))
            rows.append(("What was done", esc(describe_transform(best) or "—")))
        else:
            threshold = result.thresholds.get("similar")
            rows.append(("Similarity", f"{best.similarity:.3f}" + (f" (similar from {threshold:.3f})" if threshold is not None else "")))
        reference = references.reference(best.ref_id) if references is not None else None
        rows += [("Subject", esc(best.subject or "—")),
                 ("Source", _link(best.source_url)),
                 ("Collection", esc(best.collection or "—")),
                 ("Date added", _date(reference.added_at) if reference is not None else "—"),
                 ("Reference", f"#{best.ref_id} {esc(best.path)} <span class='muted'>sha256 {esc((best.sha256 or '')[:16])}…</span>")]
    cells = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows)
    return f'<dl class="facts">{cells}</dl>'


def _link(url: str | None) -> str:
    if not url:
        return "—"
    if url.lower().startswith(("http://", "https://")):
        return f'<a href="{esc(url)}" rel="noreferrer noopener">{esc(url)}</a>'
    return esc(url)


def _date(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp)) if timestamp else "—"


def _runners_up(result: QueryResult) -> str:
    if len(result.matches) < 2:
        return ""
    rows = "".join(f"<tr><td>{rank}</td><td>{verdict_badge(match.verdict)}</td><td>{match.score:.3f}</td>"
                   f"<td>{match.similarity:.3f}</td><td>{esc(match.subject or '—')}</td><td>{esc(match.path)}</td></tr>"
                   for rank, match in enumerate(result.matches[1:], start=2))
    return ("<h3>Runners-up</h3><table><thead><tr><th>#</th><th>verdict</th><th>score</th><th>similarity</th>"
            f"<th>subject</th><th>reference</th></tr></thead><tbody>{rows}</tbody></table>")


def evidence_section(result: QueryResult, image: Image.Image | None, references: Any, number: int = 1) -> str:
    """One query's case: pictures, facts and runners-up (an ``<section>``)."""
    best = result.best
    pair = _suspect_figure(result, image, best) + _reference_figure(best, references, result.query_size)
    return (f'<section class="case" id="q{number}" data-verdict="{esc(result.verdict)}">'
            f"<h2>{number}. {esc(result.query)} {verdict_badge(result.verdict)}</h2>"
            f'<div class="pair">{pair}</div>{_facts(result, best, references)}{_runners_up(result)}</section>')


LEGEND = (f'<p class="legend"><span><i class="swatch" style="background:{MATCH_COLOUR}"></i>the shared part</span>'
          f'<span><i class="swatch" style="border:2px dashed {FOOTPRINT_COLOUR}"></i>the other picture\'s outline '
          "(on the reference: where the whole suspect lands; on the suspect: the part searched)</span></p>")


def evidence_html(results: Sequence[QueryResult], references: Any,
                  image_of: Callable[[QueryResult], Image.Image | None], title: str = "provenance evidence") -> str:
    """The whole page for ``results``; ``references`` gives ``reference(id)`` and ``reference_thumbnail(id)``
    (an :class:`~provenance.engine.Engine`); ``image_of(result)`` the suspect's picture."""
    copies = sum(1 for result in results if result.verdict == VERDICT_COPY)
    body = [f"<h1>{esc(title)}</h1>",
            f'<p class="muted">{len(results)} suspect image(s), {copies} copied from an indexed reference. '
            f"Made {_date(time.time())} by provenance.</p>", LEGEND]
    body += [evidence_section(result, image_of(result), references, number) for number, result in enumerate(results, 1)]
    return document(title, body)


def read_query_results(path: str | os.PathLike) -> list[QueryResult]:
    """The results saved by ``provenance query --json`` (lines with an ``error`` are left out);
    a line that is not such output is a BadInputError naming it."""
    from ..sources import read_jsonl

    results = []
    for number, row in read_jsonl(Path(path)):
        if "error" in row:
            continue
        try:
            results.append(QueryResult.from_dict(row))
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInputError(f"{path}:{number}: not a `provenance query --json` line ({exc!r})") from None
    return results


def write_evidence_page(out: str | os.PathLike, results: Iterable[QueryResult], references: Any,
                        images: dict[str, ImageSource] | None = None, limits: ImageLimits = DEFAULT_LIMITS) -> Path:
    """Write the evidence page for ``results`` to ``out``; suspects are read from ``images[result.query]``
    or else from the path ``result.query`` names (missing pictures are said so, never fatal)."""
    sources = images or {}
    page = evidence_html(list(results), references,
                         lambda result: query_picture(sources.get(result.query, result.query), limits))
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, page.encode("utf-8"))
    return path
