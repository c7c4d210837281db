"""How long `nurture report` takes over a big ledger, on SQLite and PostgreSQL.

Builds 1,000,000 sends (3 campaigns x 4 steps, two variants on one step, mixed states) for
250,000 candidates, plus inbound rows (replies to 10% of the sent sends, auto-replies, bounces)
- all with INSERT ... SELECT over a counter, so the build is bounded and quick - then times:

* the report queries alone (`reports.gather`, in process; median of 5 after one warm-up);
* the whole `nurture report --format json`, `table`, `csv` and `html` commands (a subprocess
  each, start-up and output included; median of 5 after one warm-up). They run with Python's
  bytecode cache on (in a temporary directory), as an installed package would.

Each figure is wall time and CPU time (user + sys): the machine may be shared, and CPU time is
what a busy neighbour disturbs least. CPU counts this process (in process) or the command's
process (CLI), plus, on PostgreSQL, the local server's processes (any other client's work
included: see load_avg_1m).

Prints `RESULT {json}` lines for `python -m bench`, plus a human summary.

    .venv/bin/python bench/report_bench.py [--rows N] [--backend sqlite|postgresql]
    .venv/bin/python bench/report_bench.py --database URL   # an existing database, as it is
    .venv/bin/python bench/report_bench.py --keep DIR       # SQLite: built once in DIR, then reused
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import PG_URL, fresh_pg_schema  # noqa: E402
from nurture_mail import reports  # noqa: E402
from nurture_mail.database import open_database  # noqa: E402

NOW = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)
STEPS = 4
RUNS = 5
FORMATS = ("json", "table", "csv", "html")


def _statements(dialect: str, sends: int) -> list[str]:
    """The dataset as INSERT ... SELECT statements; the same rows on both databases."""
    candidates = sends // STEPS
    if dialect == "postgresql":
        counter = f"generate_series(1, {candidates}) AS n(i)"
        steps = f"generate_series(1, {STEPS}) AS s(k)"
        day = "(TIMESTAMP '2026-01-05' + ((e.id * 7 + s.k * 61) % 360) * INTERVAL '1 day')"
        later = "(sent_at + (1 + id % 240) * INTERVAL '1 hour')"
        attrs, no, yes = "'{}'::jsonb", "false", "true"
    else:
        counter = f"(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {candidates}) SELECT i FROM n) n"
        steps = f"(WITH RECURSIVE s(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM s WHERE k < {STEPS}) SELECT k FROM s) s"
        day = "datetime('2026-01-05', '+' || ((e.id * 7 + s.k * 61) % 360) || ' days')"
        later = "datetime(sent_at, '+' || (1 + id % 240) || ' hours')"
        attrs, no, yes = "'{}'", "0", "1"
    return [
        f"""INSERT INTO candidates (id, email, status, owner, attributes, token_key, created_at, updated_at)
            SELECT i, 'c' || i || '@example.com', 'rejected', CASE i % 3 WHEN 0 THEN 'dana' ELSE 'sam' END,
                   {attrs}, 'k' || i, TIMESTAMP '2026-01-01', TIMESTAMP '2026-01-01' FROM {counter}"""
        if dialect == "postgresql" else
        f"""INSERT INTO candidates (id, email, status, owner, attributes, token_key, created_at, updated_at)
            SELECT i, 'c' || i || '@example.com', 'rejected', CASE i % 3 WHEN 0 THEN 'dana' ELSE 'sam' END,
                   {attrs}, 'k' || i, '2026-01-01', '2026-01-01' FROM {counter}""",
        f"""INSERT INTO enrollments (id, candidate_id, campaign_id, state, exit_reason, enrolled_at,
                                     last_step_id, exited_at, needs_next)
            SELECT id, id, CASE id % 3 WHEN 0 THEN 'silver-medalists' WHEN 1 THEN 'early-leavers'
                                       ELSE 'referrals' END,
                   CASE WHEN id % 13 = 0 THEN 'exited' WHEN id % 5 = 0 THEN 'completed' ELSE 'active' END,
                   CASE WHEN id % 13 = 0 THEN 'replied' WHEN id % 5 = 0 THEN 'completed' END,
                   {day.replace('e.id', '0').replace('s.k', '0')}, 's4',
                   CASE WHEN id % 13 = 0 OR id % 5 = 0 THEN {day.replace('e.id', '0').replace('s.k', '0')} END, {no}
            FROM candidates""",
        # One send per (enrollment, step); sent_at spread over a year, a few other states.
        f"""INSERT INTO sends (id, enrollment_id, campaign_id, candidate_id, step_id, step_number,
                               variant, state, due_at, message_id, data_started, attempts, sent_at,
                               created_at, updated_at)
            SELECT (e.id - 1) * {STEPS} + s.k, e.id, e.campaign_id, e.candidate_id, 's' || s.k, s.k,
                   CASE WHEN s.k = 2 THEN CASE e.id % 2 WHEN 0 THEN 'a' ELSE 'b' END END,
                   CASE WHEN e.id % 97 = 0 THEN 'failed' WHEN e.id % 89 = 0 THEN 'deferred'
                        WHEN e.id % 499 = 0 THEN 'unknown' ELSE 'sent' END,
                   {day}, 'm' || e.id || '.' || s.k || '@bench', {yes}, 1,
                   CASE WHEN e.id % 97 <> 0 AND e.id % 89 <> 0 AND e.id % 499 <> 0 THEN {day} END,
                   {day}, {day}
            FROM enrollments e CROSS JOIN {steps}""",
        # Replies to 10% of the sent sends, auto-replies to 4%, bounces to 4% (some after a reply),
        # with the copies of their sends that reply_sync stores (models.Inbound).
        f"""INSERT INTO inbound (dedupe_key, message_id, received_at, kind, bounce, reply_text,
                                 send_id, candidate_id, campaign_id, step_id, variant, send_sent_at)
            SELECT 'd' || id, 'r' || id || '@bench', {later},
                   CASE WHEN id % 50 < 5 THEN 'reply' WHEN id % 50 < 7 THEN 'auto_reply' ELSE 'bounce' END,
                   CASE WHEN id % 50 = 7 THEN 'hard' WHEN id % 50 = 8 THEN 'soft' END,
                   CASE WHEN id % 50 < 5 THEN 'Thanks, happy to talk.' END,
                   id, candidate_id, campaign_id, step_id, variant, sent_at
            FROM sends WHERE state = 'sent' AND id % 50 < 9""",
    ]


def build(url: str, sends: int) -> None:
    db = open_database(url)
    try:
        dialect = db.engine.dialect.name
        with db.engine.begin() as conn:
            if dialect == "sqlite":
                conn.execute(text("PRAGMA synchronous=OFF"))
            for statement in _statements(dialect, sends):
                conn.execute(text(statement))
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE" if dialect == "postgresql" else "ANALYZE"))
    finally:
        db.dispose()


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def _result(benchmark: str, value: float, **detail) -> None:
    print("RESULT " + json.dumps({"benchmark": benchmark, "value": value, "unit": "s", "detail": detail}),
          flush=True)


def postgres_cpu() -> float:
    """CPU seconds used so far by the local PostgreSQL server: its live processes, and the
    exited ones (parallel workers) that the postmaster reaped. 0 when none is visible."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        if text[text.index("(") + 1:text.rindex(")")] != "postgres":
            continue
        fields = text[text.rindex(")") + 2:].split()
        ticks += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


