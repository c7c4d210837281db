"""Listing output shared by every command: a table for people, csv and json for programs."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Sequence

import click

FORMATS = ("table", "csv", "json")


def format_option(*choices: str, default: str = "table"):
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(choices or FORMATS),
        default=default,
        show_default=True,
        help="Output format.",
    )


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ";".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def emit_rows(rows: Iterable[dict], columns: Sequence[str], fmt: str, *, title: str | None = None) -> int:
    """Write rows in the chosen format; streams csv/json. Returns the number of rows."""
    count = 0
    if fmt == "json":
        out = sys.stdout
        out.write("[")
        for row in rows:
            out.write(("," if count else "") + "\n  " + json.dumps(row, ensure_ascii=False, default=str))
            count += 1
        out.write("\n]\n" if count else "]\n")
        return count
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])
            count += 1
        return count
    # rich only for a table: csv and json (and every other command) start without it.
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False, header_style="bold")
    for c in columns:
        table.add_column(c)
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
        count += 1
    # Piped output has no terminal width; do not squeeze columns to 80.
    console = Console() if sys.stdout.isatty() else Console(width=200)
    console.print(table)
    return count


def emit_json(value: object) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))
