"""The ledger's hot-path queries agree with the plain functions they stand in for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, update

from nurture_mail.database import open_database
from nurture_mail.models import Candidate, Send
from nurture_mail.store import ledger, pool
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


def test_claimed_details_give_the_candidate_exactly_as_candidate_fields_does(tmp_path, db_url):
    sink = SmtpSink().start()
    env = DeliveryEnv.create(tmp_path / "ws", db_url, sink, campaign=CAMPAIGN)
    try:
        env.import_csv(
            "email,first_name,last_name,status,timezone,owner,role,stage_reached,decided_at,tags,seniority\n"
            "ann@example.com,Ann,Lee,rejected,Europe/Berlin,dana,Engineer,onsite,2026-05-01,python;remote,senior\n"
            "bo@example.com,,,rejected,,,,,,,\n",
            MON,
        )
        env.tick(MON)  # enrol and schedule; due a minute later
        db = open_database(db_url)
        try:
            with db.sessions.begin() as session:
                ids = ledger.claim(session, due_by=MON + timedelta(hours=1), lease_until=MON + timedelta(hours=2),
                                   owner="test", limit=10, campaign_ids=["once"])
                claimed = ledger.claimed_details(session, ids)
                by_email = {c.candidate["email"]: c for c in claimed}
                assert set(by_email) == {"ann@example.com", "bo@example.com"}
                for email, row in by_email.items():
                    orm = session.execute(select(Candidate).where(Candidate.email == email)).scalar_one()
                    expected = ledger.candidate_fields(orm, sorted(pool.tags_of(session, [orm.id]).get(orm.id, [])))
                    assert row.candidate == expected
                    assert row.enrollment_state == "active" and row.suppressed is False
                    assert row.step_id == "hello" and row.due_at.tzinfo is not None
                ann = by_email["ann@example.com"].candidate
                assert ann["tags"] == ["python", "remote"] and ann["attributes"] == {"seniority": "senior"}
                assert ann["decided_at"].tzinfo is not None
        finally:
            db.dispose()
    finally:
        env.close()
        sink.stop()


@given(st.binary(max_size=20_000))
def test_stored_message_packing_round_trips(message):
    """A packed message is a Zstandard frame that unpacks to the message; rows written before
    (zlib streams) unpack too."""
    import zlib

    from nurture_mail.store.ledger import pack_message, unpack_message

    packed = pack_message(message)
    assert packed[:4] == b"\x28\xb5\x2f\xfd"
    assert unpack_message(packed) == message
    assert unpack_message(zlib.compress(message, 1)) == message


def test_mark_data_started_is_fenced_by_the_claim(tmp_path, db_url):
    """A row another sender took over (our lease ran out) is neither marked nor stored, and
    is not returned as sendable; the others are marked once with their message."""
    sink = SmtpSink().start()
    env = DeliveryEnv.create(tmp_path / "ws", db_url, sink, campaign=CAMPAIGN)
    try:
        env.import_csv("email,status\na@example.com,rejected\nb@example.com,rejected\nc@example.com,rejected\n", MON)
        env.tick(MON)
        db = open_database(db_url)
        try:
            with db.sessions.begin() as session:
                ids = ledger.claim(session, due_by=MON + timedelta(hours=1), lease_until=MON + timedelta(hours=2),
                                   owner="me", limit=10, campaign_ids=["once"])
                assert len(ids) == 3
                stolen = ids[1]
                session.execute(update(Send).where(Send.id == stolen).values(claimed_by="other"))
                prepared = {sid: (f"to{sid}@example.com", f"subject {sid}", ledger.pack_message(b"message %d" % sid))
                            for sid in ids}
                marked = ledger.mark_data_started(session, "me", prepared, MON, MON + timedelta(hours=2))
                assert sorted(marked) == [ids[0], ids[2]]
                # the sender that holds it marks it
                assert ledger.mark_data_started(session, "other", {stolen: prepared[stolen]}, MON,
                                                MON + timedelta(hours=2)) == [stolen]
            with db.sessions.begin() as session:
                rows = {s.id: s for s in session.execute(select(Send).where(Send.id.in_(ids))).scalars()}
            for sid in ids:
                assert rows[sid].data_started is True and rows[sid].attempts == 1
                assert ledger.unpack_message(rows[sid].body) == b"message %d" % sid
                assert (rows[sid].to_addr, rows[sid].subject) == prepared[sid][:2]
            # the fence holds on a second try too
            with db.sessions.begin() as session:
                assert ledger.mark_data_started(session, "me", {stolen: prepared[stolen]}, MON, MON) == []
        finally:
            db.dispose()
    finally:
        env.close()
        sink.stop()