class Timer:
    """Wall and CPU time of repeated runs: this process's, its children's, and the server's."""

    def __init__(self, backend: str):
        self.server = backend == "postgresql"
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def _cpu(self) -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
        return used + (postgres_cpu() if self.server else 0.0)

    def run(self, fn) -> None:
        wall, cpu = time.perf_counter(), self._cpu()
        fn()
        self.wall.append(time.perf_counter() - wall)
        self.cpu.append(self._cpu() - cpu)

    def figures(self) -> dict:
        return {"wall": _median(self.wall), "cpu": _median(self.cpu),
                "runs": [round(t, 3) for t in self.wall], "cpu_runs": [round(t, 3) for t in self.cpu]}


def measure(url: str, backend: str, rows: int | None, workdir: Path) -> None:
    """Build `rows` sends into `url` (None: measure the database as it is), then time."""
    if rows is not None:
        started = time.perf_counter()
        build(url, rows)
        print(f"{backend}: built in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    db = open_database(url)
    try:
        with db.engine.connect() as conn:
            counts = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar()
                      for t in ("sends", "inbound", "enrollments")}
        print(f"{backend}: {counts}", file=sys.stderr)
        rows = counts["sends"]
        reports.gather(db, now=NOW)  # warms the caches: not counted
        queries = Timer(backend)
        for _ in range(RUNS):
            queries.run(lambda: reports.gather(db, now=NOW))
        result = reports.gather(db, now=NOW)
        total = sum(c.stats.counts["sends"] for c in result.campaigns)
        assert total == counts["sends"], (total, counts)
    finally:
        db.dispose()
    base = {"backend": backend, "sends": counts["sends"], "inbound": counts["inbound"]}
    figures = queries.figures()
    _result(f"report queries ({backend}, {rows:,} sends)", figures["wall"], **figures, **base,
            load_avg_1m=round(os.getloadavg()[0], 2))
    # As installed: bytecode cached (here in a directory of its own, warmed by the first run).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    for fmt in FORMATS:
        command = [sys.executable, "-m", "nurture_mail", "--database", url, "--now", NOW.isoformat(),
                   "report", "--format", fmt, "-o", str(workdir / f"r.{fmt}")]

        def run(command=command):
            subprocess.run(command, check=True, capture_output=True, cwd=workdir, env=env)

        run()
        timer = Timer(backend)
        for _ in range(RUNS):
            timer.run(run)
        figures = timer.figures()
        _result(f"`nurture report --format {fmt}` CLI ({backend}, {rows:,} sends)", figures["wall"],
                **figures, **base, load_avg_1m=round(os.getloadavg()[0], 2))


