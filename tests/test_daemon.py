"""`nurture run` as a real process: ticks, sends, stops cleanly on SIGTERM; one per SQLite."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from nurture_mail.testing import SmtpSink

from .delivery_env import DeliveryEnv

T0 = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
CAMPAIGN = """
id: once
name: Once
audience: {status: [rejected]}
schedule: {timezone: UTC}
steps:
  - {id: hello, wait: 1m, template: news}
"""


def nurture(env: DeliveryEnv, *args: str) -> list[str]:
    return [sys.executable, "-m", "nurture_mail", "--database", env.db_url, *args]


def wait_for(predicate, seconds: float = 30.0) -> bool:
    """Poll an outside process's progress (not a sleep standing in for time passing)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def make_env(tmp_path, db_url):
    sink = SmtpSink().start()
    e = DeliveryEnv.create(tmp_path / "ws", db_url, sink, campaign=CAMPAIGN)
    toml = e.root / "nurture.toml"
    toml.write_text(toml.read_text() + "\n[daemon]\ntick_seconds = 1\n")
    e.import_csv("email,status\n" + "".join(f"p{i}@example.com,rejected\n" for i in range(30)), T0)
    return e


@pytest.fixture
def env(tmp_path, db_url):
    e = make_env(tmp_path, db_url)
    yield e
    e.close()
    e.sink.stop()


@pytest.fixture
def sqlite_env(tmp_path):
    e = make_env(tmp_path, f"sqlite:///{tmp_path / 'one.db'}")
    yield e
    e.close()
    e.sink.stop()


def test_run_sends_then_stops_cleanly_on_sigterm(env):
    subprocess.run(nurture(env, "--now", T0.isoformat(), "tick"), cwd=env.root, check=True, capture_output=True)
    proc = subprocess.Popen(nurture(env, "--now", (T0 + timedelta(hours=1)).isoformat(), "run"),
                            cwd=env.root, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: len(env.sink.received) == 30), "daemon did not send"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped" in err
    states = {s.state for s in env.sends()}
    assert states == {"sent"}
    ids = env.sink.message_ids()
    assert len(ids) == len(set(ids)) == 30


def test_second_daemon_on_sqlite_says_who_holds_the_lock(sqlite_env):
    env = sqlite_env
    proc = subprocess.Popen(nurture(env, "run"), cwd=env.root, stderr=subprocess.PIPE, text=True)
    try:
        from nurture_mail.daemon import lock_holder
        from nurture_mail.database import open_database

        db = open_database(env.db_url)
        assert wait_for(lambda: lock_holder(db) is not None)
        second = subprocess.run(nurture(env, "run"), cwd=env.root, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert f"another sender holds this SQLite database: pid {proc.pid}" in second.stderr
        also_tick = subprocess.run(nurture(env, "tick"), cwd=env.root, capture_output=True, text=True, timeout=60)
        assert also_tick.returncode == 1
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert lock_holder(db) is None
        db.dispose()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_run_with_two_workers_shares_the_queue_without_duplicates(env):
    subprocess.run(nurture(env, "--now", T0.isoformat(), "tick"), cwd=env.root, check=True, capture_output=True)
    proc = subprocess.Popen(nurture(env, "--now", (T0 + timedelta(hours=1)).isoformat(), "run", "--workers", "2"),
                            cwd=env.root, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: len(env.sink.received) >= 30), "daemon did not send"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "2 sender(s)" in err
    ids = env.sink.message_ids()
    assert len(ids) == len(set(ids)) == 30
    assert {s.state for s in env.sends()} == {"sent"}


def test_a_helper_stops_when_its_daemon_is_killed(env):
    subprocess.run(nurture(env, "--now", T0.isoformat(), "tick"), cwd=env.root, check=True, capture_output=True)
    proc = subprocess.Popen(nurture(env, "--now", (T0 + timedelta(hours=1)).isoformat(), "run", "--workers", "2"),
                            cwd=env.root, stderr=subprocess.DEVNULL)
    helper = None
    try:
        def helper_started() -> bool:
            nonlocal helper
            children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
            helper = int(children[0]) if children else None
            return helper is not None
        assert wait_for(helper_started), "no helper process"
        assert wait_for(lambda: len(env.sink.received) >= 30), "daemon did not send"
        proc.kill()  # kill -9: the helper is orphaned
        proc.wait(timeout=10)

        def helper_gone() -> bool:
            # an exited orphan is reaped by init; until then it is a zombie, which counts as gone
            try:
                with open(f"/proc/{helper}/stat") as stat:
                    return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
            except FileNotFoundError:
                return True
        assert wait_for(helper_gone, seconds=20), "the orphaned helper kept running"
    finally:
        if proc.poll() is None:
            proc.kill()
        if helper is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(helper, signal.SIGKILL)
    ids = env.sink.message_ids()
    assert len(ids) == len(set(ids))
