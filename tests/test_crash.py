"""Crash safety: kill -9 the sender at random moments, restart, repeat. Nothing is sent twice,
nothing is lost; on PostgreSQL three daemons share the work without duplicates."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from nurture_mail import engine as engine_module
from nurture_mail.testing import SmtpSink

from .delivery_env import DeliveryEnv, schedulers_started

T0 = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
CAMPAIGN = """
id: crash
name: Crash
audience: {status: [rejected]}
schedule: {timezone: UTC}
steps:
  - {id: hello, wait: 1m, template: news}
"""
FINAL_OR_WAITING = {"sent", "unknown", "deferred", "failed"}
# The most messages one sender has marked `data_started` at once ([smtp] max_connections = 4
# in DeliveryEnv, times the engine's messages in flight per connection).
WINDOW = 4 * getattr(engine_module, "INFLIGHT_PER_CONNECTION", 1)


def setup_env(tmp_path, db_url, people: int) -> DeliveryEnv:
    sink = SmtpSink().start()
    env = DeliveryEnv.create(tmp_path / "ws", db_url, sink, campaign=CAMPAIGN)
    toml = env.root / "nurture.toml"
    toml.write_text(toml.read_text() + "\n[daemon]\ntick_seconds = 1\nlease_seconds = 30\nbatch_size = 64\n")
    env.import_csv("email,status\n" + "".join(f"c{i}@example.com,rejected\n" for i in range(people)), T0)
    env.tick(T0)  # enrol and schedule: every row is in the ledger before the crashes start
    env.close()
    return env


def daemon(env: DeliveryEnv, now: datetime) -> subprocess.Popen:
    with (env.root / "daemons.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "nurture_mail", "--database", env.db_url, "--now", now.isoformat(), "run"],
            cwd=env.root, stdout=subprocess.DEVNULL, stderr=log,
        )


def states(env: DeliveryEnv) -> Counter:
    return Counter(s.state for s in env.sends())


def drain(env: DeliveryEnv, now: datetime, total: int, seconds: float = 120) -> None:
    """A final clean run until every row is settled."""
    proc = daemon(env, now)
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if sum(states(env)[s] for s in FINAL_OR_WAITING) == total:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()


def check_no_duplicates_no_losses(env: DeliveryEnv, total: int, crashes: int, window: int) -> Counter:
    ids = env.sink.message_ids()
    assert len(ids) == len(set(ids)), "a message reached the server twice"
    final = states(env)
    assert sum(final.values()) == total
    assert set(final) <= FINAL_OR_WAITING, final
    sent_ids = {s.message_id for s in env.sends() if s.state == "sent"}
    assert sent_ids <= set(ids), "a row marked sent never reached the server"
    assert final["unknown"] <= crashes * window, final
    return final


def test_kill_9_at_random_moments_sqlite(tmp_path):
    total, kills = 2000, 12
    env = setup_env(tmp_path, f"sqlite:///{tmp_path / 'crash.db'}", total)
    rng = random.Random(4242)
    now = T0 + timedelta(hours=1)
    try:
        for _ in range(kills):
            proc = daemon(env, now)
            time.sleep(rng.uniform(0.6, 2.0))  # a random moment in the run to crash at
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            now += timedelta(minutes=5)  # later than any lease the dead process held
        drain(env, now, total)
        final = check_no_duplicates_no_losses(env, total, kills, window=WINDOW)
        assert final["sent"] >= total - kills * WINDOW
    finally:
        env.sink.stop()


def test_three_daemons_on_postgresql_share_without_duplicates(tmp_path, pg_url):
    total = 3000
    env = setup_env(tmp_path, pg_url, total)
    now = T0 + timedelta(hours=1)
    procs = [daemon(env, now) for _ in range(3)]
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and (states(env)["sent"] < total or schedulers_started(env.root / "daemons.log") < 3):
            time.sleep(0.2)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
        final = check_no_duplicates_no_losses(env, total, 0, 0)
        assert final["sent"] == total
        assert all(p.returncode == 0 for p in procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        env.sink.stop()


def test_kill_9_with_three_daemons_on_postgresql(tmp_path, pg_url):
    total, rounds = 2000, 6
    env = setup_env(tmp_path, pg_url, total)
    rng = random.Random(77)
    now = T0 + timedelta(hours=1)
    try:
        for _ in range(rounds):
            procs = [daemon(env, now) for _ in range(3)]
            time.sleep(rng.uniform(0.8, 2.0))
            for p in procs:
                p.send_signal(signal.SIGKILL)
            for p in procs:
                p.wait()
            now += timedelta(minutes=5)
        drain(env, now, total)
        check_no_duplicates_no_losses(env, total, rounds * 3, window=WINDOW)
    finally:
        env.sink.stop()


@pytest.mark.parametrize("seed", [1])
def test_kill_between_smtp_acceptance_and_ledger_write_is_unknown_not_resent(tmp_path, seed):
    """The narrowest window: the server has the message, the ledger does not know yet."""
    from nurture_mail.engine import Engine

    env = setup_env(tmp_path, f"sqlite:///{tmp_path / 'w.db'}", 5)
    original = Engine._record
    crashed = {}

    def crash_before_recording(self, writes, row, delivery, now, report):
        crashed["yes"] = True
        raise SystemExit("simulated crash after the server accepted the message")

    Engine._record = crash_before_recording
    try:
        with pytest.raises(SystemExit):
            env.tick(T0 + timedelta(hours=1))
    finally:
        Engine._record = original
        env.close()
    assert crashed
    received = len(env.sink.received)
    assert received >= 1
    # After the lease runs out, those rows are unknown and never sent again.
    env.tick(T0 + timedelta(hours=2))
    env.tick(T0 + timedelta(hours=3))
    ids = env.sink.message_ids()
    assert len(ids) == len(set(ids))
    final = states(env)
    assert final["unknown"] == received
    assert final["sent"] == 5 - received
    env.close()
    env.sink.stop()
