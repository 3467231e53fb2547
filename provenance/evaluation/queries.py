"""Benchmark rows and the seeded query plan.

Positive queries: for each family, a seeded sample of references (drawn from
``(seed, family)`` alone), each transformed with the generator of
``(seed, reference index, family)``. Negative queries: the rows of the negatives CSV,
optionally capped per kind by a seeded sample. Every choice depends only on the seed
and the names, so a run restricted to some families reproduces exactly those
families' queries from a full run.
"""

from __future__ import annotations

import csv
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..errors import BadInputError
from ..imageio import load_image
from . import profile, scams, threat, transforms  # noqa: F401  (each registers its families)
from .families import FAMILIES, apply_family, family_rng

#: Default number of references sampled per family (19 families -> 760 positives).
DEFAULT_PER_FAMILY = 40


@dataclass(frozen=True)
class Row:
    """One line of refs.csv or negatives.csv, with its file resolved."""

    path: str  # as written in the CSV (relative to the CSV's folder)
    file: Path
    subject: str | None = None
    source_url: str | None = None
    collection: str | None = None
    kind: str | None = None  # negatives only


@dataclass
class QuerySpec:
    """A planned query. ``index`` points into the references (positives) or negatives."""

    qid: str
    positive: bool
    group: str  # transform family (positives) or negative kind
    index: int
    params: dict[str, Any] = field(default_factory=dict)


def read_rows(csv_path: str | Path, required: Sequence[str] = ("path",)) -> list[Row]:
    """Rows of a benchmark CSV; paths are resolved against the CSV's folder."""
    csv_path = Path(csv_path)
    try:
        with open(csv_path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [name for name in required if name not in (reader.fieldnames or [])]
            if missing:
                raise BadInputError(f"{csv_path}: missing column(s) {', '.join(missing)}")
            rows = [
                Row(
                    path=line["path"],
                    file=csv_path.parent / line["path"],
                    subject=line.get("subject") or None,
                    source_url=line.get("source_url") or None,
                    collection=line.get("collection") or None,
                    kind=line.get("kind") or None,
                )
                for line in reader
            ]
    except FileNotFoundError:
        raise BadInputError(f"{csv_path}: file not found") from None
    if not rows:
        raise BadInputError(f"{csv_path}: no rows")
    return rows


def relabel(negatives: Sequence[Row], relabelled: Sequence[Row]) -> list[Row]:
    """``negatives`` with the kind given by ``relabelled`` (matched by path) where it names one."""
    kinds = {row.path: row.kind for row in relabelled if row.kind}
    unknown = sorted(set(kinds) - {row.path for row in negatives})
    if unknown:
        raise BadInputError(f"hard negatives not among the negatives: {', '.join(unknown[:3])}")
    return [Row(row.path, row.file, row.subject, row.source_url, row.collection, kinds.get(row.path, row.kind))
            for row in negatives]


def read_partial_copies(csv_path: str | Path) -> list[tuple[Row, str]]:
    """(query row, the reference path it shares pixels with) for each line of a ``path,ref`` CSV."""
    csv_path = Path(csv_path)
    rows = read_rows(csv_path, ("path",))
    with open(csv_path, newline="", encoding="utf-8") as handle:
        refs = [line.get("ref") or "" for line in csv.DictReader(handle)]
    if any(not ref for ref in refs):
        raise BadInputError(f"{csv_path}: every row needs a 'ref' column naming the reference it shares pixels with")
    return list(zip(rows, refs))


def resolve_families(names: Sequence[str] | None) -> list[str]:
    """The families to run, in registry order; ``None`` or empty means all."""
    if not names:
        return list(FAMILIES)
    unknown = [name for name in names if name not in FAMILIES]
    if unknown:
        raise BadInputError(f"unknown transform family {', '.join(unknown)}; known: {', '.join(FAMILIES)}")
    return [name for name in FAMILIES if name in set(names)]


def _sample(count: int, wanted: int, seed: int, key: str) -> list[int]:
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(key.encode("utf-8")), 7]))
    picks = rng.choice(count, size=min(wanted, count), replace=False)
    return sorted(int(p) for p in picks)


def transformed_kind(family: str, kind: str) -> str:
    """The negative kind of ``kind`` negatives put through ``family`` (e.g.
    ``avatar_tiny(same_subject_other_photo)``): a tiny avatar of another photo of a
    referenced person must not be a copy either."""
    return f"{family}({kind})"


def transform_of(kind: str) -> str | None:
    """The family a negative kind was put through (:func:`transformed_kind`), or None."""
    family, bracket, rest = kind.partition("(")
    return family if bracket and rest.endswith(")") and family in FAMILIES else None


def parse_negative_family(value: str) -> tuple[str, str]:
    """``FAMILY:KIND`` (the eval's ``--negative-family``) as a pair; raises BadInputError."""
    family, colon, kind = (part.strip() for part in value.partition(":"))
    if not colon or not family or not kind:
        raise BadInputError(f"--negative-family wants FAMILY:KIND, got {value!r}")
    return family, kind


def plan_queries(
    num_refs: int,
    negatives: Sequence[Row],
    families: Sequence[str],
    seed: int,
    per_family: int = DEFAULT_PER_FAMILY,
    limit: int | None = None,
    negative_families: Sequence[tuple[str, str]] = (),
) -> list[QuerySpec]:
    """The positive queries (``per_family`` references per family, capped by ``limit``),
    the negatives (all, or ``limit`` per kind), then for each (family, kind) of
    ``negative_families`` as many negatives of that kind put through the family."""
    wanted = per_family if limit is None else min(per_family, limit)
    specs = [
        QuerySpec(f"{family}/{index}", True, family, index)
        for family in families
        for index in _sample(num_refs, wanted, seed, f"family:{family}")
    ]
    by_kind: dict[str, list[int]] = {}
    for index, row in enumerate(negatives):
        by_kind.setdefault(row.kind or "negative", []).append(index)
    for kind, indices in sorted(by_kind.items()):
        chosen = indices if limit is None else [indices[i] for i in _sample(len(indices), limit, seed, f"neg:{kind}")]
        specs.extend(QuerySpec(f"neg:{kind}/{index}", False, kind, index) for index in chosen)
    for family, kind in negative_families:
        if family not in FAMILIES:
            raise BadInputError(f"unknown transform family {family}; known: {', '.join(FAMILIES)}")
        if kind not in by_kind:
            raise BadInputError(f"no negatives of kind {kind} to put through {family}; kinds: {', '.join(sorted(by_kind))}")
        indices, group = by_kind[kind], transformed_kind(family, kind)
        chosen = [indices[i] for i in _sample(len(indices), wanted, seed, f"neg:{group}")]
        specs.extend(QuerySpec(f"neg:{group}/{index}", False, group, index) for index in chosen)
    return specs


def load_rgb(row: Row) -> Image.Image:
    """The row's image, upright RGB (EXIF orientation applied)."""
    return load_image(row.file).image


def build_query(spec: QuerySpec, refs: Sequence[Row], negatives: Sequence[Row], seed: int) -> Image.Image:
    """The query image for ``spec``; fills ``spec.params`` for positives and transformed negatives."""
    image = load_rgb(refs[spec.index] if spec.positive else negatives[spec.index])
    family = spec.group if spec.positive else transform_of(spec.group)
    if family is None:
        return image
    image, spec.params = apply_family(family, image, family_rng(seed, spec.index, spec.group))
    return image
