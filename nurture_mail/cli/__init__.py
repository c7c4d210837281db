"""The `nurture` command: the only place that prints or exits.

Each command group lives in its own module; this one holds the global options, the shared
context (settings, database, clock) and the single error boundary.
"""

from __future__ import annotations

import gc
import sys
import traceback

import click

from ..errors import NurtureError
from .context import AppContext


class NurtureGroup(click.Group):
    """Turns every NurtureError into one clean line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except NurtureError as exc:
            _fail(ctx, str(exc), exc)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:  # a bug: say so plainly, full detail with -v
            _fail(ctx, f"internal error: {type(exc).__name__}: {exc} (run with -v for details)", exc)

    def main(self, *args, **kwargs):
        return super().main(*args, **kwargs)


def _fail(ctx: click.Context, message: str, exc: BaseException) -> None:
    app = ctx.find_object(AppContext)
    if app is not None and app.verbose:
        traceback.print_exception(exc, file=sys.stderr)
    cause = exc.__cause__
    while cause is not None and app is not None and app.verbose:
        cause = cause.__cause__
    click.echo(f"error: {message}", err=True)
    ctx.exit(1)


@click.group(cls=NurtureGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Path to nurture.toml (default: ./nurture.toml).")
@click.option("--database", "database_url", metavar="URL", help="Database URL; overrides [database] url.")
@click.option("-v", "--verbose", is_flag=True, help="Show details and tracebacks.")
@click.option("--now", metavar="TIME", help="Run as if it were this ISO 8601 time (also env NURTURE_NOW).")
@click.version_option(package_name="nurture-mail", prog_name="nurture")
@click.pass_context
def cli(ctx: click.Context, config_path, database_url, verbose, now):
    """nurture_mail: keep your talent pool warm with drip campaigns written as code."""
    ctx.obj = AppContext(config_path=config_path, database_url=database_url, verbose=verbose, now=now)
    ctx.call_on_close(ctx.obj.close)


def main() -> None:
    """The `nurture` program: one command, then the process exits (embed `cli` instead)."""
    try:
        cli(prog_name="nurture")
    finally:
        # The command is over and the process exits: every object alive now stays until then.
        # Frozen, they are left out of the collections the interpreter runs as it shuts down,
        # which would otherwise walk them all again (60-80 ms once SQLAlchemy is loaded) and
        # free nothing that exiting does not free anyway.
        gc.freeze()


from . import admin, campaigns, delivery, pool, replies, reports  # noqa: E402,F401  (register commands)
