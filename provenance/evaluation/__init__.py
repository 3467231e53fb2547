"""Evaluation: seeded transformed queries, ISC21-style metrics, hash baselines, reports.

Entry point: :func:`run_evaluation` with an :class:`EvalConfig`. Transform families
live in :data:`FAMILIES` (``name -> function(image, rng) -> (image, params)``); the
scoring functions in :mod:`provenance.evaluation.metrics` are pure.
"""

from __future__ import annotations

from .runner import EvalConfig, EvalSummary, run_evaluation
from .families import FAMILIES, apply_family, family_rng
from .queries import plan_queries  # noqa: F401  (registers every family)

__all__ = ["FAMILIES", "EvalConfig", "EvalSummary", "apply_family", "family_rng", "run_evaluation"]
