"""Load (issue 8): many candidates, several campaigns, a simulated stretch of time of ticks
against a real SMTP server that fails at random, then the books must balance exactly.

The clock is event-driven, as `nurture demo` does it: after each tick it jumps to the next time
something is due (store.ledger.next_due; at least a minute, at most a week). The sink answers
with seeded random faults at every stage (4xx, 5xx, dropped connections); after the message is
stored only a dropped connection is allowed, because a server that stores a message and then
answers 4xx really does get it twice. Along the way some candidates unsubscribe.

Reconciliation, per campaign: enrolled x steps = sent + failed + skipped + cancelled + unknown
+ queued (scheduled/deferred rows, all due after the last tick) + not yet queued (later steps
of active enrollments) + ended early (steps an exited enrollment never reached). Per
enrollment: its rows are its first steps in order, each once; a completed enrollment has a
final row for every step; an exited one has nothing queued; nothing is left claimed or due.
At the sink: no Message-ID twice, every row marked sent there, nothing there that the ledger
does not hold as sent or unknown.

Default: 2,000 candidates, 3 campaigns, a quarter, on every configured database (< 60 s).
`--slow`: 100,000 candidates, 10 campaigns, a year, on PostgreSQL; figures are printed and
written to test-artifacts/load-*.json (with -s, one progress line per tick of the full run).

What the harness does to keep the measurement about the engine: the sink runs in a process of
its own (in a thread of the test process it competed with the engine for the GIL and its CPU
time counted as the engine's), and on PostgreSQL this test's connections run with
`synchronous_commit=off`: without a crash there is nothing for a WAL flush per commit to
protect, and it cost an fsync wait per commit on the shared disk. Durability across crashes is what
tests/test_crash.py and tests/test_crash_slow.py measure, with the server's settings untouched.
And the CI server runs with `autovacuum = off`, which no real PostgreSQL does: every send row
is updated three or four times, so without it the ledger tables fill with dead rows and are
never analysed, and the claim and enrolment queries slow down tick after tick. Before each
tick the test does what autovacuum would have done by then, with its default thresholds
(`autovacuum`).
"""

from __future__ import annotations

import json
import multiprocessing
import random
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from nurture_mail.database import open_database
from nurture_mail.models import Enrollment, Send
from nurture_mail.store import ledger, pool
from nurture_mail.testing import Received, SmtpSink, free_port, random_faults

from .delivery_env import DeliveryEnv

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
START = datetime(2027, 1, 4, 7, 0, tzinfo=UTC)  # a Monday
PENDING = ("scheduled", "deferred")
STEP_PLAN = [  # (id, wait, template, only_if)
    ("hello", "1d", "thank-you", None),
    ("check-in", "21d", "check-in", None),
    ("news", "30d", "news", "{open_to_work: {ne: false}}"),
    ("referral", "60d", "news", None),
    ("last-word", "90d", "thank-you", None),
]


def campaign_yaml(i: int) -> tuple[str, list[str]]:
    steps = STEP_PLAN[: 2 + i % 4]  # 2 to 5 steps
    lines = [
        f"id: load-{i}", f"name: Load {i}",
        f"audience: {{status: [rejected, withdrawn], tags: {{any: [g{i}], none: [do-not-contact]}}}}",
        "schedule:", "  timezone: UTC", "  days: [mon, tue, wed, thu, fri]", '  hours: "08:00-18:00"',
    ]
    if i % 3 == 1:
        lines.append("  max_per_day: 1500")
    lines.append("steps:")
    for step_id, wait, template, only_if in steps:
        lines.append(f"  - id: {step_id}\n    wait: {wait}\n    template: {template}")
        if only_if:
            lines.append(f"    only_if: {only_if}")
    return "\n".join(lines) + "\n", [s[0] for s in steps]


def faults(seed: int, rate: float):
    rule = random_faults(seed, rate)

    def honest(stage: str, rcpt: str, attempt: int):
        fault = rule(stage, rcpt, attempt)
        if stage == "after_data" and fault != "drop":
            return None  # a stored message answered 4xx/5xx would really arrive twice
        return fault

    return honest


