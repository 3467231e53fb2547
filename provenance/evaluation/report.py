"""Writing results: metrics.json, metrics.md (side-by-side tables) and queries.jsonl."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

DASH = "—"


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: numbers rounded, ``None`` as a dash."""
    if value is None:
        return DASH
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _threshold(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    align = ["---"] + ["---:"] * (len(header) - 1)
    return [_row(header), _row(align), *(_row(r) for r in rows)]


def overall_rows(systems: dict[str, dict]) -> list[list[str]]:
    """The headline rows of the side-by-side table, one column per system."""
    names = list(systems)

    def line(label: str, getter) -> list[str]:
        return [label, *(getter(systems[name]) for name in names)]

    def verdict(m: dict, key: str) -> str:
        return fmt(m["verdict"][key]) if m.get("verdict") else DASH

    timing = lambda m, key: fmt(m["timing"].get(key), 1)  # noqa: E731
    return [
        line("µAP", lambda m: fmt(m["micro_ap"])),
        line("recall @ precision 0.90", lambda m: fmt(m["recall_at_p90"])),
        line("  threshold (P90)", lambda m: _threshold(m["threshold_at_p90"])),
        line("recall @ precision 0.99", lambda m: fmt(m["recall_at_p99"])),
        line("  threshold (P99)", lambda m: _threshold(m["threshold_at_p99"])),
        line("recall@1", lambda m: fmt(m["recall_at_1"])),
        line("recall@5", lambda m: fmt(m["recall_at_5"])),
        line("verdict precision", lambda m: verdict(m, "precision")),
        line("verdict recall", lambda m: verdict(m, "recall")),
        line("index time (s)", lambda m: timing(m, "index_seconds")),
        line("query median (ms)", lambda m: timing(m, "median_ms")),
        line("query p95 (ms)", lambda m: timing(m, "p95_ms")),
    ]


def markdown(systems: dict[str, dict], run: dict) -> str:
    """The metrics as markdown: overall, per family, per negative kind, engine verdicts."""
    names = list(systems)
    first = systems[names[0]]
    lines = [
        f"# Evaluation (seed {run['seed']})",
        "",
        f"{first['positives']} positive queries over {len(first['per_family'])} families, "
        f"{first['negatives']} negative queries; {run['references']} references.",
        "",
        *_table(["metric", *names], overall_rows(systems)),
        "",
        "## Recall at the P99 threshold, per family",
        "",
    ]
    family_rows = [
        [family, str(entry["queries"]), *(fmt(systems[n]["per_family"][family]["recall_at_p99"]) for n in names),
         fmt(entry["recall_at_1"])]
        for family, entry in first["per_family"].items()
    ]
    lines += _table(["family", "n", *names, f"{names[0]} recall@1"], family_rows)
    lines += ["", "## False-positive rate at the P99 threshold, per negative kind", ""]
    kind_rows = [
        [kind, str(entry["queries"]), *(fmt(systems[n]["negatives_fpr"][kind]["fpr_at_p99"]) for n in names)]
        for kind, entry in first["negatives_fpr"].items()
    ]
    lines += _table(["negative kind", "n", *names], kind_rows)
    for name in names:
        lines += _verdict_lines(name, systems[name].get("verdict"))
    partial = first.get("partial_copies")
    if partial:
        lines += ["", "## Partial copies of the same photograph (another crop of a reference's photo)", "",
                  *_table(["n", "copy of the shared reference (right)", "not flagged (acceptable)",
                           "copy of another reference (wrong)", "median coverage"],
                          [[str(partial["queries"]), str(partial["copy_of_shared_reference"]), str(partial["not_flagged"]),
                            str(partial["copy_of_other_reference"]), fmt(partial["median_coverage"])]])]
    return "\n".join(lines) + "\n"


def _verdict_lines(name: str, block: dict | None) -> list[str]:
    if not block:
        return []
    verdicts = sorted({v for counts in block["counts"].values() for v in counts})
    rows = [[group, *(str(counts.get(v, 0)) for v in verdicts)] for group, counts in block["counts"].items()]
    return ["", f"## {name} verdicts (flagged = anything but no_match/similar)", "",
            *_table(["queries", *verdicts], rows)]


def write_outputs(out_dir: Path, systems: dict[str, dict], run: dict, records: list[dict]) -> str:
    """Write metrics.json, metrics.md and queries.jsonl into ``out_dir``; returns the markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"run": run, "systems": systems}
    (out_dir / "metrics.json").write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    text = markdown(systems, run)
    (out_dir / "metrics.md").write_text(text, encoding="utf-8")
    with open(out_dir / "queries.jsonl", "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
    return text
