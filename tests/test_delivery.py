"""The send path end to end against a real SMTP server on loopback (aiosmtpd), on SQLite and
PostgreSQL: who gets what, when, exactly once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from nurture_mail.store import pool
from nurture_mail.testing import SmtpSink

from .delivery_env import DeliveryEnv

MON = datetime(2027, 3, 1, 0, 0, tzinfo=UTC)  # a Monday

PEOPLE = """
email,first_name,last_name,status,tags,timezone
berlin@example.com,Bea,Berg,rejected,,Europe/Berlin
tokyo@example.com,Taro,Tanaka,rejected,,Asia/Tokyo
la@example.com,Lee,Ames,rejected,,America/Los_Angeles
hired@example.com,Hal,Hire,hired,,UTC
withdrawn@example.com,Wil,Draw,withdrawn,,UTC
dnc@example.com,Dee,Nc,rejected,do-not-contact,UTC
"""


@pytest.fixture
def sink():
    s = SmtpSink().start()
    yield s
    s.stop()


@pytest.fixture
def env(tmp_path, db_url, sink):
    e = DeliveryEnv.create(tmp_path / "ws", db_url, sink)
    e.import_csv(PEOPLE, MON)
    yield e
    e.close()


def run_days(env, start: datetime, days: int, every: timedelta = timedelta(hours=1)):
    t = start
    while t < start + timedelta(days=days):
        env.tick(t)
        t += every


def test_right_people_right_step_right_local_time(env, sink):
    report = env.tick(MON)
    assert report.enrolled == 3
    assert report.sent == 0  # wait: 1d
    run_days(env, MON, 3)
    got = {rcpt: msg for rcpt, msg in env.received()}
    assert set(got) == {"berlin@example.com", "tokyo@example.com", "la@example.com"}
    for rcpt, zone in (("berlin@example.com", "Europe/Berlin"), ("tokyo@example.com", "Asia/Tokyo"),
                       ("la@example.com", "America/Los_Angeles")):
        local = got[rcpt]["Date"].datetime.astimezone(ZoneInfo(zone))
        assert 9 <= local.hour < 17, (rcpt, local)
        assert local.weekday() < 5
        assert got[rcpt]["Subject"] == "Thank you, " + rcpt.split("@")[0].title()[:0] + got[rcpt]["Subject"][11:]
    sends = env.sends()
    assert {s.step_id for s in sends if s.state == "sent"} == {"thank-you"}
    # The next step is already in the ledger, 30 days after each send, inside the window.
    pending = [s for s in sends if s.state == "scheduled"]
    assert {s.step_id for s in pending} == {"check-in"}
    sent_at = {s.candidate_id: s.sent_at for s in sends if s.state == "sent"}
    for s in pending:
        assert s.due_at >= sent_at[s.candidate_id] + timedelta(days=30)


def test_second_tick_at_the_same_time_sends_nothing(env, sink):
    env.tick(MON)
    at = MON + timedelta(days=1, hours=10)  # Tue 10:00 UTC: Berlin 11:00
    first = env.tick(at)
    assert first.sent >= 1
    count = len(sink.received)
    again = env.tick(at)
    assert again.sent == 0
    assert len(sink.received) == count


def test_a_helper_sender_sends_what_is_due_and_leaves_enrolling_and_scheduling(env, sink):
    # A helper of `run --workers` (sender_only): nothing to send before the daemon enrols.
    helper = env.tick(MON, sender_only=True)
    assert (helper.enrolled, helper.scheduled, helper.sent) == (0, 0, 0)
    assert env.sends() == []
    daemon = env.tick(MON)
    assert (daemon.enrolled, daemon.scheduled) == (3, 3)
    # Once rows are due, the helper sends them; the next steps are the daemon's to place.
    at = MON + timedelta(days=2, hours=10)  # Wed 10:00 UTC: inside every zone's window or deferred
    helper = env.tick(at, sender_only=True)
    assert helper.sent + helper.rescheduled == 3 and helper.sent >= 1
    assert len(sink.received) == helper.sent
    assert helper.scheduled == 0
    assert {s.step_id for s in env.sends()} == {"thank-you"}  # no check-in placed yet
    assert env.tick(at).scheduled == helper.sent  # the daemon places them


def test_a_whole_sequence_is_sent_once_each(env, sink):
    run_days(env, MON, 40, every=timedelta(hours=3))
    ids = sink.message_ids()
    assert len(ids) == len(set(ids)) == 6  # 3 people x 2 steps
    steps = sorted((r.rcpt, m["Subject"]) for r, m in zip(sink.received, [m for _, m in env.received()], strict=True))
    assert [s for r, s in steps if r == "tokyo@example.com"] == ["How are things?", "Thank you, Taro"]
    assert all(s.state == "sent" for s in env.sends())


def test_every_message_parses_and_has_the_promised_headers(env, sink):
    run_days(env, MON, 3)
    for rcpt, msg in env.received():
        assert not msg.defects
        assert msg["From"].addresses[0].addr_spec == "dana@talent.example"
        assert msg["To"].addresses[0].addr_spec == rcpt
        assert msg["Message-ID"].endswith("@talent.example>")
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "<https://talent.example/u/" in msg["List-Unsubscribe"]
        assert "<mailto:" in msg["List-Unsubscribe"]
        text = msg.get_body(("plain",)).get_content()
        html = msg.get_body(("html",)).get_content()
        assert "1 Main St, Springfield" in text and "1 Main St, Springfield" in html
        assert "https://talent.example/u/" in text and "https://talent.example/u/" in html


def test_header_injection_from_candidate_data_adds_no_header(tmp_path, db_url, sink):
    env = DeliveryEnv.create(tmp_path / "ws", db_url, sink)
    env.import_csv(
        'email,first_name,last_name,status,timezone\n'
        'evil@example.com,"Eve\r\nBcc: victim@example.com","<script>alert(1)</script>",rejected,UTC\n',
        MON,
    )
    run_days(env, MON, 3)
    [(rcpt, msg)] = env.received()
    assert rcpt == "evil@example.com"
    assert "Bcc" not in msg
    assert [r.rcpt for r in sink.received] == ["evil@example.com"]
    assert "victim@example.com" not in msg["Subject"] or "\n" not in msg["Subject"]
    html = msg.get_body(("html",)).get_content()
    assert "<script>" not in html


def test_unsubscribe_and_hired_stop_every_later_step(env, sink):
    run_days(env, MON, 3)
    db = env.db()
    pool.unsubscribe(db, "berlin@example.com", MON + timedelta(days=3))
    pool.update_candidate(db, "tokyo@example.com", status="hired", add_tags=[], remove_tags=[], now=MON + timedelta(days=3))
    db.dispose()
    before = len(sink.received)
    run_days(env, MON + timedelta(days=3), 40, every=timedelta(hours=6))
    later = [r.rcpt for r in sink.received[before:]]
    assert later == ["la@example.com"]
    states = {(s.candidate_id, s.step_id): (s.state, s.reason) for s in env.sends()}
    assert ("cancelled", "unsubscribed") in states.values()
    assert ("cancelled", "hired") in states.values()


def test_paused_campaign_sends_nothing_then_resumes(env, sink):
    env.tick(MON)
    env.write_campaign((DEFAULT := __import__("tests.delivery_env", fromlist=["x"]).DEFAULT_CAMPAIGN).replace("name: Keep warm", "name: Keep warm\nstatus: paused"))
    run_days(env, MON, 3)
    assert sink.received == []
    env.write_campaign(DEFAULT)
    run_days(env, MON + timedelta(days=3), 2)
    assert len(sink.received) == 3


def test_editing_a_live_campaign(env, sink):
    run_days(env, MON, 3)  # thank-you sent to 3
    # Remove check-in (pending), add a new last step: the removed step is never sent, the new one is.
    env.write_campaign("""
        id: keep-warm
        name: Keep warm
        audience:
          status: [rejected]
          tags: {none: [do-not-contact]}
        schedule:
          timezone: candidate
          days: [mon, tue, wed, thu, fri]
          hours: "09:00-17:00"
        steps:
          - id: thank-you
            wait: 1d
            template: thank-you
          - id: news
            wait: 10d
            template: news
    """)
    run_days(env, MON + timedelta(days=3), 45, every=timedelta(hours=4))
    subjects = [m["Subject"] for _, m in env.received()]
    assert subjects.count("How are things?") == 0
    assert subjects.count("News from Talent Co") == 3
    cancelled = [s for s in env.sends() if s.state == "cancelled"]
    assert {s.reason for s in cancelled} == {"step removed from the campaign"}


def test_daily_cap_spreads_sends_over_days(tmp_path, db_url, sink):
    env = DeliveryEnv.create(tmp_path / "ws", db_url, sink, campaign="""
        id: capped
        name: Capped
        audience: {status: [rejected]}
        schedule: {timezone: UTC, hours: "09:00-17:00", max_per_day: 2}
        steps:
          - {id: hello, wait: 1m, template: news}
    """)
    env.import_csv("email,status\n" + "".join(f"p{i}@example.com,rejected\n" for i in range(5)), MON)
    run_days(env, MON, 4)
    days = sorted(m["Date"].datetime.date() for _, m in env.received())
    assert len(days) == 5
    assert days.count(MON.date()) == 2
    assert days.count((MON + timedelta(days=1)).date()) == 2
    assert days.count((MON + timedelta(days=2)).date()) == 1


def test_only_if_skips_the_step_and_the_sequence_continues(tmp_path, db_url, sink):
    env = DeliveryEnv.create(tmp_path / "ws", db_url, sink, campaign="""
        id: cond
        name: Conditional
        audience: {status: [rejected]}
        schedule: {timezone: UTC}
        steps:
          - {id: first, wait: 1h, template: news, only_if: {open_to_work: {ne: false}}}
          - {id: second, wait: 1d, template: check-in}
    """)
    env.import_csv("email,status,open_to_work\nyes@example.com,rejected,true\nno@example.com,rejected,false\n", MON)
    run_days(env, MON, 3)
    got = sorted((r, m["Subject"]) for r, m in env.received())
    assert got == [("no@example.com", "How are things?"), ("yes@example.com", "How are things?"),
                   ("yes@example.com", "News from Talent Co")]
    skipped = [s for s in env.sends() if s.state == "skipped"]
    assert len(skipped) == 1 and skipped[0].reason.startswith("only_if: open_to_work ne")


def test_ab_variants_are_sticky_and_split(tmp_path, db_url, sink):
    env = DeliveryEnv.create(tmp_path / "ws", db_url, sink, campaign="""
        id: ab
        name: AB
        audience: {status: [rejected]}
        schedule: {timezone: UTC}
        steps:
          - id: news
            wait: 1h
            template: news
            variants:
              - {id: a, weight: 1}
              - {id: b, weight: 1, subject: "Variant B for {{ candidate.email }}"}
    """)
    env.import_csv("email,status\n" + "".join(f"v{i}@example.com,rejected\n" for i in range(40)), MON)
    run_days(env, MON, 1)
    by_variant = {}
    for s in env.sends():
        by_variant.setdefault(s.variant, []).append(s)
    assert set(by_variant) == {"a", "b"}
    assert 8 <= len(by_variant["a"]) <= 32
    for rcpt, msg in env.received():
        variant = "b" if msg["Subject"].startswith("Variant B") else "a"
        assert any(s.to_addr == rcpt and s.variant == variant for s in env.sends())
