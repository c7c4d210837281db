"""`nurture plan` forecasts exactly what the sender then does, and changes nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from nurture_mail.models import Enrollment, Send
from nurture_mail.planning import plan_workspace
from nurture_mail.store import ledger
from nurture_mail.testing import SmtpSink
from nurture_mail.workspace import load_workspace

from .delivery_env import DeliveryEnv

T0 = datetime(2027, 3, 1, 6, 0, tzinfo=UTC)  # Monday
CAMPAIGN = """
id: nurture
name: Nurture
audience:
  status: [rejected, withdrawn]
  tags: {none: [do-not-contact]}
schedule:
  timezone: candidate
  days: [mon, tue, wed, thu]
  hours: "09:30-16:30"
  skip_dates: [2027-03-04]
  max_per_day: 3
steps:
  - {id: thank-you, wait: 2d, template: thank-you}
  - id: check-in
    wait: 20d
    template: check-in
    variants:
      - {id: a, weight: 1}
      - {id: b, weight: 1, subject: "B: how are things?"}
  - {id: news, wait: 15d, template: news, only_if: {open_to_work: {ne: false}}}
  - {id: last, wait: 10d, template: check-in}
"""
PEOPLE = "email,status,tags,timezone,open_to_work\n" + "".join(
    f"p{i}@example.com,{'rejected' if i % 3 else 'withdrawn'},{'do-not-contact' if i == 7 else ''},"
    f"{['Europe/Berlin', 'Asia/Tokyo', 'America/Los_Angeles', 'Asia/Kolkata', ''][i % 5]},"
    f"{'false' if i % 4 == 0 else 'true'}\n"
    for i in range(12)
)


@pytest.fixture
def env(tmp_path, db_url):
    sink = SmtpSink().start()
    e = DeliveryEnv.create(tmp_path / "ws", db_url, sink, campaign=CAMPAIGN)
    e.import_csv(PEOPLE, T0)
    yield e
    e.close()
    sink.stop()


def planned(env, now, days):
    settings = env.settings()
    db = env.db()
    try:
        ws = load_workspace(settings, db)
        newcomers, sends = plan_workspace(db, ws, set(), now=now, days=days, default_timezone="UTC")
        return newcomers, [(p.campaign, p.step, p.variant, p.email, p.send_at) for p in sends]
    finally:
        db.dispose()


def live(env, start, until):
    """Run the engine as the daemon would, waking exactly when something falls due."""
    now = start
    while now <= until:
        env.tick(now)
        db = env.db()
        with db.sessions() as s:
            due = ledger.next_due(s, ["nurture"])
        db.dispose()
        if due is None:
            break
        now = max(due, now + timedelta(minutes=1))
    db = env.db()
    with db.sessions() as s:
        rows = s.execute(select(Send).where(Send.state == "sent")).scalars().all()
        out = sorted(
            (r.campaign_id, r.step_id, r.variant, r.to_addr, r.sent_at.replace(tzinfo=UTC))
            for r in rows if r.sent_at.replace(tzinfo=UTC) <= until
        )
    db.dispose()
    return out


def test_plan_matches_what_the_sender_does(env):
    days = 70
    newcomers, forecast = planned(env, T0, days)
    assert newcomers == {"nurture": 11}  # 12 minus do-not-contact
    actual = live(env, T0, T0 + timedelta(days=days))
    assert sorted(forecast) == actual
    steps = {s for _, s, _, _, _ in actual}
    assert steps == {"thank-you", "check-in", "news", "last"}
    # The cap of 3 a day (UTC days, per-candidate zones) held in the forecast too.
    per_day: dict = {}
    for *_, at in forecast:
        per_day[at.date()] = per_day.get(at.date(), 0) + 1
    assert max(per_day.values()) <= 3


def test_plan_without_only_if_matches_too(tmp_path, db_url):
    """No `only_if`: the forecast reads only addresses and zones, and still equals the sender."""
    campaign = CAMPAIGN.replace(", only_if: {open_to_work: {ne: false}}", "")
    assert "only_if" not in campaign
    sink = SmtpSink().start()
    plain = DeliveryEnv.create(tmp_path / "plain", db_url, sink, campaign=campaign)
    try:
        plain.import_csv(PEOPLE, T0)
        _, forecast = planned(plain, T0, 50)
        actual = live(plain, T0, T0 + timedelta(days=50))
        assert sorted(forecast) == actual
        assert {s for _, s, _, _, _ in actual} == {"thank-you", "check-in", "news", "last"}
    finally:
        plain.close()
        sink.stop()


def test_plan_mid_flight_matches_too(env):
    live(env, T0, T0 + timedelta(days=10))
    now = T0 + timedelta(days=10, hours=3)
    _, forecast = planned(env, now, 60)
    before = {x for x in live(env, T0, now)}
    actual = [x for x in live(env, now, now + timedelta(days=60)) if x not in before]
    assert sorted(forecast) == actual


def test_plan_has_no_side_effects(env, run_cli, monkeypatch):
    monkeypatch.chdir(env.root)
    db = env.db()

    def counts():
        with db.sessions() as s:
            return (s.execute(select(func.count()).select_from(Enrollment)).scalar(),
                    s.execute(select(func.count()).select_from(Send)).scalar())

    assert counts() == (0, 0)
    result = run_cli("--database", env.db_url, "--now", T0.isoformat(), "plan", "--days", "30", "--format", "json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert rows and set(rows[0]) == {"campaign", "step", "variant", "email", "send_at", "local_time"}
    assert counts() == (0, 0)
    assert env.sink.received == []
    db.dispose()


def test_plan_unknown_campaign(env, run_cli, monkeypatch):
    monkeypatch.chdir(env.root)
    result = run_cli("--database", env.db_url, "plan", "nope")
    assert result.exit_code == 1
    assert result.stderr == "error: no campaign 'nope' (campaigns: nurture)\n"


def test_tick_dry_run_lists_what_is_due_and_writes_nothing(env, run_cli, monkeypatch):
    monkeypatch.chdir(env.root)
    live(env, T0, T0 + timedelta(hours=1))  # enrolled and scheduled, nothing due yet
    db = env.db()
    with db.sessions() as s:
        before = sorted((r.id, r.state, r.due_at) for r in s.execute(select(Send)).scalars())
    due_at = min(d for _, _, d in before).replace(tzinfo=UTC)
    result = run_cli("--database", env.db_url, "--now", due_at.isoformat(), "tick", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "would send nurture/thank-you to" in result.stdout
    assert "nothing written" in result.stdout
    with db.sessions() as s:
        after = sorted((r.id, r.state, r.due_at) for r in s.execute(select(Send)).scalars())
    assert after == before
    assert env.sink.received == []
    db.dispose()
