"""Suspects that copy each other: one stolen photo reused by many accounts, victim unknown.

Scam networks post one photo from many accounts, often of someone who is not in the index.
The suspects no reference explains are indexed on their own (``suspects-index`` in the scan
folder, same embedder, resumable like any reindex) and each is queried against it; a
verified copy between two suspects links them, and linked suspects form a group.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from ..results import VERDICT_COPY

#: Verdicts of suspects that no reference explains: only these are linked to each other
#: (a suspect copied from a reference is already grouped under its victim).
UNEXPLAINED = ("similar", "no_match")
#: Matches looked at per suspect when linking (a big network shares one photo widely).
LINK_TOP_K = 20


def link_suspects(engine: Any, lines: list[dict[str, Any]], work_dir: Path, batch_size: int,
                  report: Callable[[str, int, int], None]) -> list[dict[str, Any]]:
    """Groups of two or more suspects that are verified copies of one another, largest first.

    Each group: ``members`` (suspect keys, in input order) and ``links`` (which suspect
    copies which, with the evidence: inliers, coverage, transform, box on the other one).
    """
    from ..engine import Engine
    from ..search.batch import query_stream

    unexplained = [line for line in lines if line["verdict"] in UNEXPLAINED]
    if len(unexplained) < 2:
        return []
    work_dir.mkdir(parents=True, exist_ok=True)
    manifest = work_dir / "suspects.jsonl"
    with open(manifest, "w", encoding="utf-8") as handle:
        for line in unexplained:
            key = f"{line['n']}:{line['suspect']}"
            file = str(line["file"])
            handle.write(json.dumps({"path": file, "key": key}, ensure_ascii=False) + "\n")
    with Engine.open_or_create(work_dir / "index", engine.embedder, regions=engine.regions) as suspects:
        suspects.image_limits = engine.image_limits
        suspects.reindex(manifest, workers=0 if len(unexplained) < 64 else None,
                         progress=lambda done, total: report("index suspects", done, total))
        edges = []
        stream = query_stream(suspects, unexplained, top_k=LINK_TOP_K, batch_size=batch_size,
                              image_of=lambda line: str(line["file"]))
        for done, (line, result) in enumerate(stream, 1):
            key = f"{line['n']}:{line['suspect']}"
            if not isinstance(result, Exception):
                edges += [_edge(key, match) for match in result.matches
                          if match.verdict == VERDICT_COPY and match.extra.get("key") not in (None, key)]
            report("link suspects", done, len(unexplained))
    return _groups(edges, [f"{line['n']}:{line['suspect']}" for line in unexplained])


def _edge(key: str, match) -> dict[str, Any]:
    from ..report.evidence import describe_transform

    return {"suspect": key, "copies": match.extra["key"], "score": round(match.score, 4), "inliers": match.inliers,
            "coverage": match.coverage, "box": list(match.box) if match.box else None,
            "transform": describe_transform(match), "frame": list(match.reference_frame) if match.reference_frame else None}


def _groups(edges: list[dict[str, Any]], order: list[str]) -> list[dict[str, Any]]:
    parent = {key: key for key in order}
    position = {key: number for number, key in enumerate(order)}

    def root(key: str) -> str:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for edge in edges:
        if edge["copies"] in parent:
            first, second = root(edge["suspect"]), root(edge["copies"])
            if first != second:
                parent[max(first, second, key=position.get)] = min(first, second, key=position.get)
    members: dict[str, list[str]] = {}
    for key in order:
        members.setdefault(root(key), []).append(key)
    groups = []
    for root_key, keys in members.items():
        if len(keys) < 2:
            continue
        inside = set(keys)
        links = [edge for edge in edges if edge["suspect"] in inside]
        groups.append({"members": keys, "links": links})
    return sorted(groups, key=lambda group: (-len(group["members"]), position.get(group["members"][0])))
