"""Pages people look at: the evidence page for queries, and the summary of a bulk scan.

Self-contained HTML (pictures embedded, no network needed to open them). Above the engine:
it reads results and the references' stored thumbnails, never the index files.
"""

from .evidence import describe_transform, evidence_html, explain, read_query_results, write_evidence_page

__all__ = ["describe_transform", "evidence_html", "explain", "read_query_results", "write_evidence_page"]
