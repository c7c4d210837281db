"""Reply sync end to end on SQLite and PostgreSQL: real sends made by the engine through a
loopback SMTP sink, then replies, out-of-office notes, bounces, complaints and unrelated mail
read from .eml files, a Maildir and an mbox; matched, acted on once, never twice."""

from __future__ import annotations

import json
import mailbox
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from nurture_mail.inbox import FilesInbox, MaildirInbox, MboxInbox
from nurture_mail.models import Enrollment, Event, Inbound, Send, Suppression
from nurture_mail.reply_sync import message_identity, sync_replies
from nurture_mail.testing import SmtpSink

from .delivery_env import DeliveryEnv

MON = datetime(2027, 3, 1, 0, 0, tzinfo=UTC)  # a Monday
AFTER_FIRST = MON + timedelta(days=3)  # every thank-you went out on Tuesday

PEOPLE = """
email,first_name,last_name,status,tags,timezone
berlin@example.com,Bea,Berg,rejected,,Europe/Berlin
tokyo@example.com,Taro,Tanaka,rejected,,Asia/Tokyo
la@example.com,Lee,Ames,rejected,,America/Los_Angeles
paris@example.com,Pia,Roux,rejected,,Europe/Paris
"""

# A short second step, so that out-of-office pauses have something to move.
QUICK = """
id: keep-warm
name: Keep warm
audience:
  status: [rejected]
schedule:
  timezone: candidate
  days: [mon, tue, wed, thu, fri]
  hours: "09:00-17:00"
steps:
  - id: thank-you
    wait: 1d
    template: thank-you
  - id: check-in
    wait: 3d
    template: check-in
"""

# --- message builders (also used by test_imap.py) ---------------------------------------------

_counter = iter(range(1, 1_000_000))


def _mid(domain: str = "mail.example.com") -> str:
    return f"<m{next(_counter)}.{datetime.now().timestamp():.0f}@{domain}>"


def _date(when: datetime) -> str:
    return format_datetime(when.astimezone(UTC))


def human_reply(send: Send, when: datetime, text: str = "Thanks Dana, happy to talk in April!",
                *, sender: str | None = None, thread: bool = True, message_id: str | None = None) -> bytes:
    headers = [
        f"From: Candidate <{sender or send.to_addr}>",
        "To: Dana Reyes <dana@talent.example>",
        f"Subject: Re: {send.subject}",
        f"Date: {_date(when)}",
        f"Message-ID: {message_id or _mid()}",
    ]
    if thread:
        headers += [f"In-Reply-To: <{send.message_id}>", f"References: <{send.message_id}>"]
    body = (
        f"{text}\n\n-- \nSomeone, Some Company\n\n"
        f"On {_date(send.sent_at.replace(tzinfo=UTC))}, Dana Reyes <dana@talent.example> wrote:\n"
        "> Hi there,\n> This is the thank-you email.\n"
    )
    return _message(headers, body)


def out_of_office(send: Send, when: datetime, subject: str, text: str, *, thread: bool = True) -> bytes:
    headers = [
        f"From: <{send.to_addr}>",
        "To: Dana Reyes <dana@talent.example>",
        f"Subject: {subject}",
        f"Date: {_date(when)}",
        f"Message-ID: {_mid()}",
        "Auto-Submitted: auto-replied",
    ]
    if thread:
        headers.append(f"In-Reply-To: <{send.message_id}>")
    return _message(headers, text + "\n")


def dsn(recipient: str, when: datetime, *, status: str = "5.1.1", original: str | None = None,
        action: str = "failed", diagnostic: str = "550 5.1.1 User unknown") -> bytes:
    boundary = "dsn-boundary-42"
    original_part = ""
    if original:
        original_part = (
            f"--{boundary}\nContent-Type: text/rfc822-headers\n\n"
            f"From: Dana Reyes <dana@talent.example>\nTo: {recipient}\n"
            f"Subject: Thank you\nMessage-ID: <{original}>\n\n"
        )
    body = (
        f"This is a MIME-encapsulated message.\n\n--{boundary}\n"
        "Content-Type: text/plain\n\n"
        "This is the mail system at host mx.talent.example.\n\n"
        "I'm sorry to have to inform you that your message could not\n"
        "be delivered to one or more recipients.\n\n"
        f"<{recipient}>: host mx.example.com said: {diagnostic}\n\n"
        f"--{boundary}\nContent-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; mx.talent.example\n\n"
        f"Final-Recipient: rfc822; {recipient}\nOriginal-Recipient: rfc822; {recipient}\n"
        f"Action: {action}\nStatus: {status}\n"
        f"Diagnostic-Code: smtp; {diagnostic}\n\n"
        f"{original_part}--{boundary}--\n"
    )
    headers = [
        "From: MAILER-DAEMON@mx.talent.example (Mail Delivery System)",
        "To: dana@talent.example",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {_date(when)}",
        f"Message-ID: {_mid('mx.talent.example')}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]
    return _message(headers, body, content_type=False)


def newsletter(when: datetime) -> bytes:
    headers = [
        "From: Shop News <news@shop.example>",
        "To: dana@talent.example",
        "Subject: Our spring sale starts now",
        f"Date: {_date(when)}",
        f"Message-ID: {_mid('shop.example')}",
        "List-Id: <spring.shop.example>",
        "List-Unsubscribe: <https://shop.example/u/1>",
        "Precedence: bulk",
    ]
    return _message(headers, "Everything 20% off this week.\n")


def complaint(send: Send, when: datetime) -> bytes:
    boundary = "arf-1"
    body = (
        f"--{boundary}\nContent-Type: text/plain\n\nThis is an abuse report.\n\n"
        f"--{boundary}\nContent-Type: message/feedback-report\n\n"
        "Feedback-Type: abuse\nUser-Agent: ISP-FBL/1.0\nVersion: 1\n"
        f"Original-Rcpt-To: {send.to_addr}\n\n"
        f"--{boundary}\nContent-Type: message/rfc822\n\n"
        f"From: dana@talent.example\nTo: {send.to_addr}\nMessage-ID: <{send.message_id}>\n"
        f"Subject: {send.subject}\n\nHi\n\n--{boundary}--\n"
    )
    headers = [
        "From: fbl@isp.example",
        "To: dana@talent.example",
        "Subject: Abuse report",
        f"Date: {_date(when)}",
        f"Message-ID: {_mid('isp.example')}",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=feedback-report; boundary="{boundary}"',
    ]
    return _message(headers, body, content_type=False)


def _message(headers: list[str], body: str, *, content_type: bool = True) -> bytes:
    if content_type:
        headers = headers + ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
                             "Content-Transfer-Encoding: 8bit"]
    return ("\r\n".join(headers) + "\r\n\r\n" + body.replace("\n", "\r\n")).encode("utf-8")


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def sink():
    s = SmtpSink().start()
    yield s
    s.stop()


