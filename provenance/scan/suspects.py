"""What a scan reads: the suspects (with their accounts) and the allowlist of official accounts."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ManifestError
from ..sources import scan_source

#: Columns of a suspects manifest with a meaning of their own; any other is kept as is.
ACCOUNT_FIELDS = ("account", "profile_url", "seen_at")


@dataclass(frozen=True)
class Suspect:
    """One suspect image: ``number`` is its position in the input (the scan's resume key with ``path``)."""

    number: int
    path: str  # as given in the manifest (or found in the folder)
    file: str  # where to read it
    account: str | None = None
    profile_url: str | None = None
    seen_at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.number}:{self.path}"

    def describe(self) -> dict[str, Any]:
        """The suspect's own fields, as written at the head of its results line."""
        return {"n": self.number, "suspect": self.path, "file": self.file, "account": self.account, "profile_url": self.profile_url,
                "seen_at": self.seen_at, "extra": dict(self.extra)}


def read_suspects(source: str | os.PathLike) -> list[Suspect]:
    """Suspects from a folder (every image, one unknown account each) or a CSV/JSONL with a ``path`` column.

    ``account``, ``profile_url`` and ``seen_at`` are optional columns; every other column is
    kept (``subject``, ``source_url`` and ``collection`` too: in a suspects list they are
    the suspect's, not a reference's).
    """
    suspects = []
    for number, record in enumerate(scan_source(source)):
        extra = {key: value for key, value in record.extra.items() if key not in ACCOUNT_FIELDS}
        for name in ("subject", "source_url", "collection"):
            if getattr(record, name) is not None:
                extra[name] = getattr(record, name)
        # absolute: the suspects' own index, the summary and a resumed run read it from elsewhere
        suspects.append(Suspect(number, record.path, os.path.abspath(record.file), _text(record.extra.get("account")),
                                _text(record.extra.get("profile_url")), _text(record.extra.get("seen_at")), extra))
    if not suspects:
        raise ManifestError(f"{source}: no suspect images")
    return suspects


def read_allowlist(path: str | os.PathLike) -> frozenset[tuple[str, str]]:
    """(subject, account) pairs of a victim's own official accounts, from a CSV with those two columns."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"subject", "account"} <= set(reader.fieldnames):
                raise ManifestError(f"{path}: the allowlist needs 'subject' and 'account' columns (found {reader.fieldnames})")
            pairs = set()
            for number, row in enumerate(reader, start=2):
                subject, account = _text(row.get("subject")), _text(row.get("account"))
                if subject is None or account is None:
                    raise ManifestError(f"{path}:{number}: empty subject or account")
                pairs.add((subject.casefold(), account.casefold()))
            return frozenset(pairs)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ManifestError(f"{path}: cannot read the allowlist ({exc})") from None


def is_owner(allowlist: frozenset[tuple[str, str]], subject: str | None, account: str | None) -> bool:
    """Whether ``account`` is one of ``subject``'s own accounts (case-insensitive)."""
    return bool(subject and account) and (subject.casefold(), account.casefold()) in allowlist


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def suspects_fingerprint(source: str | os.PathLike) -> dict[str, Any]:
    """What identifies a scan's input: resuming a scan of another input is refused."""
    path = Path(source).resolve()
    return {"source": str(path)}
