"""Bulk triage of suspect images: which accounts use whose photos (``provenance scan``).

Above the engine: reads a suspects list, queries through the one batch loop, links suspects
that copy each other, writes ``results.jsonl``, ``groups.json`` and ``summary.html``.
"""

from .job import VERDICT_ERROR, VERDICT_OWNER, ScanSummary, read_results, run_scan
from .suspects import Suspect, read_allowlist, read_suspects

__all__ = ["ScanSummary", "Suspect", "VERDICT_ERROR", "VERDICT_OWNER", "read_allowlist", "read_results",
           "read_suspects", "run_scan"]
