"""A large pool, made inside the database (not through the importer, to keep setup short):
enrolment of 1,000,000 candidates, `plan` over them, and the daemon's peak memory."""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from .common import Figure, fresh_pg_schema, python
from .send import CAMPAIGN

T0 = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
ZONES = ["Europe/Berlin", "America/New_York", "Asia/Tokyo", "Europe/London", "America/Los_Angeles"]


def make_pool(db_url: str, n: int) -> None:
    """n candidates via one INSERT ... SELECT over a generated series."""
    from nurture_mail.database import open_database

    db = open_database(db_url)
    zone_case = "CASE (i % 5) " + " ".join(f"WHEN {k} THEN '{z}'" for k, z in enumerate(ZONES)) + " END"
    if db.dialect == "postgresql":
        series = f"SELECT generate_series(1, {n}) AS i"
        key = "md5(i::text)"
    else:
        series = f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) SELECT i FROM s"
        key = "lower(hex(randomblob(16)))"
    sql = f"""
        INSERT INTO candidates (email, first_name, last_name, full_name, status, timezone, role,
                                attributes, token_key, created_at, updated_at)
        SELECT 'person' || i || '@example' || (i % 97) || '.com', 'Name' || i, 'Surname', 'Name Surname',
               'rejected', {zone_case}, 'Engineer', '{{}}', {key}, '2027-01-01 00:00:00', '2027-01-01 00:00:00'
        FROM ({series}) AS g
    """
    with db.engine.begin() as conn:
        conn.execute(text(sql))
    db.dispose()


def _workspace(root: Path) -> None:
    from nurture_mail.scaffold import create_workspace

    create_workspace(root)
    for f in (root / "campaigns").glob("*.yaml"):
        f.unlink()
    (root / "campaigns" / "bench.yaml").write_text(CAMPAIGN)


def enrol_and_plan(n: int, backend: str) -> list[Figure]:
    from nurture_mail.config import load_settings
    from nurture_mail.database import open_database
    from nurture_mail.engine import Engine
    from nurture_mail.planning import plan_workspace
    from nurture_mail.testing import FixedClock
    from nurture_mail.transport import MemoryTransport
    from nurture_mail.workspace import load_workspace

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _workspace(root)
        drop = None
        db_url = f"sqlite:///{root / 'pool.db'}"
        if backend == "postgresql":
            db_url, drop = fresh_pg_schema()
        try:
            t = time.perf_counter()
            make_pool(db_url, n)
            setup = time.perf_counter() - t
            settings = load_settings(root / "nurture.toml", env={}, database_url=db_url)
            db = open_database(db_url)
            ws = load_workspace(settings, db)
            t, cpu = time.perf_counter(), time.process_time()
            plan_sends = len(plan_workspace(db, ws, set(), now=T0, days=30, default_timezone="UTC")[1])
            plan_s, plan_cpu = time.perf_counter() - t, time.process_time() - cpu
            engine = Engine(settings, db, ws, MemoryTransport(), clock=FixedClock(T0))
            t, cpu = time.perf_counter(), time.process_time()
            report = engine.tick(T0)
            tick_s, tick_cpu = time.perf_counter() - t, time.process_time() - cpu
            db.dispose()
        finally:
            if drop is not None:
                drop()
    # cpu_s: this process only (not the PostgreSQL server); wall time on a shared machine
    # moves with its load, CPU time much less.
    return [
        Figure(f"enrol+schedule {n:,} candidates: {backend}", tick_s, "s",
               {"cpu_s": round(tick_cpu, 1), "enrolled": report.enrolled, "scheduled": report.scheduled,
                "setup_s": round(setup, 1)}),
        Figure(f"plan 30 days over {n:,} candidates: {backend}", plan_s, "s",
               {"cpu_s": round(plan_cpu, 1), "planned_sends": plan_sends}),
    ]


def daemon_rss(n: int) -> Figure:
    """Peak RSS of `nurture run` enrolling and scheduling a pool of n (SQLite)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _workspace(root)
        db_url = f"sqlite:///{root / 'pool.db'}"
        make_pool(db_url, n)
        from nurture_mail.database import open_database

        cmd = [python(), "-m", "nurture_mail", "--database", db_url, "--now", T0.isoformat(), "run"]
        proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        db = open_database(db_url)
        start = time.perf_counter()
        scheduled = 0
        peak = 0.0
        while time.perf_counter() - start < 900 and proc.poll() is None:
            peak = max(peak, _peak_rss_mb(proc.pid))
            with db.engine.connect() as conn:
                scheduled = conn.execute(text("SELECT count(*) FROM sends")).scalar()
            if scheduled >= n:
                break
            time.sleep(1)
        db.dispose()
        peak = max(peak, _peak_rss_mb(proc.pid))
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
        if not peak:  # no /proc: the children's figure (inflated by a big parent, see below)
            import resource

            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return Figure(f"nurture run peak RSS, {n:,} candidates", peak, "MB",
                  {"scheduled": scheduled, "elapsed_s": round(time.perf_counter() - start, 1)})


def _peak_rss_mb(pid: int) -> float:
    """The daemon's own high-water mark (VmHWM; exec starts it afresh). RUSAGE_CHILDREN would
    count the benchmark process's size at fork time, several hundred MB after a 1M plan."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


__all__ = ["daemon_rss", "enrol_and_plan", "make_pool", "timedelta"]
