"""report.html: examples per family, the worst misses and the top false positives.

Each example shows the query next to the reference the primary system matched and
the true reference, as small JPEG thumbnails in ``thumbs/`` (relative links, so the
folder can be moved or zipped).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Callable

from PIL import Image

THUMB_SIZE = 160
STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin-bottom:1.5em}
td{border:1px solid #ddd;padding:6px;vertical-align:top;font-size:12px;max-width:260px}
img{display:block;margin-bottom:4px} .ok{color:#080} .bad{color:#b00} code{font-size:11px;word-break:break-all}
"""


class Thumbnails:
    """Writes each thumbnail once into ``out_dir/thumbs`` and returns its relative path."""

    def __init__(self, out_dir: Path):
        self.folder = out_dir / "thumbs"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._done: dict[str, str] = {}

    def get(self, key: str, make: Callable[[], Image.Image | None]) -> str | None:
        """Relative path of the thumbnail named ``key``, made by ``make`` on first use."""
        if key not in self._done:
            image = make()
            if image is None:
                return None
            image = image.convert("RGB")
            image.thumbnail((THUMB_SIZE, THUMB_SIZE))
            image.save(self.folder / f"{key}.jpg", quality=85)
            self._done[key] = f"thumbs/{key}.jpg"
        return self._done[key]


def _img(src: str | None, caption: str) -> str:
    picture = f'<img src="{html.escape(src)}" alt="">' if src else "<em>(no image)</em>"
    return f"<td>{picture}{caption}</td>"


def _example(record: dict, number: int, primary: str, thumbs: Thumbnails,
             query_image: Callable[[dict], Image.Image], ref_image: Callable[[str], Image.Image | None]) -> str:
    result = record["systems"][primary]
    query_src = thumbs.get(f"q{number:05d}", lambda: query_image(record))
    top = result["top"][0] if result["top"] else None
    ok = bool(result["correct"])
    status = '<b class="ok">correct</b>' if ok else '<b class="bad">wrong</b>'
    score = "—" if result["score"] is None else f"{result['score']:.4f}"
    cells = [_img(query_src, f"<b>{html.escape(record['qid'])}</b><br><code>"
                  f"{html.escape(json.dumps(record['params'])[:400])}</code>")]
    matched = thumbs.get(f"r_{_key(top)}", lambda: ref_image(top)) if top else None
    why = f"<br><small>{html.escape(result['why'])}</small>" if result.get("why") else ""
    cells.append(_img(matched, f"matched {status}: {html.escape(str(top))}<br>score {score}, "
                               f"verdict {html.escape(str(result['verdict']))}{why}"))
    if record["truth"] is not None:
        truth = thumbs.get(f"r_{_key(record['truth'])}", lambda: ref_image(record["truth"]))
        cells.append(_img(truth, f"true reference: {html.escape(record['truth'])}<br>rank "
                                 f"{result['rank'] + 1 if result['rank'] >= 0 else 'not in top-k'}"))
    else:
        cells.append(f"<td>negative ({html.escape(record['group'])}): {html.escape(record['source'])}</td>")
    others = [f"{html.escape(n)}: {'ok' if r['correct'] else 'wrong'} "
              f"{'—' if r['score'] is None else format(r['score'], '.4g')}"
              for n, r in record["systems"].items() if n != primary]
    cells.append(f"<td>{'<br>'.join(others)}</td>")
    return "<tr>" + "".join(cells) + "</tr>"


def _key(path: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in path)[-80:]


def select_examples(records: list[dict], primary: str, threshold: float | None, per_family: int,
                    worst: int) -> dict[str, list[int]]:
    """Record numbers to show: first ``per_family`` of each family, the worst misses and
    the highest-scoring wrong predictions of the ``primary`` system."""
    sections: dict[str, list[int]] = {}
    for number, record in enumerate(records):
        if record["positive"]:
            section = sections.setdefault(f"Family: {record['group']}", [])
            if len(section) < per_family:
                section.append(number)

    def score(number: int) -> float:
        value = records[number]["systems"][primary]["score"]
        return float("-inf") if value is None else value

    def recalled(number: int) -> bool:
        result = records[number]["systems"][primary]
        return bool(result["correct"]) and threshold is not None and score(number) >= threshold

    positives = [n for n, r in enumerate(records) if r["positive"] and not recalled(n)]
    wrong_top1 = sorted((n for n in positives if not records[n]["systems"][primary]["correct"]), key=lambda n: -score(n))
    too_low = sorted((n for n in positives if records[n]["systems"][primary]["correct"]), key=score)
    half = min((worst + 1) // 2, len(wrong_top1))  # confidently wrong first, then the faintest hits
    misses = wrong_top1[:half] + too_low[: worst - half]
    misses += wrong_top1[half: half + worst - len(misses)]
    sections["Worst misses (not recalled at the P99 threshold)"] = misses
    wrong = [n for n, r in enumerate(records) if not r["systems"][primary]["correct"] and score(n) > float("-inf")]
    sections["Highest-scoring false positives"] = sorted(wrong, key=lambda n: -score(n))[:worst]
    return sections


def write_html(out_dir: Path, records: list[dict], primary: str, threshold: float | None,
               query_image: Callable[[dict], Image.Image], ref_image: Callable[[str], Image.Image | None],
               per_family: int = 3, worst: int = 12) -> Path:
    """Write ``report.html`` and its thumbnails; returns the page's path."""
    thumbs = Thumbnails(out_dir)
    threshold_text = "none (precision 0.99 never reached)" if threshold is None else f"{threshold:.4g}"
    parts = [f"<!doctype html><meta charset='utf-8'><title>provenance evaluation</title><style>{STYLE}</style>",
             f"<h1>Failures and examples — {html.escape(primary)}</h1>",
             f"<p>P99 threshold: {html.escape(threshold_text)}. Columns: query (family and parameters), "
             "the reference it matched, the true reference, the baselines' top-1.</p>"]
    for title, numbers in select_examples(records, primary, threshold, per_family, worst).items():
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if not numbers:
            parts.append("<p>none</p>")
            continue
        rows = [_example(records[n], n, primary, thumbs, query_image, ref_image) for n in numbers]
        parts.append("<table>" + "".join(rows) + "</table>")
    page = out_dir / "report.html"
    page.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return page