def kept_sqlite(directory: Path, sends: int) -> Path:
    """The SQLite dataset of `sends` kept in `directory`, built there first if it is not (under
    another name until complete, so that an interrupted build is never taken for one)."""
    path = directory / f"report-bench-{sends}.db"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.unlink(missing_ok=True)
        started = time.perf_counter()
        build(f"sqlite:///{partial}", sends)
        partial.rename(path)
        print(f"sqlite: built {path} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", "--sends", dest="rows", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--database", metavar="URL", help="time this database as it is: nothing is built")
    parser.add_argument("--keep", metavar="DIR", type=Path,
                        help="SQLite: keep the dataset in DIR (one file per --rows) and time it as it is "
                             "on later runs, instead of building it again (~20 s for 1,000,000 sends)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nurture-report-bench-") as tmp:
        if args.database:
            measure(args.database, args.database.split(":")[0].split("+")[0], None, Path(tmp))
            return
        if args.backend in ("sqlite", "both"):
            if args.keep is None:
                measure(f"sqlite:///{Path(tmp) / 'nurture.db'}", "sqlite", args.rows, Path(tmp))
            else:
                measure(f"sqlite:///{kept_sqlite(args.keep, args.rows)}", "sqlite", None, Path(tmp))
        if args.backend in ("postgresql", "both"):
            try:
                url, drop = fresh_pg_schema(PG_URL)
            except Exception as exc:  # no server: say so, the SQLite figures stand
                print(f"postgresql: skipped ({type(exc).__name__}: {exc})", file=sys.stderr)
                return
            try:
                measure(url, "postgresql", args.rows, Path(tmp))
            finally:
                drop()


if __name__ == "__main__":
    main()
