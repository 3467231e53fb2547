"""provenance: find which reference photo a suspect image was copied from.

Importing this package is cheap: torch, FAISS and models load on first use.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# FAISS's OpenMP threads spin after every search by default and take the cores the model and
# verification threads are using (a query ran 25 % slower on 2 cores). Read once, when FAISS
# loads its OpenMP runtime (lazily, after this); a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import (
    BadInputError,
    CorruptIndexError,
    EmbedderUnavailableError,
    ImageLoadError,
    IncompatibleIndexError,
    IndexExistsError,
    IndexNotFoundError,
    ProvenanceError,
)
from .results import IndexInfo, Match, QueryResult, ReindexSummary

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .engine import Engine


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from .engine import Engine

        return Engine
    raise AttributeError(f"module 'provenance' has no attribute {name!r}")


__all__ = [
    "BadInputError",
    "CorruptIndexError",
    "EmbedderUnavailableError",
    "Engine",
    "ImageLoadError",
    "IncompatibleIndexError",
    "IndexExistsError",
    "IndexInfo",
    "IndexNotFoundError",
    "Match",
    "ProvenanceError",
    "QueryResult",
    "ReindexSummary",
]
