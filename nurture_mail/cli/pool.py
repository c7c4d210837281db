"""`nurture candidates ...`, `nurture unsubscribe`, `nurture forget`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import NurtureError
from . import cli
from .context import AppContext
from .output import emit_json, emit_rows, format_option

LIST_COLUMNS = ("email", "first_name", "last_name", "status", "tags", "timezone", "owner", "role")
PROGRESS_MIN_BYTES = 2_000_000


def _address(value: str) -> str:
    # Imported here, as in each command below: candidates.py loads email_validator, which
    # compiles its grammar on import - a cost every other command (`report`...) need not pay.
    from ..candidates import RowError, normalise_email

    try:
        return normalise_email(value)
    except RowError as exc:
        raise NurtureError(str(exc)) from None


@cli.group()
def candidates():
    """Import, list, show and update candidates in the talent pool."""


@candidates.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--map", "maps", multiple=True, metavar="SRC=DST", help='Rename a column, e.g. --map "Email Address=email".')
@click.option("--tag", "tags", multiple=True, metavar="T", help="Add this tag to every imported candidate.")
@click.option("--status", metavar="S", help="Set this status on every imported candidate.")
@click.option("--dry-run", is_flag=True, help="Validate and count, write nothing.")
@click.pass_obj
def import_(app: AppContext, file: Path, maps, tags, status, dry_run):
    """Import candidates from a CSV or JSON-lines FILE (upsert by email address)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from ..importer import ImportReport, parse_mapping, read_rows, records
    from ..store import pool

    mapping = parse_mapping(maps)
    report = ImportReport()
    now = app.clock()
    size = file.stat().st_size if file.is_file() else 0
    show_progress = sys.stderr.isatty() and size >= PROGRESS_MIN_BYTES
    progress = Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TimeRemainingColumn(),
        transient=True, disable=not show_progress,
    )
    with progress:
        task = progress.add_task(f"importing {file.name}", total=size)
        rows = read_rows(file, mapping, lambda n: progress.advance(task, n))
        recs = records(file, rows, extra_tags=tuple(tags), status=status.lower() if status else None, report=report)
        pool.import_records(app.db, str(file), recs, report, now=now, dry_run=dry_run)
    for line in report.errors:
        click.echo(line, err=True)
    verb = "would import" if dry_run else "imported"
    click.echo(
        f"{verb} {report.imported} candidates from {file} "
        f"({report.created} new, {report.updated} updated, {report.unchanged} unchanged, "
        f"{report.skipped} skipped"
        + (f", {report.suppressed} kept suppressed" if report.suppressed else "")
        + ")"
    )


@candidates.command("list")
@click.option("--campaign", metavar="ID", help="Only candidates enrolled in this campaign.")
@format_option()
@click.pass_obj
def list_(app: AppContext, campaign, fmt):
    """List candidates in the pool."""
    from ..store import pool

    emit_rows(pool.list_candidates(app.db, campaign=campaign), LIST_COLUMNS, fmt)


@candidates.command("show")
@click.argument("email")
@format_option("table", "json")
@click.pass_obj
def show(app: AppContext, email, fmt):
    """Show one candidate: fields, enrollments, sends and replies."""
    from ..store import pool

    data = pool.show_candidate(app.db, _address(email))
    if fmt == "json":
        emit_json(data)
        return
    for key in ("email", "full_name", "status", "tags", "timezone", "owner", "role", "stage_reached", "decided_at", "source", "suppressed"):
        value = data.get(key)
        if value not in (None, [], ""):
            click.echo(f"{key:>14}: {';'.join(value) if isinstance(value, list) else value}")
    for key, value in data["attributes"].items():
        click.echo(f"{key:>14}: {value}")
    for e in data["enrollments"]:
        reason = f" ({e['exit_reason']})" if e["exit_reason"] else ""
        click.echo(f"\ncampaign {e['campaign']}: {e['state']}{reason}, enrolled {e['enrolled_at']}")
        for s in e["sends"]:
            when = s["sent_at"] or s["due_at"]
            click.echo(f"  {s['step']:<20} {s['state']:<10} {when}  {s['reason'] or ''}")
    if data["replies"]:
        click.echo("\ninbound:")
        for r in data["replies"]:
            first = (r["text"] or r["subject"] or "").strip().splitlines()
            click.echo(f"  {r['received_at']}  {r['kind']:<11} {first[0] if first else ''}")


@candidates.command("update")
@click.argument("email")
@click.option("--status", metavar="S", help="New status (hired ends every enrollment).")
@click.option("--tag", "add", multiple=True, metavar="T", help="Add a tag.")
@click.option("--untag", "remove", multiple=True, metavar="T", help="Remove a tag.")
@click.pass_obj
def update(app: AppContext, email, status, add, remove):
    """Change a candidate's status or tags."""
    from ..candidates import option_status, option_tags
    from ..store import pool

    if not (status or add or remove):
        raise click.UsageError("nothing to change: give --status, --tag or --untag")
    status = option_status("--status", status or None)
    add, remove = option_tags("--tag", add), option_tags("--untag", remove)
    data = pool.update_candidate(
        app.db, _address(email), status=status, add_tags=add, remove_tags=remove, now=app.clock()
    )
    click.echo(f"{data['email']}: status {data['status']}, tags {';'.join(data['tags']) or '-'}")


@cli.command()
@click.argument("email")
@click.pass_obj
def unsubscribe(app: AppContext, email):
    """Unsubscribe an address: never mail it again; cancels every pending step."""
    from ..store import pool

    address = _address(email)
    new = pool.unsubscribe(app.db, address, app.clock())
    click.echo(f"{address} unsubscribed" if new else f"{address} was already suppressed")


@cli.command()
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def forget(app: AppContext, email, yes):
    """Erase a candidate everywhere; keep only a hashed suppression."""
    from ..store import pool

    address = _address(email)
    if not yes and sys.stdin.isatty():
        click.confirm(f"Erase every trace of {address}?", abort=True)
    existed = pool.forget(app.db, address, app.clock())
    click.echo(f"{address} forgotten" + ("" if existed else " (no candidate held it; suppressed)"))