def _sent_env(tmp_path, db_url, sink, campaign: str | None = None, start: datetime = MON) -> DeliveryEnv:
    """Four candidates enrolled on Monday `start`, each sent the first step by Thursday."""
    env = DeliveryEnv.create(tmp_path / "ws", db_url, sink, **({"campaign": campaign} if campaign else {}))
    env.import_csv(PEOPLE, start)
    t = start
    while t < start + timedelta(days=3):
        env.tick(t)
        t += timedelta(hours=1)
    return env


@pytest.fixture
def env(tmp_path, db_url, sink):
    e = _sent_env(tmp_path, db_url, sink)
    yield e
    e.close()


@pytest.fixture
def quick(tmp_path, db_url, sink):
    e = _sent_env(tmp_path, db_url, sink, QUICK)
    yield e
    e.close()


EXIT_ALL = {"keep-warm": frozenset({"replied", "unsubscribed", "bounced", "hired"})}


def sent_to(env: DeliveryEnv, address: str, step: str = "thank-you") -> Send:
    [send] = [s for s in env.sends() if s.to_addr == address and s.step_id == step and s.state == "sent"]
    return send


def write_eml(directory: Path, name: str, raw: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(raw)
    return path


def sync(env: DeliveryEnv, sources, now: datetime, exit_when=EXIT_ALL):
    db = env.db()
    try:
        return sync_replies(env.settings(), db, now=now, exit_when=exit_when, sources=sources)
    finally:
        db.dispose()


def rows(env: DeliveryEnv, model, *where):
    db = env.db()
    try:
        with db.sessions() as s:
            return list(s.execute(select(model).where(*where)).scalars())
    finally:
        db.dispose()


def enrollment_of(env: DeliveryEnv, address: str) -> Enrollment:
    send = next(s for s in env.sends() if s.to_addr == address)
    [e] = rows(env, Enrollment, Enrollment.id == send.enrollment_id)
    return e


def pending_of(env: DeliveryEnv, address: str) -> Send:
    cid = next(s for s in env.sends() if s.to_addr == address).candidate_id
    [s] = [s for s in env.sends() if s.candidate_id == cid and s.state in ("scheduled", "deferred")]
    return s


# --- the effects ------------------------------------------------------------------------------


def test_reply_ends_the_enrollment_and_keeps_the_text(env, tmp_path):
    send = sent_to(env, "berlin@example.com")
    at = AFTER_FIRST + timedelta(hours=2)
    path = write_eml(tmp_path / "in", "reply.eml", human_reply(send, at))
    report = sync(env, [FilesInbox([path])], at + timedelta(minutes=5))
    assert (report.new, report.matched, report.unmatched) == (1, 1, 0)
    assert report.kinds["reply"] == 1
    e = enrollment_of(env, "berlin@example.com")
    assert (e.state, e.exit_reason) == ("exited", "replied")
    [check_in] = [s for s in env.sends() if s.enrollment_id == e.id and s.step_id == "check-in"]
    assert check_in.state == "cancelled"
    [row] = rows(env, Inbound)
    assert row.kind == "reply" and row.send_id == send.id and row.candidate_id == send.candidate_id
    assert row.campaign_id == "keep-warm"
    # The send's copies for reports: it was accepted, so its sent_at too.
    assert (row.step_id, row.variant, row.send_sent_at) == (send.step_id, send.variant, send.sent_at)
    assert send.state == "sent" and send.sent_at is not None
    assert row.reply_text == "Thanks Dana, happy to talk in April!"
    assert row.received_at == at.replace(tzinfo=None, microsecond=0)
    [event] = rows(env, Event, Event.kind == "reply")
    assert event.detail["action"] == "enrollments ended" and event.detail["matched_by"] == "thread"
    # others untouched
    assert enrollment_of(env, "tokyo@example.com").state == "active"


def test_reply_respects_exit_when(env, tmp_path):
    send = sent_to(env, "berlin@example.com")
    at = AFTER_FIRST + timedelta(hours=2)
    path = write_eml(tmp_path / "in", "reply.eml", human_reply(send, at))
    report = sync(env, [FilesInbox([path])], at, exit_when={"keep-warm": frozenset({"bounced"})})
    assert report.matched == 1
    assert enrollment_of(env, "berlin@example.com").state == "active"
    [event] = rows(env, Event, Event.kind == "reply")
    assert event.detail["action"] == "recorded"


def test_the_same_message_twice_is_stored_and_acted_on_once(env, tmp_path):
    send = sent_to(env, "berlin@example.com")
    at = AFTER_FIRST + timedelta(hours=2)
    raw = human_reply(send, at)
    a = write_eml(tmp_path / "a", "reply.eml", raw)
    b = write_eml(tmp_path / "b", "copy.eml", raw.replace(b"\r\n", b"\n"))  # other line endings
    first = sync(env, [FilesInbox([a, b])], at)
    assert (first.read, first.new, first.duplicates) == (2, 1, 1)
    again = sync(env, [FilesInbox([a])], at + timedelta(hours=1))
    assert (again.new, again.duplicates, again.matched) == (0, 1, 0)
    assert len(rows(env, Inbound)) == 1
    assert len(rows(env, Event, Event.kind == "reply")) == 1


def test_messages_without_message_id_dedupe_by_bytes(env, tmp_path):
    raw = b"From: someone@else.example\r\nSubject: hello\r\n\r\nJust saying hi.\r\n"
    other = b"From: someone@else.example\r\nSubject: hello\r\n\r\nJust saying hi again.\r\n"
    assert message_identity(raw)[0] == message_identity(raw.replace(b"\r\n", b"\n"))[0]
    assert message_identity(raw)[0] != message_identity(other)[0]
    paths = [write_eml(tmp_path / "in", n, r) for n, r in (("1.eml", raw), ("2.eml", raw), ("3.eml", other))]
    report = sync(env, [FilesInbox(paths)], AFTER_FIRST)
    assert (report.new, report.duplicates) == (2, 1)


def test_unmatched_mail_is_recorded_and_never_acted_on(env, tmp_path):
    at = AFTER_FIRST + timedelta(hours=1)
    stranger = human_reply(sent_to(env, "berlin@example.com"), at, sender="stranger@else.example",
                           thread=False)
    paths = [
        write_eml(tmp_path / "in", "news.eml", newsletter(at)),
        write_eml(tmp_path / "in", "stranger.eml", stranger),
        write_eml(tmp_path / "in", "bounce.eml", dsn("nobody@else.example", at)),
    ]
    report = sync(env, [FilesInbox(paths)], at)
    assert (report.new, report.matched, report.unmatched) == (3, 0, 3)
    kinds = sorted(r.kind for r in rows(env, Inbound))
    assert kinds == ["bounce", "other", "reply"]
    assert all(r.send_id is None and r.candidate_id is None for r in rows(env, Inbound))
    assert rows(env, Event, Event.kind.in_(["reply", "bounce_hard"])) == []
    assert rows(env, Suppression) == []
    assert {e.state for e in rows(env, Enrollment)} == {"active"}


def test_a_reply_to_a_send_of_unknown_fate_carries_no_sent_at(env, tmp_path):
    """The copies for reports: step and variant of any matched send, sent_at only of an
    accepted one (a report counts no reply to a send whose fate is unknown)."""
    send = sent_to(env, "berlin@example.com")
    db = env.db()
    try:
        with db.sessions.begin() as s:
            s.execute(update(Send).where(Send.id == send.id).values(state="unknown", sent_at=None))
    finally:
        db.dispose()
    at = AFTER_FIRST + timedelta(hours=2)
    path = write_eml(tmp_path / "in", "reply.eml", human_reply(send, at))
    assert sync(env, [FilesInbox([path])], at + timedelta(minutes=5)).matched == 1
    [row] = rows(env, Inbound)
    assert (row.send_id, row.step_id, row.variant, row.send_sent_at) == (send.id, send.step_id, send.variant, None)


def test_hard_bounce_suppresses_and_ends_enrollments(env, tmp_path):
    send = sent_to(env, "tokyo@example.com")
    at = AFTER_FIRST + timedelta(minutes=30)
    path = write_eml(tmp_path / "in", "dsn.eml", dsn("tokyo@example.com", at, original=send.message_id))
    report = sync(env, [FilesInbox([path])], at)
    assert report.matched == 1 and report.kinds["bounce"] == 1
    [row] = rows(env, Inbound)
    assert (row.kind, row.bounce, row.recipient, row.status_code) == ("bounce", "hard", "tokyo@example.com", "5.1.1")
    assert row.send_id == send.id
    [supp] = rows(env, Suppression)
    assert (supp.email, supp.reason) == ("tokyo@example.com", "bounced")
    e = enrollment_of(env, "tokyo@example.com")
    assert (e.state, e.exit_reason) == ("exited", "bounced")
    [event] = rows(env, Event, Event.kind == "bounce_hard")
    assert event.detail["matched_by"] == "original message"


def test_a_bounce_naming_only_the_recipient_matches_a_recent_send(env, tmp_path):
    at = AFTER_FIRST + timedelta(minutes=30)
    path = write_eml(tmp_path / "in", "dsn.eml", dsn("la@example.com", at))
    report = sync(env, [FilesInbox([path])], at)
    assert report.matched == 1
    [event] = rows(env, Event, Event.kind == "bounce_hard")
    assert event.detail["matched_by"] == "failed recipient"
    assert [s.email for s in rows(env, Suppression)] == ["la@example.com"]


def test_a_bounce_long_after_the_last_send_is_not_matched_by_address(env, tmp_path):
    at = AFTER_FIRST + timedelta(days=45)
    path = write_eml(tmp_path / "in", "dsn.eml", dsn("la@example.com", at))
    report = sync(env, [FilesInbox([path])], at)
    assert (report.matched, report.unmatched) == (0, 1)
    assert rows(env, Suppression) == []


def test_a_bounce_for_a_forward_target_suppresses_nobody(env, tmp_path):
    send = sent_to(env, "berlin@example.com")
    at = AFTER_FIRST + timedelta(minutes=30)
    raw = dsn("bea.private@gone.example", at, original=send.message_id)
    report = sync(env, [FilesInbox([write_eml(tmp_path / "in", "fwd.eml", raw)])], at)
    assert report.matched == 1
    assert rows(env, Suppression) == []
    [event] = rows(env, Event, Event.kind == "bounce_hard")
    assert event.detail["action"].startswith("recorded")


def test_soft_bounce_is_recorded_and_the_sequence_continues(env, tmp_path):
    send = sent_to(env, "berlin@example.com")
    at = AFTER_FIRST + timedelta(minutes=30)
    raw = dsn("berlin@example.com", at, status="4.2.2", original=send.message_id,
              diagnostic="452 4.2.2 Mailbox full")
    report = sync(env, [FilesInbox([write_eml(tmp_path / "in", "soft.eml", raw)])], at)
    assert report.matched == 1
    [row] = rows(env, Inbound)
    assert (row.kind, row.bounce) == ("bounce", "soft")
    assert rows(env, Suppression) == []
    assert enrollment_of(env, "berlin@example.com").state == "active"
    assert pending_of(env, "berlin@example.com").step_id == "check-in"
    [event] = rows(env, Event, Event.kind == "bounce_soft")
    assert "continues" in event.detail["action"]


def test_complaint_and_unsubscribe_request_suppress(env, tmp_path):
    at = AFTER_FIRST + timedelta(hours=3)
    tokyo = sent_to(env, "tokyo@example.com")
    la = sent_to(env, "la@example.com")
    paths = [
        write_eml(tmp_path / "in", "arf.eml", complaint(tokyo, at)),
        write_eml(tmp_path / "in", "stop.eml", human_reply(la, at, "Please remove me from your mailing list.")),
    ]
    report = sync(env, [FilesInbox(paths)], at)
    assert report.kinds["unsubscribe"] == 2 and report.matched == 2
    supp = {s.email: s.reason for s in rows(env, Suppression)}
    assert supp == {"tokyo@example.com": "complained", "la@example.com": "unsubscribed"}
    assert enrollment_of(env, "tokyo@example.com").state == "exited"
    assert enrollment_of(env, "la@example.com").exit_reason == "unsubscribed"
    assert {e.kind for e in rows(env, Event, Event.kind.in_(["complaint", "unsubscribe_request"]))} == {
        "complaint", "unsubscribe_request"}


def test_matching_order_thread_beats_sender_address(env, tmp_path):
    """A colleague answering in the thread is about the candidate the thread is about; a
    message with no thread from a candidate's address is matched by the sender."""
    berlin = sent_to(env, "berlin@example.com")
    at = AFTER_FIRST + timedelta(hours=2)
    colleague = human_reply(berlin, at, sender="tokyo@example.com")  # thread says berlin
    loose = human_reply(sent_to(env, "la@example.com"), at, thread=False)  # from la, no thread
    paths = [write_eml(tmp_path / "in", "1.eml", colleague), write_eml(tmp_path / "in", "2.eml", loose)]
    sync(env, [FilesInbox(paths)], at)
    by_from = {r.from_addr: r for r in rows(env, Inbound)}
    assert by_from["tokyo@example.com"].send_id == berlin.id
    assert by_from["la@example.com"].send_id == sent_to(env, "la@example.com").id
    events = {e.candidate_id: e.detail["matched_by"] for e in rows(env, Event, Event.kind == "reply")}
    assert events == {berlin.candidate_id: "thread", sent_to(env, "la@example.com").candidate_id: "sender"}
    assert enrollment_of(env, "tokyo@example.com").state == "active"


def test_a_sender_match_needs_a_send_before_the_message(env, tmp_path):
    send = sent_to(env, "la@example.com")
    early = send.sent_at.replace(tzinfo=UTC) - timedelta(days=2)
    raw = human_reply(send, early, thread=False)
    report = sync(env, [FilesInbox([write_eml(tmp_path / "in", "early.eml", raw)])], AFTER_FIRST)
    assert (report.matched, report.unmatched) == (0, 1)


def test_our_own_mail_in_the_inbox_is_never_matched(env, tmp_path):
    send = sent_to(env, "berlin@example.com")
    at = AFTER_FIRST + timedelta(hours=2)
    # the recruiter's own follow-up in the thread (a Cc or a Sent folder)
    own = human_reply(send, at, sender="dana@talent.example")
    report = sync(env, [FilesInbox([write_eml(tmp_path / "in", "own.eml", own)])], at)
    assert (report.matched, report.unmatched) == (0, 1)
    assert enrollment_of(env, "berlin@example.com").state == "active"


# --- out of office ----------------------------------------------------------------------------

OOO_CASES = {
    "en": ("Out of Office: Thank you", "Thank you for your email. I am out of the office and will be "
           "back on 15 April 2027. For urgent matters contact my colleague.", "2027-04-15"),
    "de": ("Abwesenheitsnotiz: Thank you", "Vielen Dank für Ihre Nachricht. Ich bin bis zum 16. April "
           "2027 nicht im Büro und habe keinen Zugriff auf meine E-Mails.", "2027-04-17"),
    "fr": ("Réponse automatique : Thank you", "Bonjour, je suis absente du bureau. Je serai de retour "
           "le 19 avril 2027. Cordialement.", "2027-04-19"),
}


@pytest.mark.parametrize("lang", sorted(OOO_CASES))
def test_out_of_office_moves_the_next_step_past_the_return_date(quick, tmp_path, lang):
    subject, text, back = OOO_CASES[lang]
    address = {"en": "la@example.com", "de": "berlin@example.com", "fr": "paris@example.com"}[lang]
    send = sent_to(quick, address)
    before = pending_of(quick, address)
    assert before.step_id == "check-in" and before.due_at < datetime(2027, 3, 10)
    at = AFTER_FIRST + timedelta(hours=1)
    raw = out_of_office(send, at, subject, text)
    report = sync(quick, [FilesInbox([write_eml(tmp_path / "in", f"{lang}.eml", raw)])], at)
    assert report.kinds["auto_reply"] == 1 and report.matched == 1
    [row] = rows(quick, Inbound)
    assert row.return_date.date().isoformat() == back
    after = pending_of(quick, address)
    zone = ZoneInfo(enrollment_zone(address))
    local = after.due_at.replace(tzinfo=UTC).astimezone(zone)
    assert local.date() > datetime.fromisoformat(back).date()
    e = enrollment_of(quick, address)
    assert e.state == "active" and e.paused_until == after.due_at
    [event] = rows(quick, Event, Event.kind == "auto_reply")
    assert event.detail["postponed_sends"] == [before.id]
    # And the engine really sends it only then: tick through the days
    t = at
    while t < datetime(2027, 4, 25, tzinfo=UTC):
        quick.tick(t)
        t += timedelta(hours=6)
    [done] = [s for s in quick.sends() if s.id == before.id]
    assert done.state == "sent"
    assert done.sent_at.replace(tzinfo=UTC).astimezone(zone).date() > datetime.fromisoformat(back).date()


def enrollment_zone(address: str) -> str:
    return {"berlin@example.com": "Europe/Berlin", "tokyo@example.com": "Asia/Tokyo",
            "la@example.com": "America/Los_Angeles", "paris@example.com": "Europe/Paris"}[address]


def test_out_of_office_without_a_date_pauses_by_the_default(quick, tmp_path):
    send = sent_to(quick, "tokyo@example.com")
    before = pending_of(quick, "tokyo@example.com")
    at = AFTER_FIRST + timedelta(hours=1)
    raw = out_of_office(send, at, "Automatic reply: Thank you",
                        "I am currently out of the office with limited access to email.")
    sync(quick, [FilesInbox([write_eml(tmp_path / "in", "ooo.eml", raw)])], at)
    after = pending_of(quick, "tokyo@example.com")
    expected = (at + timedelta(days=7)).replace(tzinfo=None, microsecond=0)  # [imap] away_default 7d
    assert before.due_at < expected
    assert after.due_at == expected
    assert enrollment_of(quick, "tokyo@example.com").paused_until == expected


def test_the_default_pause_is_configurable(tmp_path, db_url, sink):
    env = _sent_env(tmp_path, db_url, sink, QUICK)
    try:
        with open(env.root / "nurture.toml", "a") as f:
            f.write('\n[imap]\naway_default = "12d"\n')
        send = sent_to(env, "tokyo@example.com")
        at = AFTER_FIRST + timedelta(hours=1)
        raw = out_of_office(send, at, "Out of office", "I am away with no access to email.")
        sync(env, [FilesInbox([write_eml(tmp_path / "in", "ooo.eml", raw)])], at)
        assert pending_of(env, "tokyo@example.com").due_at == (at + timedelta(days=12)).replace(tzinfo=None)
    finally:
        env.close()


def test_out_of_office_before_the_next_step_is_queued_still_holds_it(tmp_path, db_url, sink):
    """The note often arrives before the engine has placed the next step in the ledger: the
    pause is kept on the enrollment and applied to the step once it is queued."""
    env = DeliveryEnv.create(tmp_path / "ws", db_url, sink, QUICK)
    try:
        env.import_csv(PEOPLE, MON)
        t = MON
        berlin = None
        inbox = tmp_path / "in"
        while t < datetime(2027, 3, 20, tzinfo=UTC):
            if berlin is None:
                sent = [s for s in env.sends() if s.to_addr == "berlin@example.com" and s.state == "sent"]
                if sent:
                    berlin = sent[0]
                    raw = out_of_office(berlin, t, "Out of office", "Back on 15 March 2027.")
                    write_eml(inbox, "ooo.eml", raw)
            if inbox.exists():  # as `nurture tick` does: sync, then enrol and send
                sync(env, [MaildirLike(inbox)], t)
            env.tick(t)
            t += timedelta(hours=1)
        check_in = [s for s in env.sends() if s.candidate_id == berlin.candidate_id and s.step_id == "check-in"]
        assert check_in[0].state == "sent"
        assert check_in[0].sent_at >= datetime(2027, 3, 15, 23, 0)  # 16 March, Berlin
    finally:
        env.close()


def MaildirLike(directory: Path) -> FilesInbox:  # noqa: N802 - reads like a source
    return FilesInbox(sorted(directory.glob("*.eml")))


# --- other sources ----------------------------------------------------------------------------


def test_maildir_and_mbox_sources(env, tmp_path):
    at = AFTER_FIRST + timedelta(hours=2)
    berlin, tokyo = sent_to(env, "berlin@example.com"), sent_to(env, "tokyo@example.com")
    reply = human_reply(berlin, at)
    md = mailbox.Maildir(tmp_path / "Maildir", create=True)
    md.add(reply)
    key = md.add(newsletter(at))
    msg = md.get_message(key)
    msg.set_subdir("cur")
    msg.set_flags("S")
    md[key] = msg
    files_before = sorted(p.name for p in (tmp_path / "Maildir").rglob("*") if p.is_file())
    box = mailbox.mbox(tmp_path / "in.mbox", create=True)
    box.add(dsn("tokyo@example.com", at, original=tokyo.message_id))
    box.add(reply)  # the same reply again: already stored from the Maildir
    box.flush()
    box.close()
    report = sync(env, [MaildirInbox(tmp_path / "Maildir"), MboxInbox(tmp_path / "in.mbox")], at)
    assert (report.read, report.new, report.duplicates) == (4, 3, 1)
    assert [(s.read, s.new) for s in report.sources] == [(2, 2), (2, 1)]
    assert report.kinds == {"reply": 1, "other": 1, "bounce": 1}
    assert enrollment_of(env, "berlin@example.com").exit_reason == "replied"
    assert enrollment_of(env, "tokyo@example.com").exit_reason == "bounced"
    # read in place: nothing renamed or moved
    assert sorted(p.name for p in (tmp_path / "Maildir").rglob("*") if p.is_file()) == files_before
    again = sync(env, [MaildirInbox(tmp_path / "Maildir"), MboxInbox(tmp_path / "in.mbox")], at)
    assert (again.new, again.duplicates) == (0, 4)


def test_a_missing_source_is_reported_and_the_others_still_run(env, tmp_path):
    at = AFTER_FIRST + timedelta(hours=2)
    good = write_eml(tmp_path / "in", "r.eml", human_reply(sent_to(env, "berlin@example.com"), at))
    report = sync(env, [MaildirInbox(tmp_path / "nowhere"), FilesInbox([good])], at)
    assert report.new == 1
    assert len(report.errors) == 1 and "nowhere" in report.errors[0]


# --- the command line -------------------------------------------------------------------------


def test_cli_replies_sync_and_classify(env, tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(env.root)
    monkeypatch.setenv("NURTURE_DATABASE_URL", env.db_url)
    at = AFTER_FIRST + timedelta(hours=2)
    reply = write_eml(tmp_path / "in", "reply.eml", human_reply(sent_to(env, "berlin@example.com"), at))
    bounce = write_eml(tmp_path / "in", "dsn.eml", dsn("tokyo@example.com", at))
    result = run_cli("--now", at.isoformat(), "replies", "sync", str(reply), str(bounce))
    assert result.exit_code == 0, result.output + result.stderr
    assert "2 new (1 reply, 1 bounce)" in result.output
    assert "2 matched, 0 unmatched" in result.output
    again = run_cli("--now", at.isoformat(), "replies", "sync", str(reply))
    assert "0 new" in again.output and "1 already stored" in again.output

    result = run_cli("replies", "classify", str(reply), str(bounce), "--format", "json")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert [list(d)[:4] for d in data] == [["file", "kind", "bounce", "recipient"]] * 2
    assert [(d["kind"], d["bounce"], d["recipient"]) for d in data] == [
        ("reply", None, None), ("bounce", "hard", "tokyo@example.com")]
    table = run_cli("replies", "classify", str(bounce))
    assert "bounce" in table.output and "tokyo@example.com" in table.output


def test_cli_replies_sync_without_an_inbox_is_a_clear_error(workspace, run_cli):
    result = run_cli("replies", "sync")
    assert result.exit_code == 1
    assert "[imap] url" in result.stderr


def test_cli_replies_sync_with_a_maildir_and_mbox(env, tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(env.root)
    monkeypatch.setenv("NURTURE_DATABASE_URL", env.db_url)
    at = AFTER_FIRST + timedelta(hours=2)
    md = mailbox.Maildir(tmp_path / "md", create=True)
    md.add(newsletter(at))
    box = mailbox.mbox(tmp_path / "x.mbox", create=True)
    box.add(newsletter(at + timedelta(seconds=1)))
    box.close()
    result = run_cli("--now", at.isoformat(), "replies", "sync", "--maildir", str(tmp_path / "md"),
                     "--mbox", str(tmp_path / "x.mbox"))
    assert result.exit_code == 0, result.stderr
    assert "2 new (2 other)" in result.output and "0 matched, 2 unmatched" in result.output


# --- batches: effects in message order, classification in worker processes -------------------


@pytest.mark.parametrize("batch_size", [1, 500])
def test_effects_within_one_batch_apply_in_message_order(quick, tmp_path, batch_size):
    """A batch is written set-at-a-time, but each message sees what the earlier ones did: the
    same result whether the messages come one per batch or all in one."""
    at = AFTER_FIRST + timedelta(hours=1)
    berlin, tokyo, la, paris = (sent_to(quick, a) for a in (
        "berlin@example.com", "tokyo@example.com", "la@example.com", "paris@example.com"))
    la_pending = pending_of(quick, "la@example.com")
    box = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (box / sub).mkdir(parents=True)
    messages = [
        human_reply(berlin, at),  # berlin: a reply, then a hard bounce
        dsn("berlin@example.com", at + timedelta(minutes=1), original=berlin.message_id),
        dsn("tokyo@example.com", at, original=tokyo.message_id),  # tokyo: a bounce, then a reply
        human_reply(tokyo, at + timedelta(minutes=1)),
        out_of_office(la, at, *OOO_CASES["en"][:2]),  # la: away, then a reply
        human_reply(la, at + timedelta(minutes=2)),
        complaint(paris, at),  # paris: suppressed twice; the first reason ends the enrollment
        dsn("paris@example.com", at + timedelta(minutes=1), original=paris.message_id),
    ]
    for n, raw in enumerate(messages):
        (box / "new" / f"{n:03d}.eml").write_bytes(raw)
    report = sync(quick, [MaildirInbox(box, batch_size=batch_size)], at + timedelta(minutes=5))
    assert report.new == 8 and report.matched == 8
    b, t, lae, p = (enrollment_of(quick, a) for a in (
        "berlin@example.com", "tokyo@example.com", "la@example.com", "paris@example.com"))
    assert (b.state, b.exit_reason) == ("exited", "replied")
    assert (t.state, t.exit_reason) == ("exited", "bounced")
    assert (lae.state, lae.exit_reason) == ("exited", "replied")
    assert lae.paused_until is not None  # the note paused it before the reply ended it
    assert (p.state, p.exit_reason) == ("exited", "unsubscribed")  # the complaint's, not the bounce's
    assert {(s.email, s.reason) for s in rows(quick, Suppression)} == {
        ("berlin@example.com", "bounced"), ("tokyo@example.com", "bounced"), ("paris@example.com", "complained")}
    [moved] = [s for s in quick.sends() if s.id == la_pending.id]
    assert moved.state == "cancelled" and moved.reason == "replied" and moved.due_at > la_pending.due_at
    for address in ("berlin@example.com", "tokyo@example.com"):
        cid = sent_to(quick, address).candidate_id
        assert all(s.state != "scheduled" for s in quick.sends() if s.candidate_id == cid)
    events = Counter(e.kind for e in rows(quick, Event))
    assert events["suppressed"] == 4 and events["bounce_hard"] == 3 and events["reply"] == 3
    assert events["complaint"] == 1
    [tokyo_reply] = rows(quick, Event, Event.kind == "reply", Event.candidate_id == tokyo.candidate_id)
    assert tokyo_reply.detail["ended"] == []  # the bounce had ended it already
    # and a second sync acts on nothing
    again = sync(quick, [MaildirInbox(box, batch_size=batch_size)], at + timedelta(minutes=6))
    assert (again.new, again.duplicates) == (0, 8)
    assert Counter(e.kind for e in rows(quick, Event)) == events


def test_a_batch_that_cannot_be_stored_stops_the_sync_and_the_next_sync_finishes_it(quick, tmp_path, monkeypatch):
    """Batches are stored by a thread of their own while the next ones are read: a batch whose
    transaction fails stops the sync with that error, the batches before it stay stored, none
    after it is stored or acted on, and the next sync stores the rest, each message once."""
    from sqlalchemy.exc import OperationalError

    from nurture_mail.store import inbound as store

    at = AFTER_FIRST + timedelta(hours=1)
    addresses = ("berlin@example.com", "tokyo@example.com", "la@example.com", "paris@example.com")
    box = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (box / sub).mkdir(parents=True)
    for n, address in enumerate(addresses):  # batches of two: (berlin, tokyo), (la, paris)
        (box / "new" / f"{n:03d}.eml").write_bytes(human_reply(sent_to(quick, address), at))
    (box / "new" / "004.eml").write_bytes(newsletter(at))
    (box / "new" / "005.eml").write_bytes(newsletter(at))
    real, calls = store.insert_inbound_many, []

    def failing_second_batch(session, batch_rows):
        calls.append(len(batch_rows))
        if len(calls) == 2:
            raise OperationalError("INSERT INTO inbound", {}, Exception("the server went away"))
        return real(session, batch_rows)

    monkeypatch.setattr(store, "insert_inbound_many", failing_second_batch)
    with pytest.raises(OperationalError, match="the server went away"):
        sync(quick, [MaildirInbox(box, batch_size=2)], at + timedelta(minutes=5))
    assert calls == [2, 2]  # the third batch was never stored
    assert sorted(r.from_addr for r in rows(quick, Inbound)) == ["berlin@example.com", "tokyo@example.com"]
    states = {a: enrollment_of(quick, a).state for a in addresses}
    assert states == {"berlin@example.com": "exited", "tokyo@example.com": "exited",
                      "la@example.com": "active", "paris@example.com": "active"}

    monkeypatch.setattr(store, "insert_inbound_many", real)
    again = sync(quick, [MaildirInbox(box, batch_size=2)], at + timedelta(minutes=6))
    assert (again.new, again.duplicates, again.matched) == (4, 2, 2)
    assert {a: enrollment_of(quick, a).exit_reason for a in addresses} == dict.fromkeys(addresses, "replied")
    assert len(rows(quick, Inbound)) == 6
    assert len(rows(quick, Event, Event.kind == "reply")) == 4


def test_an_in_memory_database_stores_its_batches_in_the_syncing_thread(tmp_path):
    """An in-memory SQLite database is a different database in each thread: its batches are
    stored by the thread that reads them, not by the store thread."""
    from nurture_mail.config import load_settings
    from nurture_mail.database import open_database

    db = open_database("sqlite://")
    try:
        assert not db.shared_across_threads
        (tmp_path / "nurture.toml").write_text("")
        settings = load_settings(tmp_path / "nurture.toml", env={}, database_url="sqlite://")
        box = tmp_path / "Maildir"
        for sub in ("new", "cur", "tmp"):
            (box / sub).mkdir(parents=True)
        for n in range(3):
            (box / "new" / f"{n:03d}.eml").write_bytes(newsletter(MON + timedelta(minutes=n)))
        report = sync_replies(settings, db, now=MON + timedelta(hours=1), exit_when=EXIT_ALL,
                              sources=[MaildirInbox(box, batch_size=1)])
        assert (report.new, report.unmatched, report.errors) == (3, 3, [])
        with db.sessions() as session:
            assert len(session.execute(select(Inbound)).all()) == 3
    finally:
        db.dispose()


def test_worker_processes_classify_exactly_as_this_process():
    from nurture_mail.classify_pool import PARALLEL_MIN, Classifier, classify_many

    from .conftest import CORPUS

    files = sorted(CORPUS.rglob("*.eml"))[:60] if CORPUS.is_dir() else []
    raws = [p.read_bytes() for p in files] or [newsletter(MON), dsn("x@example.com", MON)]
    jobs = [(raws[n % len(raws)], MON + timedelta(minutes=n)) for n in range(max(PARALLEL_MIN, 150))]
    expected = classify_many(jobs)
    with Classifier(2, steal=False) as pooled:
        verdicts = pooled.submit(jobs)()
        assert pooled.pool is not None  # a backlog this size did go to the workers
        assert (pooled.here, pooled.in_workers) == (0, len(jobs))  # ... and all of it, here
    assert verdicts == expected
    # with work stealing, whatever share this process takes back, the same verdicts in order
    with Classifier(1) as shared:
        pending = [shared.submit(jobs) for _ in range(3)]
        assert [p() for p in pending] == [expected] * 3
        assert shared.here + shared.in_workers == 3 * len(jobs)
    with Classifier(2) as few:
        few.submit(jobs[:3])()
        assert few.pool is None  # a few messages never start a process


def test_a_large_maildir_backlog_is_the_same_with_and_without_workers(tmp_path, db_url, sink):
    """Hundreds of messages (the pool starts) against the same sends: the same rows and events
    whether classified here or in worker processes."""
    results = []
    for workers in (0, 2):
        env = _sent_env(tmp_path / f"w{workers}", db_url if workers == 0 else
                        f"sqlite:///{tmp_path / 'w2.db'}", sink)
        try:
            box = tmp_path / f"Maildir{workers}"
            for sub in ("new", "cur", "tmp"):
                (box / sub).mkdir(parents=True)
            sends = {a: sent_to(env, a) for a in ("berlin@example.com", "tokyo@example.com",
                                                   "la@example.com", "paris@example.com")}
            at = AFTER_FIRST + timedelta(hours=1)
            for n in range(240):
                address = sorted(sends)[n % 4]
                raw = [human_reply(sends[address], at, text=f"note {n}"), newsletter(at),
                       out_of_office(sends[address], at, *OOO_CASES["de"][:2])][n % 3]
                raw = raw.replace(b"Message-ID: <", f"Message-ID: <n{n}.".encode(), 1)
                (box / "new" / f"{n:04d}.eml").write_bytes(raw)
            db = env.db()
            try:
                report = sync_replies(env.settings(), db, now=at + timedelta(minutes=5),
                                      exit_when=EXIT_ALL, sources=[MaildirInbox(box)], workers=workers)
            finally:
                db.dispose()
            inbound = sorted((r.kind, r.from_addr, r.reply_text, r.subject) for r in rows(env, Inbound))
            enrollments = sorted((e.state, e.exit_reason) for e in rows(env, Enrollment))
            results.append((report.summary(), inbound, enrollments))
        finally:
            env.close()
    assert results[0] == results[1]
    assert results[0][0].startswith("240 read, 240 new")


# --- the batch writes ---------------------------------------------------------------------------


def test_batch_writes_store_what_core_inserts(db_url):
    """store.inbound writes a batch's rows through the driver (multi-row VALUES on SQLite, one
    array per column sent in binary on PostgreSQL). Read back, they equal the rows Core's own
    insert stores for the same values: NULLs, quotes, backslashes, braces and commas (array
    syntax), non-ASCII, 20,000-character text, microseconds."""
    from sqlalchemy import insert

    from nurture_mail.database import open_database
    from nurture_mail.store import inbound as store

    stamp = datetime(2027, 3, 1, 9, 30, 15, 123456)
    odd = 'quote " apostrophe \' backslash \\ braces {a,b} NULL "" é ß 中文 \u2028'
    base = {c: None for c in store.INBOUND_COLUMNS} | {"received_at": stamp, "kind": "other"}
    variants = [
        base,
        base | {"message_id": "m@x", "source": "imap://u@h/INBOX#7", "from_addr": "a@b.example",
                "subject": odd, "kind": "bounce", "bounce": "hard", "recipient": "c@d.example",
                "status_code": "5.1.1", "reason": odd, "reply_text": "x" * 20_000, "campaign_id": "keep-warm",
                "return_date": datetime(2027, 4, 1)},
        base | {"subject": "", "reply_text": "", "reason": "NULL"},
    ]
    events = [store.event_row("reply", stamp, candidate_id=None, campaign_id=c,
                              detail={"text": odd, "ids": [1, None, 2], "nested": {"k": [odd]}})
              for c in (None, "keep-warm")]
    db = open_database(db_url)
    try:
        with db.sessions.begin() as s:
            ours = store.insert_inbound_many(s, [v | {"dedupe_key": f"ours{n}"} for n, v in enumerate(variants)])
            s.execute(insert(Inbound.__table__), [v | {"dedupe_key": f"core{n}"} for n, v in enumerate(variants)])
            store.add_events(s, events)
            s.execute(insert(Event.__table__), events)
            # already stored keys are left alone and not returned; a new one is
            again = store.insert_inbound_many(s, [base | {"dedupe_key": "ours0"}, base | {"dedupe_key": "ours9"}])
        assert sorted(ours) == ["ours0", "ours1", "ours2"] and list(again) == ["ours9"]
        with db.sessions() as s:
            stored = {r.dedupe_key: r for r in s.execute(select(Inbound)).scalars()}
            for n in range(len(variants)):
                a, b = stored[f"ours{n}"], stored[f"core{n}"]
                assert [getattr(a, c) for c in store.INBOUND_COLUMNS[1:]] == [
                    getattr(b, c) for c in store.INBOUND_COLUMNS[1:]]
            assert stored["ours1"].reply_text == "x" * 20_000 and stored["ours1"].subject == odd
            written = [(e.at, e.kind, e.candidate_id, e.campaign_id, e.detail)
                       for e in s.execute(select(Event).order_by(Event.id)).scalars()]
        assert written[:2] == written[2:] and written[0][4]["nested"] == {"k": [odd]}
        assert written[0][0] == stamp
    finally:
        db.dispose()
