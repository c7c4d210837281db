"""The ledger's hot-path queries agree with the plain functions they stand in for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, update

from nurture_mail.database import open_database
from nurture_mail.models import Candidate, Send
from nurture_mail.store import ledger, pool, sent_messages
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
                    send = session.execute(select(Send).where(Send.id == row.send_id)).scalar_one()
                    assert row.due_at == ledger.aware(send.due_at) and row.message_id == send.message_id
                ann = by_email["ann@example.com"].candidate
                assert ann["tags"] == ["python", "remote"] and ann["attributes"] == {"seniority": "senior"}
                assert ann["decided_at"].tzinfo is not None
        finally:
            db.dispose()
    finally:
        env.close()
        sink.stop()


@given(st.binary(max_size=20_000), st.binary(min_size=1, max_size=5_000))
def test_stored_message_packing_round_trips(message, sample):
    """A packed message is a Zstandard frame that unpacks to the message, with or without a
    dictionary; rows written before (zlib streams) unpack too."""
    import zlib

    from nurture_mail.store.sent_messages import PLAIN, _compressor, unpack

    dictionary_id, packed = PLAIN.pack(message)
    assert dictionary_id is None and packed[:4] == b"\x28\xb5\x2f\xfd"
    assert unpack(packed) == message
    against = _compressor(sample).compress(message)
    assert unpack(against, sample) == message
    assert unpack(zlib.compress(message, 1)) == message


def test_a_dictionary_packs_a_steps_messages_small_and_is_stored_once(tmp_path, db_url):
    """Against its step's synthetic email, a real email of the step packs to a fraction of its
    plain size; the same sample is one dictionary row whoever builds it."""
    import random

    from nurture_mail.store import sent_messages

    words = random.Random(7).choices(["thank", "you", "for", "time", "role", "team", "we", "stay",
                                      "in", "touch", "Engineer", "Backend", "meeting", "hope"], k=500)
    sample = b"From: Dana <dana@talent.example>\r\nSubject: Thank you, Alex\r\n\r\n" + " ".join(words).encode()
    real = sample.replace(b"Alex", b"Maria", 1).replace(b"Backend", b"Frontend", 1)
    db = open_database(db_url)
    try:
        with db.sessions.begin() as session:
            first = sent_messages.packer(session, sample, MON)
        with db.sessions.begin() as session:
            again = sent_messages.packer(session, sample, MON)
            other = sent_messages.packer(session, sample + b"!", MON)
        assert first.dictionary_id == again.dictionary_id != other.dictionary_id
        dictionary_id, packed = first.pack(real)
        assert dictionary_id == first.dictionary_id
        assert len(packed) * 4 < len(sent_messages.PLAIN.pack(real)[1])
        assert sent_messages.unpack(packed, sample) == real
    finally:
        db.dispose()


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
                prepared = {sid: ledger.Prepared(f"to{sid}@example.com", f"subject {sid}",
                                                  *sent_messages.PLAIN.pack(b"message %d" % sid))
                            for sid in ids}
                marked = ledger.mark_data_started(session, "me", prepared, MON + timedelta(hours=2))
                assert sorted(marked) == [ids[0], ids[2]]
                # the sender that holds it marks it
                assert ledger.mark_data_started(session, "other", {stolen: prepared[stolen]},
                                                MON + timedelta(hours=2)) == [stolen]
            with db.sessions.begin() as session:
                rows = {s.id: s for s in session.execute(select(Send).where(Send.id.in_(ids))).scalars()}
                stored = sent_messages.read(session, ids)
            for sid in ids:
                assert rows[sid].data_started is True and rows[sid].attempts == 1
                assert stored[sid] == b"message %d" % sid
                assert (rows[sid].to_addr, rows[sid].subject) == prepared[sid][:2]
            # the fence holds on a second try too
            with db.sessions.begin() as session:
                assert ledger.mark_data_started(session, "me", {stolen: prepared[stolen]}, MON) == []
        finally:
            db.dispose()
    finally:
        env.close()
        sink.stop()


def test_the_dictionary_sample_never_carries_a_person_named_by_the_audience(tmp_path):
    """Audience rules may name a real person; the step's dictionary (kept for good, beyond any
    `forget`) holds neither the address, its local part nor the name."""
    from nurture_mail.campaigns import load_campaigns
    from nurture_mail.config import load_settings
    from nurture_mail.rendering import dictionary_sample
    from nurture_mail.scaffold import create_workspace
    from nurture_mail.templates import TemplateSet

    root = tmp_path / "ws"
    create_workspace(root)
    for path in (root / "campaigns").glob("*.yaml"):
        path.unlink()
    (root / "campaigns" / "one.yaml").write_text(
        "id: one\nname: One\n"
        "audience:\n  status: [rejected]\n"
        "  where:\n    email: {in: [zed.forgetme@example.com]}\n    first_name: {eq: Zed}\n"
        "    last_name: {eq: Forgetme}\n    full_name: {eq: Zed Forgetme}\n"
        "    backup: {eq: zed.forgetme@example.org}\n"
        "steps:\n  - {id: thank-you, wait: 1d, template: thank-you}\n"
    )
    settings = load_settings(root / "nurture.toml", env={}, cwd=root)
    templates = TemplateSet(root / "templates")
    (campaign,), errors = load_campaigns(root / "campaigns", template_exists=templates.exists)
    assert not errors, errors
    sample = dictionary_sample(templates, settings, "secret", campaign, campaign.steps[0], None)
    assert b"Thank you" in sample  # the step's email, rendered
    for word in (b"forgetme", b"Forgetme", b"Zed"):
        assert word not in sample
