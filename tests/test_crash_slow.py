"""The crash harness at the size of issue 8: a real `nurture run` on 10,000 due sends, killed
with SIGKILL at >= 50 seeded random moments and restarted each time; SQLite with one daemon,
PostgreSQL with three. The full size runs with `pytest --slow`; the default run does the same
harness on a few hundred sends as a smoke test (tests/test_crash.py keeps its own sizes).

The SMTP sink holds every reply to DATA for `DELAY` seconds after it has stored the message,
so the sender spends most of its time between "the server has the message" and "the ledger
says so", and many kills land exactly there. Each kill is aimed at a moment when sending is
under way (after the sink has received something from this round).

After every round (all of its daemons killed) the harness counts the rows in flight: claimed
with `data_started`, i.e. the message may have left. The engine marks `data_started` per group
of `[smtp] max_connections` x engine.INFLIGHT_PER_CONNECTION messages, so a killed daemon
leaves at most that many. At the end:
no Message-ID (and no (enrollment, step)) twice at the sink, every ledger row final or
deferred, every row marked sent at the sink, and `unknown` rows exactly the in-flight rows
left by the kills. The figures are printed and written to test-artifacts/crash-*.json.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from nurture_mail import engine as engine_module
from nurture_mail.database import open_database
from nurture_mail.models import Send
from nurture_mail.store.ledger import FINAL_STATES
from nurture_mail.testing import SmtpSink

from .delivery_env import DeliveryEnv, schedulers_started
from .test_crash import CAMPAIGN, T0

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
MAX_CONNECTIONS = 4  # [smtp] max_connections in DeliveryEnv
# The engine marks `data_started` for this many messages in one transaction and then sends
# them: the most one killed daemon can leave in flight.
WINDOW = MAX_CONNECTIONS * getattr(engine_module, "INFLIGHT_PER_CONNECTION", 1)
DELAY = 0.03  # seconds the sink holds its reply to DATA after storing the message
SETTLED = set(FINAL_STATES) | {"deferred"}


def _env(tmp_path: Path, db_url: str, sink: SmtpSink, people: int) -> DeliveryEnv:
    env = DeliveryEnv.create(tmp_path / "ws", db_url, sink, campaign=CAMPAIGN)
    toml = env.root / "nurture.toml"
    toml.write_text(toml.read_text() + "\n[daemon]\ntick_seconds = 1\nlease_seconds = 30\nbatch_size = 64\n")
    env.import_csv("email,status\n" + "".join(f"c{i}@example.com,rejected\n" for i in range(people)), T0)
    env.tick(T0)  # enrol and schedule: every row is in the ledger before the crashes start
    env.close()
    return env


def _daemon(env: DeliveryEnv, now: datetime, log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "nurture_mail", "--database", env.db_url, "--now", now.isoformat(), "run"],
            cwd=env.root, stdout=subprocess.DEVNULL, stderr=out,
        )


def _wait(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def _ledger(db) -> tuple[Counter, int, dict[str, tuple[int, str, str]]]:
    """(states, rows in flight, message id -> (enrollment, step, state))."""
    with db.sessions() as s:
        states = Counter(dict(s.execute(select(Send.state, func.count()).group_by(Send.state)).all()))
        in_flight = s.execute(
            select(func.count()).where(Send.state == "claimed", Send.data_started.is_(True))
        ).scalar()
        rows = {
            mid: (enrollment, step, state)
            for mid, enrollment, step, state in s.execute(
                select(Send.message_id, Send.enrollment_id, Send.step_id, Send.state)
            )
        }
    return states, in_flight, rows


def run_harness(tmp_path: Path, db_url: str, *, backend: str, total: int, kills: int,
                daemons: int, seed: int, size: str) -> dict:
    sink = SmtpSink(delay=DELAY).start()
    started = time.monotonic()
    log = tmp_path / "daemons.log"
    try:
        env = _env(tmp_path, db_url, sink, total)
        db = open_database(db_url)
        rng = random.Random(seed)
        now = T0 + timedelta(hours=1)
        killed, rounds, windows = 0, 0, []
        while killed < kills:
            before = len(sink.received)
            procs = [_daemon(env, now, log) for _ in range(daemons)]
            # aim at a moment of sending: wait for this round's first message at the sink
            sending = _wait(lambda b=before: len(sink.received) > b, 90)
            moments = sorted(rng.uniform(0.0, 1.5) for _ in procs)
            t0 = time.monotonic()
            for proc, moment in zip(rng.sample(procs, len(procs)), moments, strict=True):
                time.sleep(max(0.0, t0 + moment - time.monotonic()))
                proc.send_signal(signal.SIGKILL)
            for proc in procs:
                proc.wait()
            assert sending, f"round {rounds + 1}: nothing was sent within 90 s (see {log})"
            killed += len(procs)
            rounds += 1
            _, in_flight, _ = _ledger(db)
            windows.append(in_flight)
            # each killed daemon leaves at most one group in flight
            assert in_flight <= daemons * WINDOW, (rounds, in_flight)
            now += timedelta(minutes=5)  # later than any lease the dead processes held

        # a clean run (the same number of daemons) until every row is settled, then SIGTERM,
        # once every daemon has started its scheduler (and so handles SIGTERM): the killed ones
        # may have settled everything already, and a daemon signalled while it still imports
        # dies of the signal instead of stopping.
        kill_phase = len(sink.received)
        started = schedulers_started(log)
        procs = [_daemon(env, now, log) for _ in range(daemons)]
        try:
            settled = _wait(lambda: set(_ledger(db)[0]) <= SETTLED and schedulers_started(log) >= started + daemons, 900)
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(timeout=120)
        states, in_flight, rows = _ledger(db)
        db.dispose()
        assert settled, states
        assert all(p.returncode == 0 for p in procs), [p.returncode for p in procs]

        ids = sink.message_ids()
        duplicates = len(ids) - len(set(ids))
        pairs = [rows[i][:2] for i in ids if i in rows]
        sent_missing = [m for m, (_, _, state) in rows.items() if state == "sent" and m not in set(ids)]
        unsettled = sum(n for state, n in states.items() if state not in SETTLED)
        unknown_at_sink = sum(1 for i in set(ids) if rows.get(i, (0, 0, ""))[2] == "unknown")
        figures = {
            "backend": backend,
            "size": size,
            "daemons": daemons,
            "sends": total,
            "kills": killed,
            "rounds": rounds,
            "crashes_survived": killed,
            "duplicates": duplicates,
            "duplicate_steps": len(pairs) - len(set(pairs)),
            "foreign_message_ids": sum(1 for i in ids if i not in rows),
            "losses": unsettled + len(sent_missing),
            "states": dict(sorted(states.items())),
            "unknown": states["unknown"],
            "unknown_per_crash_mean": round(states["unknown"] / killed, 2),
            "in_flight_per_round_max": max(windows),
            "in_flight_window_per_daemon": WINDOW,
            "unknown_accepted_by_server": unknown_at_sink,
            "at_sink_after_kills": kill_phase,
            "sink_delay_s": DELAY,
            "seed": seed,
            "seconds": round(time.monotonic() - started, 1),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        }
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / f"crash-{backend}-{size}.json").write_text(json.dumps(figures, indent=2) + "\n")
        print("\ncrash harness:", json.dumps(figures))

        assert duplicates == 0, "a message reached the server twice"
        assert figures["duplicate_steps"] == 0 and figures["foreign_message_ids"] == 0
        assert not sent_missing, "a row marked sent never reached the server"
        assert unsettled == 0, states
        assert sum(states.values()) == total
        assert in_flight == 0
        # unknown rows are exactly what the kills left in flight, never more
        assert states["unknown"] <= sum(windows), (states["unknown"], windows)
        assert states["unknown"] <= killed * WINDOW
        assert states["sent"] + states["unknown"] == total, states  # no faults: all else sent
        return figures
    finally:
        sink.stop()


SQLITE_SIZES = [
    pytest.param("smoke", 300, 4, id="smoke"),
    pytest.param("full", 10_000, 50, id="full", marks=[pytest.mark.slow, pytest.mark.timeout(3600)]),
]
PG_SIZES = [
    pytest.param("smoke", 300, 3, id="smoke"),
    # 17 rounds of 3
    pytest.param("full", 10_000, 51, id="full", marks=[pytest.mark.slow, pytest.mark.timeout(3600)]),
]


@pytest.mark.parametrize(("size", "total", "kills"), SQLITE_SIZES)
def test_kill_9_harness_sqlite_one_daemon(tmp_path, size, total, kills):
    figures = run_harness(tmp_path, f"sqlite:///{tmp_path / 'crash.db'}", backend="sqlite",
                          total=total, kills=kills, daemons=1, seed=8101, size=size)
    assert figures["kills"] >= kills


@pytest.mark.parametrize(("size", "total", "kills"), PG_SIZES)
def test_kill_9_harness_postgresql_three_daemons(tmp_path, pg_url, size, total, kills):
    figures = run_harness(tmp_path, pg_url, backend="postgresql", total=total, kills=kills,
                          daemons=3, seed=8102, size=size)
    assert figures["kills"] >= kills
