"""The scan summary: suspects grouped by victim, and the unknown victims whose photo many accounts share.

One self-contained page. Each victim (a reference's subject) gets a section: the accounts
using their photos, which photo each used (outlined on the reference), what was done to it,
the verdict and the score. Tables sort by a click on a column head; a select filters rows
by verdict. Groups of suspects that copy each other follow ("unknown victim: 6 accounts
share this photo"), then what matched nothing and what could not be read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from ..imagelimits import DEFAULT_LIMITS, ImageLimits
from ..index.manifest import atomic_write_bytes
from ..results import Match
from .evidence import describe_transform, query_picture, shared_part_on_query
from .page import MATCH_COLOUR, SORT_AND_FILTER_SCRIPT, data_uri, document, esc, picture, thumbnail_uri, rect, verdict_badge

#: Longer side of the pictures in the summary's tables.
SUMMARY_PICTURE_SIDE = 140
#: Verdicts filed under a victim (the best match's subject).
FILED_UNDER_VICTIM = ("copy", "owner", "similar")


class _Pictures:
    """Thumbnails of suspects (read from their files) and references (stored in the index), made once each."""

    def __init__(self, references: Any, files: dict[str, str], limits: ImageLimits):
        self.references, self.files, self.limits = references, files, limits
        self._suspects: dict[str, str | None] = {}
        self._references: dict[int, str | None] = {}

    def suspect(self, key: str) -> str | None:
        if key not in self._suspects:
            image = query_picture(self.files.get(key), self.limits)
            self._suspects[key] = data_uri(image, SUMMARY_PICTURE_SIDE) if image is not None else None
        return self._suspects[key]

    def reference(self, ref_id: int) -> str | None:
        if ref_id not in self._references:
            data = self.references.reference_thumbnail(ref_id) if self.references is not None else None
            self._references[ref_id] = thumbnail_uri(data) if data else None
        return self._references[ref_id]


def _key(line: dict[str, Any]) -> str:
    return f"{line['n']}:{line['suspect']}"


def _account_cell(line: dict[str, Any]) -> str:
    name = esc(line.get("account") or "(unknown account)")
    url = line.get("profile_url") or ""
    shown = f'<a href="{esc(url)}" rel="noreferrer noopener">{name}</a>' if url.lower().startswith(("http://", "https://")) else name
    return f'<td data-value="{esc(line.get("account") or "")}">{shown}</td>'


def _suspect_cell(line: dict[str, Any], best: Match | None, pictures: _Pictures) -> str:
    shapes = []
    if best is not None and best.verdict in ("copy", "owner"):
        shared = shared_part_on_query(best)
        if shared is not None:
            shapes.append(rect(shared, MATCH_COLOUR, "query-shared"))
    frame = line.get("query_size")
    return f"<td>{picture(pictures.suspect(_key(line)), frame, shapes, 'suspect', 'suspect')}<div class='muted'>{esc(line['suspect'])}</div></td>"


def _reference_cell(best: Match, pictures: _Pictures) -> str:
    shapes = [rect(best.box, MATCH_COLOUR, "reference-box")] if best.box is not None and best.verdict in ("copy", "owner") else []
    return (f"<td>{picture(pictures.reference(best.ref_id), best.reference_frame, shapes, 'reference', 'reference')}"
            f"<div class='muted'>#{best.ref_id} {esc(best.path)}</div></td>")


def _victim_row(line: dict[str, Any], pictures: _Pictures) -> str:
    best = Match.from_dict({**line["matches"][0], "verdict": line["verdict"]})
    done = describe_transform(best) if line["verdict"] in ("copy", "owner") else "no shared pixels proven"
    if line["verdict"] == "owner":
        done = "the victim's own account (allowlisted)"
    score = best.score
    return (f'<tr data-verdict="{esc(line["verdict"])}" data-key="{esc(_key(line))}">{_account_cell(line)}'
            f"<td>{esc(line.get('seen_at') or '')}</td>{_suspect_cell(line, best, pictures)}{_reference_cell(best, pictures)}"
            f"<td>{esc(done)}</td><td data-value='{esc(line['verdict'])}'>{verdict_badge(line['verdict'])}</td>"
            f"<td data-value='{score:.4f}'>{score:.3f}</td></tr>")


_VICTIM_HEAD = ("<thead><tr><th data-sort='text'>account</th><th data-sort='text'>seen</th><th>suspect</th>"
                "<th>reference photo</th><th>what was done</th><th data-sort='text'>verdict</th>"
                "<th data-sort='number'>score</th></tr></thead>")


def _victim_sections(lines: Sequence[dict[str, Any]], pictures: _Pictures, grouped: set[str]) -> list[str]:
    victims: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        # a suspect only similar to a reference but proven to share a photo with other suspects
        # is shown with them (unknown victim), not under a victim it was never copied from
        if line["verdict"] == "similar" and _key(line) in grouped:
            continue
        if line["verdict"] in FILED_UNDER_VICTIM and line.get("matches"):
            best = line["matches"][0]
            victims.setdefault(best.get("subject") or f"(no subject) {best['path']}", []).append(line)

    def weight(item):
        name, rows = item
        return (-sum(row["verdict"] == "copy" for row in rows), -len(rows), name)

    sections = []
    for number, (name, rows) in enumerate(sorted(victims.items(), key=weight), 1):
        accounts = {row.get("account") or _key(row) for row in rows if row["verdict"] == "copy"}
        photos = {row["matches"][0]["ref_id"] for row in rows if row["verdict"] == "copy"}
        owners = sum(row["verdict"] == "owner" for row in rows)
        similar = sum(row["verdict"] == "similar" for row in rows)
        headline = f"{len(accounts)} account(s) use {len(photos)} of their photo(s)"
        extras = [f"{owners} from their own account(s)" if owners else "", f"{similar} similar, not proven" if similar else ""]
        headline += "".join(f"; {text}" for text in extras if text)
        body = "".join(_victim_row(row, pictures) for row in rows)
        sections.append(f'<section class="case" data-group="victim" id="victim{number}"><h2>{esc(name)}</h2>'
                        f'<p class="muted">{esc(headline)}</p><table>{_VICTIM_HEAD}<tbody>{body}</tbody></table></section>')
    return sections


def _unknown_sections(lines: Sequence[dict[str, Any]], groups: Sequence[dict[str, Any]], pictures: _Pictures) -> list[str]:
    by_key = {_key(line): line for line in lines}
    sections = []
    for number, group in enumerate(groups, 1):
        evidence: dict[str, dict[str, Any]] = {}
        for link in group["links"]:  # per suspect, its strongest link
            if link["suspect"] not in evidence or link["inliers"] > evidence[link["suspect"]]["inliers"]:
                evidence[link["suspect"]] = link
        members = [by_key[key] for key in group["members"] if key in by_key]
        accounts = {line.get("account") or _key(line) for line in members}
        rows = []
        for line in members:
            link = evidence.get(_key(line))
            relation = (f"copy of {esc(by_key[link['copies']]['suspect'])}: {esc(link['transform'] or 'same picture')} "
                        f"({link['inliers']} keypoints)" if link and link["copies"] in by_key else "shares the photo")
            rows.append(f'<tr data-verdict="{esc(line["verdict"])}" data-key="{esc(_key(line))}">{_account_cell(line)}'
                        f"<td>{esc(line.get('seen_at') or '')}</td><td>{picture(pictures.suspect(_key(line)), None, (), 'suspect', 'suspect')}"
                        f"<div class='muted'>{esc(line['suspect'])}</div></td><td>{relation}</td>"
                        f"<td data-value='{esc(line['verdict'])}'>{verdict_badge(line['verdict'])}</td></tr>")
        head = ("<thead><tr><th data-sort='text'>account</th><th data-sort='text'>seen</th><th>suspect</th>"
                "<th>evidence</th><th data-sort='text'>verdict vs the index</th></tr></thead>")
        sections.append(f'<section class="case" data-group="unknown" id="unknown{number}">'
                        f"<h2>Unknown victim: {len(accounts)} account(s) share this photo</h2>"
                        f"<p class='muted'>{len(members)} suspect images are verified copies of one another; "
                        f"their source is not in the index.</p><table>{head}<tbody>{''.join(rows)}</tbody></table></section>")
    return sections


def _leftover_section(lines: Sequence[dict[str, Any]], grouped: set[str]) -> str:
    rows = []
    for line in lines:
        if (line["verdict"] in FILED_UNDER_VICTIM and line.get("matches")) or _key(line) in grouped:
            continue
        reason = line.get("error") or "no reference and no other suspect shares pixels with it"
        rows.append(f'<tr data-verdict="{esc(line["verdict"])}" data-key="{esc(_key(line))}">{_account_cell(line)}'
                    f"<td>{esc(line['suspect'])}</td><td>{verdict_badge(line['verdict'])}</td><td>{esc(reason)}</td></tr>")
    if not rows:
        return ""
    return ("<section class='case' data-group='rest'><h2>No match, or unreadable</h2><table><thead><tr>"
            "<th data-sort='text'>account</th><th data-sort='text'>suspect</th><th data-sort='text'>verdict</th><th>why</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table></section>")


def scan_summary_html(lines: Sequence[dict[str, Any]], groups: Sequence[dict[str, Any]], references: Any,
                      limits: ImageLimits | None = None) -> str:
    """The summary page of a scan's results lines and suspect groups (see the module docstring);
    suspects' pictures are read from the files their lines name."""
    files = {_key(line): line.get("file") or line["suspect"] for line in lines}
    pictures = _Pictures(references, files, limits or DEFAULT_LIMITS)
    counts: dict[str, int] = {}
    for line in lines:
        counts[line["verdict"]] = counts.get(line["verdict"], 0) + 1
    options = "".join(f"<option value='{esc(v)}'>{esc(v.replace('_', ' '))} ({counts[v]})</option>" for v in sorted(counts))
    grouped = {key for group in groups for key in group["members"]}
    victims = _victim_sections(lines, pictures, grouped)
    copied = {line["matches"][0].get("subject") or line["matches"][0]["path"] for line in lines if line["verdict"] == "copy"}
    body = [f"<h1>Scan of {len(lines)} suspect image(s)</h1>",
            f"<p class='muted'>{len(copied)} victim(s) in the index have their photos copied, {len(groups)} unknown victim(s) "
            "shared by several suspects. Red outline: the part of the reference the suspect shows.</p>",
            f"<p class='filters'><label>verdict <select data-filter='verdict'><option value='all'>all</option>{options}"
            "</select></label></p>", "<h2>By victim</h2>", *(victims or ["<p>none</p>"])]
    unknown = _unknown_sections(lines, groups, pictures)
    if unknown:
        body += ["<h2>Unknown victims</h2>", *unknown]
    body.append(_leftover_section(lines, grouped))
    return document(f"provenance scan: {len(lines)} suspects", body, SORT_AND_FILTER_SCRIPT)


def write_scan_summary(out: str | os.PathLike, lines: Sequence[dict[str, Any]], groups: Sequence[dict[str, Any]],
                       references: Any, limits: ImageLimits | None = None) -> Path:
    """Write :func:`scan_summary_html` to ``out`` atomically."""
    path = Path(out)
    atomic_write_bytes(path, scan_summary_html(lines, groups, references, limits).encode("utf-8"))
    return path
