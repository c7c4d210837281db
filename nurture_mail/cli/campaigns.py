"""`nurture check`, `nurture preview`, `nurture plan`."""

from __future__ import annotations

import click

from . import cli
from .context import AppContext
from .output import emit_rows, format_option


@cli.command()
@click.pass_obj
def check(app: AppContext):
    """Validate every campaign and render every step of every template."""
    from dataclasses import replace

    from ..checking import check_sources, ledger_facts
    from ..workspace import load_sources

    settings = app.settings
    now = app.clock()
    templates, campaigns, errors = load_sources(settings)
    report = check_sources(templates, campaigns, errors, settings=settings, now=now)
    facts = ledger_facts(settings.database_url, [s.campaign for s in report.campaigns], now)
    for warning in report.warnings + (facts.warnings if facts is not None else []):
        click.echo(str(warning), err=True)
    for error in report.errors:
        click.echo(str(error), err=True)
    for summary in report.campaigns:
        if facts is not None:
            summary = replace(summary, audience=facts.audience.get(summary.campaign.id))
        click.echo(summary.line())
    if not report.ok:
        click.echo(f"{len(report.errors)} problem(s) in campaigns or templates", err=True)
        click.get_current_context().exit(1)
    steps = sum(s.steps for s in report.campaigns)
    click.echo(f"all good: {len(report.campaigns)} campaign(s), {steps} step(s)")


@cli.command()
@click.argument("campaign")
@click.option("--step", metavar="ID", help="The step to preview (default: the first).")
@click.option("--variant", metavar="ID", help="Force this A/B variant (default: the one the candidate gets).")
@click.option("--candidate", metavar="EMAIL", help="Render for this candidate (default: a sample).")
@click.option("--html", is_flag=True, help="Write the HTML part to a file and print its path.")
@click.pass_obj
def preview(app: AppContext, campaign, step, variant, candidate, html):
    """Show a step's subject, headers and text as a candidate would get it."""
    from pathlib import Path

    from ..candidates import RowError, normalise_email
    from ..errors import NurtureError
    from ..previewing import build_preview
    from ..store import ledger, pool
    from ..workspace import Workspace, WorkspaceError, load_sources, load_workspace

    settings = app.settings
    now = app.clock()
    record, suppressed = None, None
    if candidate is not None:
        try:
            address = normalise_email(candidate)
        except RowError as exc:
            raise NurtureError(str(exc)) from None
        workspace = load_workspace(settings, app.db)
        workspace.campaign(campaign)  # an unknown campaign fails before the candidate lookup
        with app.db.sessions() as session:
            row = pool.get_candidate(session, address)
            record = ledger.candidate_fields(row, pool.tags_of(session, [row.id]).get(row.id, []))
            suppressed = pool.is_suppressed(session, app.db, address)
    else:
        # A sample needs no database: nothing is read, and its links lead nowhere.
        templates, campaigns, errors = load_sources(settings)
        if errors or templates is None:
            raise WorkspaceError(errors)
        secret = settings.unsubscribe_secret.reveal() if settings.unsubscribe_secret else "preview"
        workspace = Workspace(templates, campaigns, secret)
    shown = build_preview(
        workspace.templates, settings, workspace.unsubscribe_secret, workspace.campaign(campaign),
        step_id=step, variant_id=variant, candidate=record, now=now, suppressed=suppressed,
    )
    who = "a sample candidate (use --candidate EMAIL for a real one)" if shown.sample else shown.email.to_addr
    variant_text = f", variant {shown.variant}" if shown.variant else ""
    click.echo(
        f"# {shown.campaign.id}, step {shown.step.id} ({shown.step.number} of "
        f"{len(shown.campaign.steps)}){variant_text}, for {who}",
        err=True,
    )
    for note in shown.notes:
        click.echo(f"note: {note}", err=True)
    for name, value in shown.headers():
        click.echo(f"{name}: {value}")
    click.echo()
    click.echo(shown.email.rendered.text, nl=False)
    if html:
        target = Path(shown.html_filename())
        target.write_text(shown.email.rendered.html, encoding="utf-8")
        click.echo(f"\nHTML part written to {target}")


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
