"""SMTP faults at every stage, against a real loopback server that misbehaves on demand.

Every fault runs twice: with the server offering PIPELINING (the sender writes MAIL, RCPT and
DATA at once and reads the replies in order) and without (one command at a time)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nurture_mail.errors import NurtureError
from nurture_mail.store import pool
from nurture_mail.testing import SmtpSink

from .delivery_env import DeliveryEnv

MON = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
CAMPAIGN = """
id: once
name: Once
audience: {status: [rejected]}
schedule: {timezone: UTC}
steps:
  - {id: hello, wait: 1m, template: news}
"""


@pytest.fixture(params=["pipelined", "stepwise"])
def make_env(request, tmp_path, db_url):
    made = []

    def make(rule=None, extra_config="", timeout_seconds=5):
        sink = SmtpSink(rule=rule, pipelining=request.param == "pipelined").start()
        env = DeliveryEnv.create(tmp_path / f"ws{len(made)}", db_url, sink, campaign=CAMPAIGN,
                                 extra_config=extra_config, timeout_seconds=timeout_seconds)
        env.import_csv("email,status\nann@example.com,rejected\n", MON)
        env.tick(MON)  # enrol; the step falls due a minute later
        made.append(env)
        return env

    yield make
    for env in made:
        env.close()
        env.sink.stop()


def first_attempt_only(stage, code):
    def rule(s, rcpt, attempt):
        return code if s == stage and attempt == 1 else None

    return rule


@pytest.mark.parametrize("stage", ["mail", "rcpt", "data"])
@pytest.mark.parametrize("code", ["421 4.3.0 closing", "450 4.2.1 mailbox busy", "451 4.3.0 local error", "452 4.3.1 no space"])
def test_temporary_failure_is_deferred_then_sent(make_env, stage, code):
    env = make_env(first_attempt_only(stage, code))
    first = env.tick(MON + timedelta(minutes=5))
    assert (first.sent, first.deferred) == (0, 1)
    [row] = env.sends()
    assert row.state == "deferred"
    assert row.reason.startswith(code.split()[0])
    assert row.due_at > (MON + timedelta(minutes=5)).replace(tzinfo=None)
    # Not before the backoff...
    assert env.tick(MON + timedelta(minutes=6)).sent == 0
    # ...then sent, once.
    later = env.tick(MON + timedelta(hours=1))
    assert later.sent == 1
    [row] = env.sends()
    assert row.state == "sent" and row.attempts == 2
    assert len(env.sink.received) == 1


def test_permanent_recipient_failure_fails_and_suppresses(make_env):
    env = make_env(lambda s, r, a: "550 5.1.1 user unknown" if s == "rcpt" else None)
    report = env.tick(MON + timedelta(minutes=5))
    assert report.failed == 1
    [row] = env.sends()
    assert row.state == "failed"
    assert "550 5.1.1 user unknown" in row.reason
    db = env.db()
    with db.sessions() as s:
        assert pool.is_suppressed(s, db, "ann@example.com") == "bounced"
    db.dispose()
    assert env.tick(MON + timedelta(days=2)).sent == 0


def test_permanent_content_rejection_fails_without_suppressing(make_env):
    env = make_env(lambda s, r, a: "554 5.7.1 message rejected" if s == "data" else None)
    env.tick(MON + timedelta(minutes=5))
    [row] = env.sends()
    assert row.state == "failed"
    db = env.db()
    with db.sessions() as s:
        assert pool.is_suppressed(s, db, "ann@example.com") is None
    db.dispose()


def test_connection_dropped_before_data_is_deferred(make_env):
    env = make_env(first_attempt_only("rcpt", "drop"))
    assert env.tick(MON + timedelta(minutes=5)).deferred == 1
    assert env.sends()[0].state == "deferred"
    assert env.tick(MON + timedelta(hours=1)).sent == 1
    assert len(env.sink.received) == 1


def test_connection_dropped_after_data_is_unknown_and_never_retried(make_env):
    env = make_env(lambda s, r, a: "drop" if s == "after_data" else None)
    report = env.tick(MON + timedelta(minutes=5))
    assert report.unknown == 1
    [row] = env.sends()
    assert row.state == "unknown"
    assert len(env.sink.received) == 1  # it did arrive: resending would duplicate it
    for day in range(1, 5):
        env.tick(MON + timedelta(days=day))
    assert len(env.sink.received) == 1
    assert env.sends()[0].state == "unknown"


@pytest.mark.parametrize("stage", ["mail", "rcpt"])
def test_server_stalling_before_data_times_out_and_is_deferred(make_env, stage):
    env = make_env(first_attempt_only(stage, "stall"), timeout_seconds=1)
    report = env.tick(MON + timedelta(minutes=5))
    assert env.sink.stalled == 1
    assert (report.sent, report.deferred, report.unknown) == (0, 1, 0)
    [row] = env.sends()
    assert row.state == "deferred" and "connection problem before the data" in row.reason
    assert env.sink.received == []
    assert env.tick(MON + timedelta(hours=1)).sent == 1
    assert len(env.sink.received) == 1


@pytest.mark.parametrize("stage", ["data", "after_data"])
def test_server_stalling_after_the_data_times_out_as_unknown_never_resent(make_env, stage):
    # "data": the server has the data and says nothing; "after_data": it stored it first.
    env = make_env(lambda s, r, a: "stall" if s == stage else None, timeout_seconds=1)
    report = env.tick(MON + timedelta(minutes=5))
    assert env.sink.stalled == 1
    assert (report.sent, report.unknown) == (0, 1)
    [row] = env.sends()
    assert row.state == "unknown"
    for day in range(1, 3):
        env.tick(MON + timedelta(days=day))
    assert env.sink.stalled == 1 and env.sends()[0].state == "unknown"


def test_gives_up_after_max_attempts(make_env):
    env = make_env(lambda s, r, a: "451 4.3.0 try later" if s == "rcpt" else None,
                   extra_config="")
    t = MON + timedelta(minutes=5)
    for _ in range(12):
        env.tick(t)
        t += timedelta(hours=7)
    [row] = env.sends()
    assert row.state == "failed"
    assert row.reason.startswith("gave up after 8 attempts")


def test_server_without_starttls_is_refused(tmp_path, db_url):
    sink = SmtpSink().start()
    try:
        env = DeliveryEnv.create(tmp_path / "ws", db_url, sink, campaign=CAMPAIGN)
        toml = env.root / "nurture.toml"
        toml.write_text(toml.read_text().replace('starttls = "off"', 'starttls = "required"'))
        env.import_csv("email,status\nann@example.com,rejected\n", MON)
        env.tick(MON)
        with pytest.raises(NurtureError, match="refused.*nothing was sent"):
            env.tick(MON + timedelta(minutes=5))
        assert sink.received == []
        [row] = env.sends()
        assert row.state == "scheduled" and row.data_started is False
        env.close()
    finally:
        sink.stop()


def test_plaintext_to_a_remote_host_is_a_config_error(tmp_path):
    from nurture_mail.config import Secret, SmtpSettings
    from nurture_mail.errors import ConfigError
    from nurture_mail.transport import SmtpTransport

    settings = SmtpSettings(url=Secret("smtp://mail.example.com:25"), starttls="off", max_connections=1,
                            rate_per_minute=0, timeout_seconds=1, max_attempts=3, helo=None)
    with pytest.raises(ConfigError, match="only allowed for a server on localhost"):
        SmtpTransport(settings)
