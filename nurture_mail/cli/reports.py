"""`nurture report [CAMPAIGN]` and `nurture report pool`."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import NotAvailable
from . import cli
from .context import AppContext


@cli.command()
@click.argument("campaign", required=False)
@click.option("--since", metavar="DATE", help="Only sends and replies from this date on.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "html"]), default="table", show_default=True, help="Output format.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to this file.")
@click.pass_obj
def report(app: AppContext, campaign, since, fmt, output):
    """Reply rates by campaign, step and variant; `report pool` for warm/cooling/cold."""
    raise NotAvailable("`nurture report` is not available yet")
