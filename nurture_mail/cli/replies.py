"""`nurture replies sync`, `nurture replies classify`."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import NotAvailable
from . import cli
from .context import AppContext
from .output import format_option


@cli.group()
def replies():
    """Read the inbox: sync replies, classify messages."""


@replies.command("sync")
@click.option("--imap", "imap_url", metavar="URL", help="Read this IMAP mailbox (default: [imap] url).")
@click.option("--mbox", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Read an mbox file.")
@click.option("--maildir", type=click.Path(exists=True, file_okay=False, path_type=Path), help="Read a Maildir.")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def sync(app: AppContext, imap_url, mbox, maildir, files):
    """Read new inbound mail, match it to sends and act on it (read-only)."""
    raise NotAvailable("`nurture replies sync` is not available yet")


@replies.command("classify")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@format_option("table", "json")
def classify(files, fmt):
    """Classify .eml files as reply, auto_reply, bounce, unsubscribe or other."""
    raise NotAvailable("`nurture replies classify` is not available yet")
