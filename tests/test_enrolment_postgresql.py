"""Enrolment on PostgreSQL keeps linear plans whatever the statistics say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text, true

from nurture_mail import scheduling
from nurture_mail.campaigns import Audience, Campaign, Step
from nurture_mail.database import open_database
from nurture_mail.schedule import SchedulePolicy
from nurture_mail.store import enrolment, ledger

from .pg_plans import add_candidates, explained


def test_a_first_enrolment_after_analyze_reads_each_table_once(pg_url):
    # Statistics from ANALYZE say enrollments and suppressions are empty: left to itself the
    # planner takes a nested-loop anti-join that rescans them per candidate, and also every
    # row the INSERT has just added (quadratic: 214 s for 200,000 candidates).
    db = open_database(pg_url)
    try:
        add_candidates(db.engine, 2000)
        inserts = explained(db.engine, lambda sql: sql.startswith("INSERT INTO enrollments"))
        with inserts as plans, db.sessions.begin() as session:
            enrolled = enrolment.enrol(session, "c1", true(), datetime(2027, 3, 1, 9))
            setting = session.execute(text("SELECT current_setting('enable_nestloop')")).scalar_one()
    finally:
        db.dispose()
    assert enrolled == 2000
    assert len(plans) == 1
    assert "Nested Loop" not in plans[0], plans[0]
    assert "Anti Join" in plans[0]
    assert setting == "on"  # only the INSERT ran without nested loops


def test_claims_after_a_big_first_step_read_only_the_rows_they_take(pg_url, monkeypatch):
    # A first step due at once for everyone: the claims that follow must read the claimable
    # index in (due_at, id) order and stop at their limit. With the index on due_at alone, or
    # with statistics from before the rows were placed (autovacuum is a minute or more
    # behind), PostgreSQL read and sorted every due row for each claim of 256: quadratic.
    monkeypatch.setattr(scheduling, "ANALYZE_AFTER", 1000)  # 2,000 rows stand for a million
    now = datetime(2027, 3, 1, 9, tzinfo=UTC)
    campaign = Campaign(
        id="c1", name="C1", status="active", sender=None, audience=Audience(),
        schedule=SchedulePolicy(timezone="UTC", days=frozenset(range(7)), hours=None,
                                skip_dates=frozenset()),
        exit_when=frozenset(), steps=(Step(id="s1", number=1, wait=timedelta(0), template="t"),),
        path=Path("c1.yaml"),
    )
    db = open_database(pg_url)
    try:
        add_candidates(db.engine, 2000)  # and statistics of the empty ledger
        with db.sessions.begin() as session:
            enrolment.enrol(session, "c1", true(), now.replace(tzinfo=None))
        placed, _ = scheduling.schedule_campaign(db, campaign, now=now, default_timezone="UTC",
                                                 domain="talent.example")
        with db.engine.connect() as conn:  # what the planner now believes of the ledger
            believed = conn.execute(text("SELECT reltuples FROM pg_class WHERE oid = 'sends'::regclass")).scalar()
        claims = explained(db.engine, lambda sql: sql.startswith("UPDATE sends SET state"))
        with claims as plans, db.sessions.begin() as session:
            ids = ledger.claim(session, due_by=now + timedelta(hours=1),
                               lease_until=now + timedelta(hours=2), owner="me", limit=256,
                               campaign_ids=["c1"])
    finally:
        db.dispose()
    assert placed == 2000
    assert believed == 2000  # ANALYZE ran after the placing, not a minute later
    assert len(ids) == 256
    assert len(plans) == 1
    assert "Index Scan using ix_sends_claimable" in plans[0], plans[0]
    assert "Sort" not in plans[0], plans[0]
