"""`nurture demo`: a self-contained tour on the embedded defaults.

A temporary workspace from `nurture init`, the sample pool, the example campaigns, and a real
SMTP server (aiosmtpd) on a loopback port. The engine then lives through about six months in
minutes: each beat jumps the clock to the next time something is due, exactly as `nurture run`
would reach it, and sends through the real SMTP path.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path

from sqlalchemy import select

from .config import load_settings
from .database import open_database
from .engine import Engine
from .importer import ImportReport, read_rows, records
from .models import Enrollment, Send
from .scaffold import create_workspace
from .store import ledger, pool
from .testing import FixedClock, SmtpSink
from .transport import make_transport
from .workspace import load_workspace

DEMO_START = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # a Monday morning
DEMO_DAYS = 190
MAX_BEATS = 2000


def run_demo(*, keep: Path | None, echo: Callable[[str], None]) -> None:
    if keep is not None:
        _tour(keep, echo)
        return
    with tempfile.TemporaryDirectory(prefix="nurture-demo-") as tmp:
        _tour(Path(tmp), echo)


def _tour(workdir: Path, echo: Callable[[str], None]) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    create_workspace(workdir)
    sink = SmtpSink().start()
    try:
        config = workdir / "nurture.toml"
        config.write_text(
            config.read_text()
            + f'\n[smtp]\nurl = "{sink.url}"\nstarttls = "off"   # a local demo server\nrate_per_minute = 0\n'
        )
        echo(f"1. workspace {workdir} (nurture init), SMTP server on {sink.url}")
        settings = load_settings(config, env={})
        db = open_database(settings.database_url)
        try:
            _import(db, workdir, echo)
            workspace = load_workspace(settings, db)
            names = ", ".join(f"{c.id} ({len(c.steps)} steps)" for c in workspace.campaigns)
            echo(f"3. campaigns: {names}")
            beats, end = _live(settings, db, workspace, sink)
            echo(f"4. {beats} beats of the daemon from {DEMO_START:%Y-%m-%d} to {end:%Y-%m-%d}")
            _summary(db, sink, echo)
        finally:
            db.dispose()
    finally:
        sink.stop()


def _import(db, workdir: Path, echo) -> None:
    report = ImportReport()
    path = workdir / "candidates.csv"
    recs = records(path, read_rows(path, {}), extra_tags=(), status=None, report=report)
    pool.import_records(db, "candidates.csv", recs, report, now=DEMO_START - timedelta(days=1))
    statuses = Counter(c["status"] for c in pool.list_candidates(db))
    shown = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    echo(f"2. imported {report.imported} candidates from the sample pool ({shown})")


def _live(settings, db, workspace, sink) -> tuple[int, datetime]:
    """Beat, then jump to the next due time (at least a minute, at most a week later)."""
    now, end = DEMO_START, DEMO_START + timedelta(days=DEMO_DAYS)
    beats = 0
    active = [c.id for c in workspace.campaigns]
    while now < end and beats < MAX_BEATS:
        engine = Engine(settings, db, workspace, make_transport(settings), clock=FixedClock(now))
        engine.tick(now)
        beats += 1
        with db.sessions() as session:
            due = ledger.next_due(session, active)
        step = timedelta(days=7) if due is None else min(max(due - now, timedelta(minutes=1)), timedelta(days=7))
        now += step
    return beats, min(now, end)


def _summary(db, sink: SmtpSink, echo) -> None:
    with db.sessions() as session:
        rows = session.execute(select(Send.campaign_id, Send.step_id, Send.state)).all()
        exits = Counter(
            session.execute(select(Enrollment.exit_reason).where(Enrollment.exit_reason.is_not(None))).scalars()
        )
    by_step = Counter((c, s) for c, s, state in rows if state == "sent")
    echo(f"5. the SMTP server received {len(sink.received)} messages:")
    for (campaign, step), n in sorted(by_step.items()):
        echo(f"     {campaign:<18} {step:<12} {n:>3} sent")
    others = Counter(state for _, _, state in rows if state != "sent")
    if others:
        echo("   other ledger rows: " + ", ".join(f"{n} {s}" for s, n in sorted(others.items())))
    if exits:
        echo("   enrollments ended: " + ", ".join(f"{n} {r}" for r, n in sorted(exits.items())))
    ids = [message_from_bytes(r.data)["Message-ID"] for r in sink.received]
    echo(f"   duplicates at the server: {len(ids) - len(set(ids))}")
    if sink.received:
        sample = message_from_bytes(sink.received[0].data)
        echo(f'   first message: to {sample["To"]}, subject "{sample["Subject"]}", {sample["Date"]}')
    echo("next: `nurture init mypool` and edit campaigns/*.yaml and templates/*.md; see README.md")
