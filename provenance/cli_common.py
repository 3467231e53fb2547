"""What every ``provenance`` command module shares: the app, exit codes, error and limit options, progress bars.

:mod:`provenance.cli` and :mod:`provenance.cli_interfaces` both register their commands on
:data:`app`; neither imports the other's names.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import typer

from .errors import ProvenanceError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Find which reference photo a suspect image was copied from.")

DEFAULT_INDEX = Path("indexes/default")
EXIT_OK, EXIT_BAD_INPUT, EXIT_INDEX = 0, 3, 4


def _fail(exc: ProvenanceError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(exc.exit_code)


def _limits(max_file_mb: float, max_megapixels: float):
    from .imagelimits import DEFAULT_LIMITS

    return dataclasses.replace(DEFAULT_LIMITS, max_bytes=int(max_file_mb * (1 << 20)), max_pixels=int(max_megapixels * 1e6))


_MAX_FILE_MB = typer.Option(128.0, "--max-file-mb", min=0.001, help="Larger image files are refused unread.")
_MAX_MEGAPIXELS = typer.Option(100.0, "--max-megapixels", min=0.001,
                               help="Images with more pixels (read from the header) are refused undecoded.")


def _progress_bar(total_hint: int | None, description: str):
    from tqdm import tqdm

    return tqdm(total=total_hint, desc=description, unit="img", file=sys.stderr, dynamic_ncols=True,
                disable=None if sys.stderr.isatty() else False, mininterval=0.5)