def _serve_sink(port: int, seed: int, rate: float, conn) -> None:
    """The child process of SinkProcess: a SmtpSink until told to stop, then what it received."""
    sink = SmtpSink(rule=faults(seed, rate), keep_data=False, port=port).start()
    try:
        conn.send("ready")
        conn.recv()  # "stop"
    finally:
        sink.stop()
    conn.send([(r.mail_from, r.rcpt, r.data) for r in sink.received])
    conn.close()


class SinkProcess:
    """A SmtpSink with seeded random faults (`faults`) in a process of its own. `received` is
    filled by `stop()`, which the run calls before reconciling (stopping twice is harmless)."""

    host = "127.0.0.1"

    def __init__(self, seed: int, rate: float):
        self.seed, self.rate = seed, rate
        self.port = 0
        self.received: list[Received] = []
        self._proc = self._conn = None

    def start(self) -> SinkProcess:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process holding connections
        self.port = free_port(self.host)
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve_sink, args=(self.port, self.seed, self.rate, child),
                                 daemon=True)
        self._proc.start()
        child.close()
        if not self._conn.poll(60) or self._conn.recv() != "ready":
            self._proc.kill()
            raise RuntimeError("the SMTP sink process did not start")
        return self

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def stop(self) -> None:
        if self._proc is None:
            return
        try:
            self._conn.send("stop")
            self.received = [Received(*r) for r in self._conn.recv()]
            self._proc.join(30)
        finally:
            if self._proc.is_alive():
                self._proc.kill()
            self._conn.close()
            self._proc = self._conn = None


def no_flush_wait(db_url: str) -> str:
    """This test's PostgreSQL connections with synchronous_commit=off (see the module doc)."""
    if not db_url.startswith("postgresql"):
        return db_url
    option = "-csynchronous_commit%3Doff"
    if "options=" in db_url:
        return db_url.replace("options=", f"options={option}%20", 1)
    return f"{db_url}{'&' if '?' in db_url else '?'}options={option}"


# PostgreSQL's default autovacuum thresholds: (base, fraction of the table's live rows).
VACUUM_AFTER_DEAD = (50, 0.2)
VACUUM_AFTER_INSERTS = (1000, 0.2)
ANALYZE_AFTER_CHANGES = (50, 0.1)


def _over(threshold: tuple[int, float], count: int, live: int) -> bool:
    return count > threshold[0] + threshold[1] * live


def autovacuum(db) -> float:
    """VACUUM / ANALYZE the tables of this database's schema that autovacuum would have
    processed by now (the CI server has it off); returns the seconds spent. PostgreSQL only."""
    if db.dialect != "postgresql":
        return 0.0
    started = time.monotonic()
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        stats = conn.execute(text(
            "SELECT relname, n_live_tup, n_dead_tup, n_ins_since_vacuum, n_mod_since_analyze "
            "FROM pg_stat_user_tables WHERE schemaname = current_schema()"
        )).all()
        for name, live, dead, inserted, changed in stats:
            vacuum = _over(VACUUM_AFTER_DEAD, dead, live) or _over(VACUUM_AFTER_INSERTS, inserted, live)
            analyze = _over(ANALYZE_AFTER_CHANGES, changed, live)
            if vacuum or analyze:
                what = "VACUUM (ANALYZE)" if vacuum and analyze else "VACUUM" if vacuum else "ANALYZE"
                conn.execute(text(f'{what} "{name}"'))
    return time.monotonic() - started


