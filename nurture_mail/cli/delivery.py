"""`nurture tick`, `nurture run`, `nurture serve`."""

from __future__ import annotations

import logging
import sys
from datetime import timedelta
from typing import TYPE_CHECKING

import click

from . import cli
from .context import AppContext

if TYPE_CHECKING:  # the engine is imported by the commands that use it: startup stays quick
    from ..engine import Engine


@cli.command()
@click.option("--dry-run", is_flag=True, help="Show what would happen; send and write nothing.")
@click.pass_obj
def tick(app: AppContext, dry_run):
    """One pass: sync replies, enrol, send what is due; then exit."""
    from ..daemon import lock_for, sync_inbox

    if dry_run:
        _dry_run(app)
        return
    engine = build_engine(app)
    lock = lock_for(app.db, engine.owner, timedelta(minutes=10))
    if lock is not None:
        lock.acquire()
    try:
        now = app.clock()
        inbox = sync_inbox(app.settings, app.db, engine.workspace, now)
        if inbox is not None:
            click.echo(f"inbox: {inbox.summary()}")
            for error in inbox.errors:
                click.echo(f"inbox: {error}", err=True)
        report = engine.tick(now)
    finally:
        if lock is not None:
            lock.release()
    click.echo(report.summary())


@cli.command()
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Sender processes sharing the queue (one lock holder; the others help it send).")
@click.pass_obj
def run(app: AppContext, workers: int):
    """The daemon: tick on a schedule until SIGTERM/SIGINT."""
    from ..daemon import offset_clock, serve_forever

    logging.basicConfig(
        level=logging.DEBUG if app.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    settings = app.settings
    spawn = (app.config_path, app.database_url, app.now, app.verbose)
    serve_forever(settings, app.db, offset_clock(settings.now), workers=workers, spawn=spawn)


@cli.command()
@click.option("--host", metavar="H", help="Address to bind (default from [serve] host: 127.0.0.1).")
@click.option("--port", type=int, metavar="P", help="Port (default from [serve] port: 8025).")
@click.pass_obj
def serve(app: AppContext, host, port):
    """One-click unsubscribe endpoint and report dashboard."""
    import uvicorn

    from ..web import create_app, listen

    settings = app.settings
    host = host or settings.serve_host
    port = settings.serve_port if port is None else port
    web_app = create_app(settings, app.db, clock=app.clock)
    # Bind first, so a busy port is one clean error and --port 0 prints the port it got.
    sock = listen(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"nurture serve: http://{shown}:{bound}/ (unsubscribe at /u/..., Ctrl-C to stop)")
    config = uvicorn.Config(
        web_app, host=host, port=bound, log_level="info" if app.verbose else "warning"
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()


def _dry_run(app: AppContext) -> None:
    """What this tick would do, from the same forecast as `nurture plan`; writes nothing.
    (Inbox effects are not foreseen: a reply synced first could still stop a send.)"""
    from ..planning import plan_workspace
    from ..workspace import load_workspace

    workspace = load_workspace(app.settings, app.db)
    now = app.clock()
    newcomers, planned = plan_workspace(
        app.db, workspace, set(), now=now, days=0, default_timezone=app.settings.default_timezone
    )
    for cid, count in newcomers.items():
        click.echo(f"would enrol {count} in {cid}")
    for p in planned:
        click.echo(f"would send {p.campaign}/{p.step}{'/' + p.variant if p.variant else ''} to {p.email} "
                   f"(local {p.local_time:%Y-%m-%d %H:%M})")
    click.echo(f"dry run at {now:%Y-%m-%d %H:%M} UTC: {len(planned)} send(s) due, nothing written")


def build_engine(app: AppContext) -> Engine:
    from ..engine import Engine
    from ..transport import make_transport
    from ..workspace import load_workspace

    settings = app.settings
    workspace = load_workspace(settings, app.db)
    return Engine(settings, app.db, workspace, make_transport(settings), clock=app.clock)
