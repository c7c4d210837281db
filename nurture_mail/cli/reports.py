"""`nurture report [CAMPAIGN]` and `nurture report pool`.

The report modules (and through them the database layer, Jinja2 for html, rich for the table)
are imported by the command when it runs, for the format it writes: every other command starts
without them.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..durations import resolve_moment
from ..errors import NurtureError
from ..warmth import COLD_DAYS, GROUPS, SORTS, WARM_DAYS, PoolFilter
from . import cli
from .context import AppContext
from .output import _cell

if TYPE_CHECKING:
    from rich.table import Table


@cli.command()
@click.argument("campaign", required=False)
@click.option("--since", metavar="DATE", help="Only sends from DATE on (ISO date/time, or a duration such as 30d); their replies count whenever they came.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "html"]), default="table", show_default=True, help="Output format; html is one self-contained page with charts.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to this file instead of stdout.")
@click.option("--owner", metavar="NAME", help="pool: only candidates of this owner.")
@click.option("--tag", "tags", multiple=True, metavar="T", help="pool: only candidates with this tag (repeat: all of them).")
@click.option("--campaign", "pool_campaign", metavar="ID", help="pool: only candidates enrolled in this campaign.")
@click.option("--group", type=click.Choice(GROUPS), help="pool: only this group.")
@click.option("--sort", type=click.Choice(SORTS), default="group", show_default=True, help="pool: order of the rows.")
@click.option("--warm-days", type=click.IntRange(min=1), default=WARM_DAYS, show_default=True, help="pool: a reply this recent makes a candidate warm.")
@click.option("--cold-days", type=click.IntRange(min=1), default=COLD_DAYS, show_default=True, help="pool: no contact either way for this long makes a candidate cold.")
@click.pass_obj
def report(app: AppContext, campaign, since, fmt, output, owner, tags, pool_campaign, group, sort,
           warm_days, cold_days):
    """Reply rates by campaign, step and variant; `report pool` for warm/cooling/cold.

    Sent counts messages the SMTP server accepted; delivered is sent minus bounced; the reply
    rate is replied / delivered. Only inbound mail matched to a send counts.
    """
    now = app.clock()
    settings = app.settings
    if warm_days > cold_days:
        raise NurtureError(f"--warm-days ({warm_days}) cannot be longer than --cold-days ({cold_days})")
    pool_filter = PoolFilter(owner=owner, tags=tuple(tags), campaign=pool_campaign, group=group)
    if campaign == "pool":
        if since:
            raise click.UsageError("--since applies to campaign reports, not to `report pool`")
        from .. import pool_report

        limit = None
        if fmt == "html":  # the page shows the first rows only: the rest stay in the database
            from ..report_html import POOL_ROWS_SHOWN

            limit = POOL_ROWS_SHOWN
        pool = pool_report.gather_pool(app.db, now=now, warm_days=warm_days, cold_days=cold_days,
                                       where=pool_filter, sort=sort, limit=limit)
        text = _pool_text(pool, fmt, settings.company_name)
    else:
        pool_options = (("--owner", owner), ("--tag", tags), ("--campaign", pool_campaign),
                        ("--group", group))
        given = [flag for flag, value in pool_options if value]
        if given:
            raise click.UsageError(f"{', '.join(given)} filter `report pool` only")
        try:
            start = resolve_moment(since, now) if since else None
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--since") from None
        if fmt == "html":
            from ..report_html import gather_page, render

            result, pool = gather_page(app.db, now=now, since=start, campaign=campaign,
                                       warm_days=warm_days, cold_days=cold_days, sort=sort)
            name = settings.company_name
            text = render(result, pool, title=f"{name}: nurture report", company=name)
        else:
            from .. import reports

            result = reports.gather(app.db, now=now, since=start, campaign=campaign)
            text = _report_text(result, fmt)
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise NurtureError(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(f"wrote {output}", err=True)


def _report_text(result, fmt) -> str:
    """The campaign report as json, csv or a table (html: `report_html`, with the pool)."""
    from .. import reports

    if fmt == "json":
        return _json(reports.to_json(result))
    if fmt == "csv":
        return _csv(reports.flat_rows(result), reports.CSV_COLUMNS)
    from rich.table import Table

    table = Table(title="nurture report" + (f" since {result.since:%Y-%m-%d %H:%M} UTC" if result.since else ""),
                  header_style="bold")
    for column in reports.TABLE_COLUMNS:
        table.add_column(column, justify="left" if column.startswith("campaign") else "right")
    for row in reports.table_rows(result):
        table.add_row(*row)
    notes = []
    for c in result.campaigns:
        if c.exits:
            notes.append(f"{c.id}: exits " + ", ".join(f"{r} {n}" for r, n in c.exits.items()))
        notes += [f"{c.id} / {s.id}: {s.test.note}" for s in c.steps if s.test]
    notes.append("sent = accepted by the SMTP server; delivered = sent - bounced; rate = replied / delivered")
    return _rich(table, notes)


def _pool_text(pool, fmt, company) -> str:
    from .. import pool_report

    if fmt == "json":
        return _json(pool_report.to_json(pool))
    if fmt == "csv":
        return _csv(pool.rows, pool_report.COLUMNS)
    if fmt == "html":
        from ..report_html import render

        return render(None, pool, title=f"{company}: warm pool", company=company)
    from rich.table import Table

    table = Table(title=f"warm pool (warm: reply within {pool.warm_days}d, cold: nothing for {pool.cold_days}d)",
                  header_style="bold")
    for column in pool_report.COLUMNS:
        table.add_column(column)
    for row in pool.rows:
        table.add_row(*(_cell(row.get(c)) for c in pool_report.COLUMNS))
    counts = ", ".join(f"{n} {g}" for g, n in pool.counts.items())
    return _rich(table, [counts])


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2) + "\n"


def _csv(rows, columns) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buffer.getvalue()


def _rich(table: Table, notes: list[str]) -> str:
    from rich.console import Console

    # Piped output has no terminal width; do not squeeze columns to 80.
    width = None if sys.stdout.isatty() else 200
    console = Console(file=io.StringIO(), width=width, force_terminal=sys.stdout.isatty())
    console.print(table)
    for note in notes:
        console.print(note, highlight=False, markup=False)
    return console.file.getvalue()
