"""Pieces shared by the evidence page and the scan summary: self-contained HTML.

Every picture is embedded as a ``data:`` URI and the only script is inline, so a page opens
offline, can be mailed or attached to a case file, and prints (figures never split).
Outlines are SVG drawn in the picture's own pixel frame, laid over the ``<img>``.
"""

from __future__ import annotations

import base64
import html
from typing import Iterable, Sequence

from PIL import Image

from ..imageio import thumbnail_jpeg

#: Longer side of a picture on a page, in pixels.
PICTURE_SIDE = 320

STYLE = """
:root{--copy:#b3261e;--similar:#a15c00;--none:#44546a;--owner:#1b6e3a;--line:#d0d5dd}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;max-width:1100px;color:#1d2433;line-height:1.4;padding:0 1em}
h1{font-size:1.5em;margin:.2em 0} h2{font-size:1.2em;margin:1.2em 0 .4em} h3{font-size:1.05em;margin:.6em 0}
.muted{color:#5b6473;font-size:.9em}
.case{border:1px solid var(--line);border-radius:8px;padding:1em;margin:1em 0;break-inside:avoid;page-break-inside:avoid}
.pair{display:flex;gap:1.2em;flex-wrap:wrap;align-items:flex-start}
figure{margin:0;break-inside:avoid} figcaption{font-size:.85em;color:#5b6473;max-width:320px;word-break:break-all}
.picture{position:relative;display:inline-block;line-height:0;background:#f2f4f7}
.picture img{display:block;max-width:320px;max-height:320px}
.picture svg{position:absolute;left:0;top:0;width:100%;height:100%;overflow:visible}
.verdict{display:inline-block;padding:.1em .6em;border-radius:1em;color:#fff;font-weight:600;font-size:.9em}
.verdict.copy{background:var(--copy)} .verdict.similar{background:var(--similar)}
.verdict.no_match{background:var(--none)} .verdict.owner{background:var(--owner)} .verdict.error{background:#666}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em;margin:.6em 0}
dl.facts dt{color:#5b6473} dl.facts dd{margin:0;word-break:break-word}
table{border-collapse:collapse;width:100%;margin:.5em 0;font-size:.9em}
th,td{border-bottom:1px solid var(--line);padding:.35em .5em;text-align:left;vertical-align:top}
th{background:#f7f8fa} th[data-sort]{cursor:pointer} th[data-sort]:after{content:" \\2195";color:#98a2b3}
.legend span{display:inline-block;margin-right:1.2em;font-size:.85em}
.swatch{display:inline-block;width:1.6em;height:.8em;vertical-align:middle;margin-right:.3em}
.filters{margin:.6em 0;font-size:.9em} .filters label{margin-right:1em}
@media print{body{margin:0;max-width:none}.filters{display:none}a{color:inherit;text-decoration:none}}
"""

#: Colours of the outlines (also asserted on by the browser tests).
MATCH_COLOUR = "#ff1f5a"  # the part of the reference the suspect shows
FOOTPRINT_COLOUR = "#1f6fff"  # where the whole suspect lands on the reference


def esc(value: object) -> str:
    """HTML-escaped text of ``value`` ("" for None)."""
    return "" if value is None else html.escape(str(value), quote=True)


def data_uri(image: Image.Image, side: int = PICTURE_SIDE) -> str:
    """A JPEG ``data:`` URI of ``image`` shrunk to fit ``side``."""
    return jpeg_uri(thumbnail_jpeg(image, side, quality=82))


def jpeg_uri(data: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def thumbnail_uri(data: bytes) -> str:
    """``data:`` URI of a reference's stored thumbnail (:data:`~provenance.features.THUMB_MIME`)."""
    from ..features import THUMB_MIME

    return f"data:{THUMB_MIME};base64," + base64.b64encode(data).decode("ascii")


def picture(uri: str | None, frame: Sequence[float] | None, shapes: Iterable[str] = (), alt: str = "",
            role: str = "") -> str:
    """An image with SVG ``shapes`` drawn in ``frame`` (width, height) coordinates over it."""
    if uri is None:
        return f'<div class="picture missing" data-role="{esc(role)}" style="line-height:1.4;padding:2em">(image not available)</div>'
    shapes = list(shapes)
    overlay = ""
    if shapes and frame:
        overlay = (f'<svg viewBox="0 0 {frame[0]:g} {frame[1]:g}" preserveAspectRatio="none" aria-hidden="true">'
                   + "".join(shapes) + "</svg>")
    return f'<div class="picture" data-role="{esc(role)}"><img src="{uri}" alt="{esc(alt)}">{overlay}</div>'


def rect(box: Sequence[float], colour: str, role: str, dashed: bool = False) -> str:
    """An SVG outline of ``box`` (x0, y0, x1, y1); strokes keep their width however the picture is scaled."""
    x0, y0, x1, y1 = box
    dash = ' stroke-dasharray="6 4"' if dashed else ""
    return (f'<rect data-role="{esc(role)}" x="{x0:g}" y="{y0:g}" width="{max(0.0, x1 - x0):g}" height="{max(0.0, y1 - y0):g}" '
            f'fill="none" stroke="{colour}" stroke-width="3" vector-effect="non-scaling-stroke"{dash}/>')


def polygon(points: Sequence[tuple[float, float]], colour: str, role: str) -> str:
    joined = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    return (f'<polygon data-role="{esc(role)}" points="{joined}" fill="none" stroke="{colour}" stroke-width="2" '
            f'vector-effect="non-scaling-stroke" stroke-dasharray="5 4"/>')


def verdict_badge(verdict: str) -> str:
    return f'<span class="verdict {esc(verdict)}">{esc(verdict.replace("_", " "))}</span>'


def document(title: str, body: Sequence[str], script: str = "") -> str:
    """A whole page: ``body`` parts in order, the shared style, an optional inline script."""
    script_tag = f"<script>{script}</script>" if script else ""
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
            + "\n".join(body) + script_tag + "</body></html>\n")


#: Click a column head with ``data-sort`` to sort its table; a select with ``data-filter``
#: shows only rows whose ``data-verdict`` matches (sections with no row left are hidden).
SORT_AND_FILTER_SCRIPT = """
document.querySelectorAll('th[data-sort]').forEach(function(th){th.addEventListener('click',function(){
 var table=th.closest('table'),body=table.tBodies[0],index=Array.prototype.indexOf.call(th.parentNode.children,th);
 var numeric=th.dataset.sort==='number',dir=th.dataset.dir==='asc'?-1:1;th.dataset.dir=dir===1?'asc':'desc';
 var rows=Array.prototype.slice.call(body.rows);rows.sort(function(a,b){
  var x=a.cells[index].dataset.value||a.cells[index].textContent,y=b.cells[index].dataset.value||b.cells[index].textContent;
  if(numeric){x=parseFloat(x)||0;y=parseFloat(y)||0;return (x-y)*dir;}return x.localeCompare(y)*dir;});
 rows.forEach(function(row){body.appendChild(row);});});});
document.querySelectorAll('select[data-filter]').forEach(function(select){select.addEventListener('change',function(){
 var wanted=select.value;document.querySelectorAll('tr[data-verdict]').forEach(function(row){
  row.style.display=(wanted==='all'||row.dataset.verdict===wanted)?'':'none';});
 document.querySelectorAll('section[data-group]').forEach(function(section){
  var shown=Array.prototype.some.call(section.querySelectorAll('tr[data-verdict]'),function(r){return r.style.display!=='none';});
  section.style.display=shown?'':'none';});});});
"""