def run_load(tmp_path: Path, db_url: str, *, people: int, campaigns: int, days: int,
             seed: int, rate: float, size: str) -> dict:
    rng = random.Random(seed)
    db_url = no_flush_wait(db_url)
    progress = size == "full"
    sink = SinkProcess(seed, rate).start()
    started = time.monotonic()
    try:
        env = DeliveryEnv.create(tmp_path / "ws", db_url, sink, campaign=campaign_yaml(0)[0])
        steps_of = {}
        for i in range(campaigns):
            text, steps = campaign_yaml(i)
            steps_of[f"load-{i}"] = steps
            env.write_campaign(text, f"load-{i}.yaml")
        (env.root / "campaigns" / "keep-warm.yaml").unlink()
        rows = ["email,status,tags,open_to_work"]
        for n in range(people):
            tags = {f"g{n % campaigns}"}
            if rng.random() < 0.2:
                tags.add(f"g{rng.randrange(campaigns)}")
            status = "rejected" if rng.random() < 0.8 else "withdrawn"
            rows.append(f"c{n}@load.example,{status},{';'.join(sorted(tags))},{str(rng.random() < 0.7).lower()}")
        env.import_csv("\n".join(rows) + "\n", START - timedelta(days=1))
        imported = time.monotonic() - started

        db = open_database(db_url)
        end = START + timedelta(days=days)
        quitters = rng.sample(range(people), people // 100)
        now, ticks, totals = START, 0, Counter()
        vacuumed = 0.0
        try:
            while now <= end:
                vacuumed += autovacuum(db)
                report = env.tick(now)
                ticks += 1
                for name in ("enrolled", "sent", "deferred", "failed", "skipped", "cancelled", "unknown"):
                    totals[name] += getattr(report, name)
                if progress:
                    print(f"tick {ticks} {now:%Y-%m-%d %H:%M} at {time.monotonic() - started:.0f} s: "
                          f"{report.summary()}; {totals['sent']} sent so far", flush=True)
                if quitters and now >= START + timedelta(days=10):  # 1% unsubscribe on day 10
                    for n in quitters:
                        pool.unsubscribe(db, f"c{n}@load.example", now)
                    quitters = []
                with db.sessions() as session:
                    due = ledger.next_due(session, list(steps_of))
                if now == end:
                    break
                step = timedelta(days=7) if due is None else min(max(due - now, timedelta(minutes=1)), timedelta(days=7))
                now = min(now + step, end)
            env.tick(end)  # steps that became due by the last sends are queued (or sent) now
            ticks += 1
            ticked = time.monotonic() - started
            sink.stop()  # hands over what it received
            figures = reconcile(db, sink, steps_of, end)
        finally:
            db.dispose()
            env.close()
        figures.update(
            size=size, backend=db_url.split(":", 1)[0].split("+", 1)[0], candidates=people,
            campaigns=campaigns, simulated_days=days, ticks=ticks, fault_rate=rate, seed=seed,
            tick_totals=dict(totals), import_seconds=round(imported, 1),
            tick_seconds=round(ticked, 1), vacuum_seconds=round(vacuumed, 1),
            seconds=round(time.monotonic() - started, 1),
            sink="separate process", synchronous_commit="off" if db_url.startswith("postgresql") else None,
            date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        )
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / f"load-{figures['backend']}-{size}.json").write_text(json.dumps(figures, indent=2) + "\n")
        print("\nload:", json.dumps(figures))
        return figures
    finally:
        sink.stop()


