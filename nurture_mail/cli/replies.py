"""`nurture replies sync`, `nurture replies classify`."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ConfigError, NurtureError
from . import cli
from .context import AppContext
from .output import emit_rows, format_option


@cli.group()
def replies():
    """Read the inbox: sync replies, classify messages."""


def exit_when_of(settings) -> dict[str, frozenset[str]]:
    """campaign id -> exit_when, from the campaign files (refused while any has an error)."""
    from ..workspace import WorkspaceError, load_sources

    _templates, campaigns, errors = load_sources(settings)
    if errors:
        raise WorkspaceError(errors)
    return {c.id: frozenset(c.exit_when) for c in campaigns}


@replies.command("sync")
@click.option("--imap", "imap_url", metavar="URL", help="Read this IMAP mailbox (default: [imap] url).")
@click.option("--mbox", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Read an mbox file.")
@click.option("--maildir", type=click.Path(exists=True, file_okay=False, path_type=Path), help="Read a Maildir.")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def sync(app: AppContext, imap_url, mbox, maildir, files):
    """Read new inbound mail, match it to sends and act on it (read-only)."""
    from ..inbox import FilesInbox, MaildirInbox, MboxInbox, imap_from_settings
    from ..reply_sync import sync_replies

    settings = app.settings
    sources = []
    if imap_url:
        sources.append(imap_from_settings(settings, imap_url))
    if mbox:
        sources.append(MboxInbox(mbox))
    if maildir:
        sources.append(MaildirInbox(maildir))
    if files:
        sources.append(FilesInbox(files))
    if not sources:
        imap = imap_from_settings(settings)
        if imap is None:
            raise ConfigError(
                "no inbox to read: set [imap] url in nurture.toml (or NURTURE_IMAP_URL), "
                "or give --imap URL, --mbox PATH, --maildir PATH or .eml files"
            )
        sources.append(imap)
    exit_when = exit_when_of(settings)
    report = sync_replies(settings, app.db, now=app.clock(), exit_when=exit_when, sources=sources)
    for source in report.sources:
        state = f"error: {source.error}" if source.error else "ok"
        click.echo(
            f"{source.source}: {source.read} read, {source.new} new, "
            f"{source.duplicates} already stored ({state})"
        )
    click.echo(report.summary())
    if report.errors:
        raise NurtureError("; ".join(report.errors))


@replies.command("classify")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@format_option("table", "json")
@click.pass_obj
def classify(app: AppContext, files, fmt):
    """Classify .eml files as reply, auto_reply, bounce, unsubscribe or other."""
    from ..replies import classify as classify_message

    # Return dates written without a year are read against --now when given, else the
    # message's own Date header.
    # The settings hold --now / NURTURE_NOW, parsed and checked once (config.py).
    received = app.settings.now

    def rows():
        for path in files:
            v = classify_message(path.read_bytes(), received=received)
            yield {
                "file": str(path),
                "kind": str(v.kind),
                "bounce": v.bounce if v.kind == "bounce" else None,
                "recipient": v.recipient,
                "status": v.status,
                "return_date": v.return_date.isoformat() if v.return_date else None,
                "reason": v.reason,
                "diagnostic": v.diagnostic,
                "message_id": v.message_id,
                "from": v.from_addr,
                "subject": v.subject,
                "reply_text": v.reply_text,
            }

    columns = ["file", "kind", "bounce", "recipient", "status", "return_date", "reason"]
    emit_rows(rows(), columns, fmt)
