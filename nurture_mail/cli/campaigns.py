"""`nurture check`, `nurture preview`, `nurture plan`."""

from __future__ import annotations

import click

from ..errors import NotAvailable
from . import cli
from .context import AppContext
from .output import emit_rows, format_option


@cli.command()
@click.pass_obj
def check(app: AppContext):
    """Validate every campaign and render every step of every template."""
    raise NotAvailable("`nurture check` is not available yet")


@cli.command()
@click.argument("campaign")
@click.option("--step", metavar="ID", help="The step to preview (default: the first).")
@click.option("--candidate", metavar="EMAIL", help="Render for this candidate (default: a sample).")
@click.option("--html", is_flag=True, help="Write the HTML part to a file and print its path.")
@click.pass_obj
def preview(app: AppContext, campaign, step, candidate, html):
    """Show a step's subject, headers and text as a candidate would get it."""
    raise NotAvailable("`nurture preview` is not available yet")


@cli.command()
@click.argument("campaign", required=False)
@click.option("--days", type=click.IntRange(1, 3660), default=30, show_default=True, help="How far ahead to look.")
@format_option()
@click.pass_obj
def plan(app: AppContext, campaign, days, fmt):
    """Upcoming sends (who, which step, when in UTC and local time); changes nothing."""
    from ..planning import plan_workspace
    from ..workspace import load_workspace

    workspace = load_workspace(app.settings, app.db)
    if campaign:
        workspace.campaign(campaign)  # a clear error for an unknown id
    now = app.clock()
    newcomers, planned = plan_workspace(
        app.db, workspace, {campaign} if campaign else set(), now=now, days=days,
        default_timezone=app.settings.default_timezone,
    )
    if fmt == "table":
        for cid, count in newcomers.items():
            click.echo(f"{cid}: {count} candidate(s) would be enrolled now", err=True)
    rows = (p.as_dict() for p in planned)
    count = emit_rows(rows, ("send_at", "local_time", "campaign", "step", "variant", "email"), fmt)
    if fmt == "table":
        click.echo(f"{count} send(s) in the next {days} day(s) from {now:%Y-%m-%d %H:%M} UTC", err=True)