def reconcile(db, sink: SinkProcess, steps_of: dict[str, list[str]], end: datetime) -> dict:
    last = ledger.naive(end)
    with db.sessions() as session:
        enrollments = {
            e.id: e for e in session.execute(
                select(Enrollment.id, Enrollment.campaign_id, Enrollment.state, Enrollment.exit_reason)
            )
        }
        sends = session.execute(
            select(Send.enrollment_id, Send.campaign_id, Send.step_id, Send.step_number,
                   Send.state, Send.due_at, Send.message_id)
        ).all()
    by_enrollment = defaultdict(list)
    for row in sends:
        by_enrollment[row.enrollment_id].append(row)

    books = {}
    problems: list[str] = []
    for campaign, steps in steps_of.items():
        mine = [e for e in enrollments.values() if e.campaign_id == campaign]
        states = Counter()
        not_yet = ended_early = 0
        exits = Counter()
        for e in mine:
            rows = sorted(by_enrollment.get(e.id, ()), key=lambda r: r.step_number)
            states.update(r.state for r in rows)
            ids = [r.step_id for r in rows]
            if ids != steps[: len(ids)]:
                problems.append(f"{campaign} enrollment {e.id}: rows {ids} are not its first steps")
            missing = len(steps) - len(rows)
            pending = [r for r in rows if r.state in PENDING]
            if any(r.state == "claimed" for r in rows):
                problems.append(f"enrollment {e.id}: a row left claimed")
            if any(r.due_at <= last for r in pending):
                problems.append(f"enrollment {e.id}: a row due by the last tick still queued")
            if e.state == "completed":
                if missing or pending:
                    problems.append(f"enrollment {e.id}: completed with {missing} steps missing")
            elif e.state == "exited":
                ended_early += missing
                exits[e.exit_reason] += 1
                if pending:
                    problems.append(f"enrollment {e.id}: exited with a row still queued")
            else:
                not_yet += missing
                if len(pending) > 1:
                    problems.append(f"enrollment {e.id}: {len(pending)} rows queued at once")
        queued = states["scheduled"] + states["deferred"]
        accounted = (states["sent"] + states["failed"] + states["skipped"] + states["cancelled"]
                     + states["unknown"] + queued + not_yet + ended_early)
        books[campaign] = {
            "enrolled": len(mine), "steps": len(steps), "due_steps": len(mine) * len(steps),
            **{s: states[s] for s in ("sent", "failed", "skipped", "cancelled", "unknown")},
            "queued": queued, "not_yet_queued": not_yet, "ended_early": ended_early,
            "exits": dict(exits), "accounted": accounted,
        }
        if accounted != len(mine) * len(steps) or sum(states.values()) != len(
            [r for e in mine for r in by_enrollment.get(e.id, ())]
        ):
            problems.append(f"{campaign}: {accounted} accounted for {len(mine) * len(steps)} steps")

    ids = [r.data.split(b"<", 1)[1].split(b">", 1)[0].decode() for r in sink.received if r.data]
    state_of = {r.message_id: r.state for r in sends}
    sent = {m for m, s in state_of.items() if s == "sent"}
    at_sink = set(ids)
    totals = Counter(r.state for r in sends)
    return {
        "books": books,
        "problems": problems[:20],
        "problem_count": len(problems),
        "totals": dict(sorted(totals.items())),
        "due_steps": sum(b["due_steps"] for b in books.values()),
        "sink_messages": len(ids),
        "duplicates": len(ids) - len(at_sink),
        "sent_not_at_sink": len(sent - at_sink),
        "at_sink_not_sent_or_unknown": sum(1 for m in at_sink if state_of.get(m) not in ("sent", "unknown")),
    }


def check(figures: dict) -> None:
    assert figures["problem_count"] == 0, figures["problems"]
    for campaign, book in figures["books"].items():
        assert book["accounted"] == book["due_steps"], (campaign, book)
        assert book["enrolled"] > 0, campaign
    assert figures["duplicates"] == 0
    assert figures["sent_not_at_sink"] == 0
    assert figures["at_sink_not_sent_or_unknown"] == 0
    totals = figures["totals"]
    # the run exercised what it is meant to: sends, retries, failures, skips, cancellations
    assert totals.get("sent", 0) > 0 and totals.get("failed", 0) > 0
    assert totals.get("skipped", 0) > 0 and totals.get("cancelled", 0) > 0
    assert figures["tick_totals"]["deferred"] > 0


def test_load_small_reconciles(tmp_path, db_url):
    figures = run_load(tmp_path, db_url, people=2000, campaigns=3, days=91, seed=9, rate=0.01,
                       size="small")
    check(figures)


@pytest.mark.slow
@pytest.mark.timeout(3 * 3600)
def test_load_100k_candidates_10_campaigns_a_year_on_postgresql(tmp_path, pg_url):
    figures = run_load(tmp_path, pg_url, people=100_000, campaigns=10, days=365, seed=10,
                       rate=0.01, size="full")
    check(figures)
