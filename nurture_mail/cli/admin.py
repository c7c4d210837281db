"""`nurture init`, `nurture db upgrade`, `nurture demo`."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import mask_url
from ..errors import NurtureError
from . import cli
from .context import AppContext


@cli.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
def init(directory: Path, force: bool):
    """Create a working directory: config, an example campaign, templates, sample candidates."""
    from ..scaffold import create_workspace

    written, kept = create_workspace(directory, force=force)
    for path in written:
        click.echo(f"created {path}")
    for path in kept:
        click.echo(f"kept    {path} (exists; --force to overwrite)")
    click.echo(
        f"\nnext: cd {directory} && nurture candidates import candidates.csv && nurture check && nurture plan"
    )


@cli.group()
def db():
    """Database administration."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(app: AppContext):
    """Create or migrate the database schema to the newest version."""
    from sqlalchemy.exc import OperationalError

    from ..database import create_db_engine, current_revision, upgrade

    url = app.settings.database_url
    engine = create_db_engine(url)
    try:
        before = current_revision(engine)
        upgrade(engine)
        after = current_revision(engine)
    except OperationalError as exc:  # unreachable server, bad credentials, locked file
        raise NurtureError(f"cannot open database {mask_url(url)}: {exc.orig}") from None
    finally:
        engine.dispose()
    click.echo(f"database at revision {after}" + (f" (was {before})" if before != after else " (up to date)"))


@cli.command()
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), help="Build the demo workspace here and keep it.")
@click.pass_obj
def demo(app: AppContext, keep: Path | None):
    """A self-contained tour on the embedded defaults (temporary workspace, local SMTP)."""
    from ..demo import run_demo

    run_demo(keep=keep, echo=click.echo)
