"""Reply sync against a real Dovecot IMAP server on loopback (Debian: dovecot-imapd).

Messages are APPENDed over IMAP; the sync must match and act on them, leave every flag and
every message on the server as it was, add nothing the second time, and survive a changed
UIDVALIDITY without counting anything twice.

Dovecot keeps the APPEND date as INTERNALDATE only when it is not in the future, and the sync
takes INTERNALDATE as the time a message arrived; so these tests live in the past (March 2025)
rather than in the 2027 of the other tests.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from nurture_mail.errors import ConfigError
from nurture_mail.inbox import ImapInbox, ImapTarget, InboxError
from nurture_mail.models import Enrollment, Event, Inbound, MailboxState, Suppression

from . import imap_server
from .conftest import need_service
from .test_replies_sync import (  # noqa: F401 - fixtures
    QUICK,
    _sent_env,
    dsn,
    enrollment_of,
    human_reply,
    newsletter,
    out_of_office,
    pending_of,
    rows,
    sent_to,
    sink,
    sync,
)

pytestmark = pytest.mark.imap

START = datetime(2025, 3, 3, tzinfo=UTC)  # a Monday, in the past
AFTER_FIRST = START + timedelta(days=3)


@pytest.fixture(scope="module")
def dovecot():
    if not imap_server.available():
        need_service("Dovecot: apt-get install dovecot-imapd")
    try:
        server = imap_server.DovecotServer.start()
    except (RuntimeError, OSError, KeyError) as exc:
        need_service(f"Dovecot did not start: {exc}")
    yield server
    server.stop()


@pytest.fixture
def folder(dovecot, request):
    """A fresh folder per test, so tests share one server without seeing each other's mail."""
    name = "T" + str(abs(hash(request.node.nodeid)))[:10]
    c = dovecot.client()
    if c.folder_exists(name):
        c.delete_folder(name)
    c.create_folder(name)
    c.logout()
    return name


@pytest.fixture
def quick(tmp_path, db_url, sink):  # noqa: F811
    e = _sent_env(tmp_path, db_url, sink, QUICK, start=START)
    yield e
    e.close()


@pytest.fixture
def proxy(dovecot):
    """A proxy in front of Dovecot that drops a connection mid-FETCH when told to."""
    p = imap_server.FetchCutProxy(dovecot.port)
    yield p
    p.stop()


def append(dovecot, folder: str, messages: list[tuple[bytes, datetime]]) -> None:
    c = dovecot.client()
    for raw, when in messages:
        c.append(folder, raw, flags=(), msg_time=when)
    c.logout()


def server_state(dovecot, folder: str) -> dict:
    """UID -> flags (without the session-only \\Recent), looked at read-only."""
    c = dovecot.client()
    c.select_folder(folder, readonly=True)
    uids = c.search(["ALL"])
    data = c.fetch(uids, ["FLAGS"]) if uids else {}
    c.logout()
    return {uid: sorted(f for f in item[b"FLAGS"] if f != b"\\Recent") for uid, item in data.items()}


def inbox(dovecot, folder: str, **kw) -> ImapInbox:
    url = dovecot.url.rsplit("/", 1)[0] + "/" + folder
    return ImapInbox(url, starttls="off", **kw)


def test_synced_matched_acted_on_and_the_server_untouched(dovecot, folder, quick):
    at = AFTER_FIRST + timedelta(hours=1)
    berlin, tokyo, la = (sent_to(quick, a) for a in ("berlin@example.com", "tokyo@example.com", "la@example.com"))
    check_in = pending_of(quick, "la@example.com")
    append(dovecot, folder, [
        (human_reply(berlin, at), at),
        (out_of_office(la, at, "Automatische Antwort: Thank you",
                       "Ich bin bis einschließlich 14. April 2025 nicht im Büro."), at),
        (dsn("tokyo@example.com", at, original=tokyo.message_id), at),
        (newsletter(at), at),
    ])
    c = dovecot.client()
    c.select_folder(folder)  # as a mail client would: one message read, one flagged
    c.add_flags([2], [b"\\Seen"])
    c.add_flags([4], [b"\\Flagged"])
    c.logout()
    before = server_state(dovecot, folder)
    assert len(before) == 4

    report = sync(quick, [inbox(dovecot, folder)], at + timedelta(minutes=10))
    assert report.errors == []
    assert (report.read, report.new, report.matched, report.unmatched) == (4, 4, 3, 1)
    assert dict(report.kinds) == {"reply": 1, "auto_reply": 1, "bounce": 1, "other": 1}

    # acted on
    assert enrollment_of(quick, "berlin@example.com").exit_reason == "replied"
    moved = pending_of(quick, "la@example.com")
    assert moved.id == check_in.id and moved.due_at >= datetime(2025, 4, 16, 7, 0)  # 16 Apr, LA
    assert enrollment_of(quick, "la@example.com").state == "active"
    assert [(s.email, s.reason) for s in rows(quick, Suppression)] == [("tokyo@example.com", "bounced")]
    [news] = rows(quick, Inbound, Inbound.kind == "other")
    assert news.send_id is None and news.candidate_id is None
    assert enrollment_of(quick, "paris@example.com").state == "active"
    # received time is the server's INTERNALDATE
    assert {r.received_at for r in rows(quick, Inbound)} == {at.replace(tzinfo=None)}

    # read-only: the same messages with the same flags
    assert server_state(dovecot, folder) == before

    # incremental: a second sync reads nothing new
    again = sync(quick, [inbox(dovecot, folder)], at + timedelta(minutes=20))
    assert (again.read, again.new) == (0, 0)
    [state] = rows(quick, MailboxState)
    assert state.last_uid == 4 and state.mailbox.endswith("/" + folder)

    # a new message is picked up alone
    append(dovecot, folder, [(newsletter(at), at)])
    third = sync(quick, [inbox(dovecot, folder)], at + timedelta(minutes=30))
    assert (third.read, third.new) == (1, 1)
    assert server_state(dovecot, folder).keys() == {1, 2, 3, 4, 5}


def test_uidvalidity_change_resyncs_without_counting_twice(dovecot, folder, quick):
    at = AFTER_FIRST + timedelta(hours=1)
    berlin = sent_to(quick, "berlin@example.com")
    messages = [(human_reply(berlin, at), at), (newsletter(at), at),
                (b"From: x@else.example\r\nSubject: no id\r\n\r\nbody\r\n", at)]
    append(dovecot, folder, messages)
    first = sync(quick, [inbox(dovecot, folder)], at)
    assert first.new == 3
    [state] = rows(quick, MailboxState)
    old_validity = state.uidvalidity

    # the folder is recreated (a server migration, a restore): new UIDVALIDITY, same mail + one
    c = dovecot.client()
    c.delete_folder(folder)
    c.create_folder(folder)
    c.logout()
    append(dovecot, folder, messages + [(newsletter(at), at)])
    second = sync(quick, [inbox(dovecot, folder)], at + timedelta(hours=1))
    [state] = rows(quick, MailboxState)
    assert state.uidvalidity != old_validity and state.last_uid == 4
    assert (second.read, second.new, second.duplicates) == (4, 1, 3)
    assert len(rows(quick, Inbound)) == 4
    assert len(rows(quick, Enrollment, Enrollment.exit_reason == "replied")) == 1


def test_several_folders_and_batches(dovecot, folder, quick):
    c = dovecot.client()
    other = folder + "x"
    if c.folder_exists(other):
        c.delete_folder(other)
    c.create_folder(other)
    c.logout()
    at = AFTER_FIRST
    append(dovecot, folder, [(newsletter(at), at) for _ in range(7)])
    append(dovecot, other, [(newsletter(at), at) for _ in range(3)])
    source = inbox(dovecot, folder, folders=[other], batch_size=3)
    report = sync(quick, [source], at)
    assert (report.read, report.new) == (10, 10)
    states = {s.mailbox.rsplit("/", 1)[1]: s.last_uid for s in rows(quick, MailboxState)}
    assert states == {folder: 7, other: 3}


def test_login_failure_and_missing_folder_are_reported(dovecot, quick):
    bad = ImapInbox(dovecot.url.replace("p%40ss", "wrong"), starttls="off")
    report = sync(quick, [bad], AFTER_FIRST)
    assert report.new == 0 and "login failed" in report.errors[0]
    missing = inbox(dovecot, "NoSuchFolder")
    report = sync(quick, [missing], AFTER_FIRST)
    assert report.errors and "NoSuchFolder" in report.errors[0]


def test_starttls_is_required_unless_turned_off_for_localhost(dovecot, quick):
    report = sync(quick, [ImapInbox(dovecot.url)], AFTER_FIRST)  # Dovecot here has ssl = no
    assert "STARTTLS" in report.errors[0]
    with pytest.raises(ConfigError, match="localhost"):
        ImapInbox("imap://u:p@imap.example.com/INBOX", starttls="off")
    ImapInbox("imaps://u:p@imap.example.com/INBOX", starttls="off")  # implicit TLS is fine


def test_url_parsing():
    t = ImapTarget.parse("imaps://dana%40talent.example:p%40ss%3Aw%2Frd@imap.example.com/Replies%20In")
    assert (t.username, t.password, t.host, t.port, t.folder) == (
        "dana@talent.example", "p@ss:w/rd", "imap.example.com", 993, "Replies In")
    assert "p@ss" not in repr(t) and "p@ss" not in t.key("INBOX")
    assert ImapTarget.parse("imap://u:p@localhost").port == 143
    assert ImapTarget.parse("imap://u:p@localhost").folder is None
    with pytest.raises(ConfigError):
        ImapTarget.parse("pop3://u:p@host/")
    with pytest.raises(ConfigError):
        ImapTarget.parse("imaps://host/INBOX")
    inbox_ = ImapInbox("imaps://u:p@h/INBOX", folders=("Archive", "INBOX"))
    assert inbox_.folders == ["INBOX", "Archive"]


def test_unreachable_server_is_an_inbox_error():
    from socket import socket

    with socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = ImapInbox(f"imap://u:p@127.0.0.1:{port}/INBOX", starttls="off", timeout=5)
    with pytest.raises(InboxError, match="cannot connect"):
        list(source.batches(lambda key: None))


def test_cli_sync_reads_the_configured_imap(dovecot, folder, quick, run_cli, monkeypatch):
    at = AFTER_FIRST + timedelta(hours=1)
    append(dovecot, folder, [(human_reply(sent_to(quick, "berlin@example.com"), at), at)])
    monkeypatch.chdir(quick.root)
    monkeypatch.setenv("NURTURE_DATABASE_URL", quick.db_url)
    monkeypatch.setenv("NURTURE_IMAP_URL", dovecot.url.rsplit("/", 1)[0] + "/" + folder)
    monkeypatch.setenv("NURTURE_IMAP_STARTTLS", "off")
    result = run_cli("--now", (at + timedelta(minutes=5)).isoformat(), "replies", "sync")
    assert result.exit_code == 0, result.stderr
    assert "1 new (1 reply)" in result.output and "1 matched" in result.output
    assert "p%40ss" not in result.output and "p@ss" not in result.output
    assert enrollment_of(quick, "berlin@example.com").exit_reason == "replied"


def test_batches_are_bounded_by_size_and_huge_messages_by_a_prefix(dovecot, folder, quick):
    at = AFTER_FIRST
    pad = "x" * 76 + "\r\n"
    big = newsletter(at) + (pad * 100).encode()  # ~8 kB
    append(dovecot, folder, [(newsletter(at), at) for _ in range(4)] + [(big, at)])
    before = server_state(dovecot, folder)
    source = inbox(dovecot, folder, max_batch_bytes=1500, max_message_bytes=2000)
    batches = list(source.batches(lambda key: None))
    source.close()
    assert len(batches) >= 3  # 4 small ones of ~500 bytes and the big one do not fit in two
    for b in batches:
        assert len(b.messages) == 1 or sum(len(m.raw) for m in b.messages) <= 1500
    assert [int(m.uid) for b in batches for m in b.messages] == [1, 2, 3, 4, 5]
    assert [b.position.last_uid for b in batches] == [int(b.messages[-1].uid) for b in batches]
    assert len(batches[-1].messages[0].raw) == 2000 and big.startswith(batches[-1].messages[0].raw)
    assert server_state(dovecot, folder) == before
    report = sync(quick, [inbox(dovecot, folder, max_batch_bytes=1500, max_message_bytes=2000)], at)
    assert (report.read, report.new) == (5, 5)


def test_tick_reads_the_inbox_before_it_sends(dovecot, folder, quick, monkeypatch, run_cli):
    """`nurture tick` = sync replies, then enrol and send: a reply that arrived before the next
    step falls due stops that step in the same tick."""
    send = sent_to(quick, "berlin@example.com")
    replied_at = send.sent_at.replace(tzinfo=UTC) + timedelta(hours=2)
    append(dovecot, folder, [(human_reply(send, replied_at), replied_at)])
    monkeypatch.chdir(quick.root)
    monkeypatch.setenv("NURTURE_IMAP_URL", dovecot.url.rsplit("/", 1)[0] + "/" + folder)
    monkeypatch.setenv("NURTURE_IMAP_STARTTLS", "off")
    due = pending_of(quick, "berlin@example.com").due_at.replace(tzinfo=UTC)
    quick.close()
    result = run_cli("--database", quick.db_url, "--now", (due + timedelta(minutes=5)).isoformat(), "tick")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("inbox: ")
    enrollment = enrollment_of(quick, "berlin@example.com")
    assert (enrollment.state, enrollment.exit_reason) == ("exited", "replied")
    assert not [r for r in quick.sink.received if r.rcpt == "berlin@example.com" and b"check-in" in r.data]


# --- a connection dropped in the middle of a FETCH -----------------------------------------------

EFFECT_EVENTS = ("reply", "auto_reply", "bounce_hard", "suppressed")


def _seven_messages(quick, at: datetime) -> list[tuple[bytes, datetime]]:
    """UIDs 1-7: a reply (Berlin), a newsletter, an out-of-office (LA), a hard bounce (Tokyo),
    a reply (Paris), two newsletters. Read two per FETCH: [1 2] [3 4] [5 6] [7]."""
    berlin, la, tokyo, paris = (sent_to(quick, f"{c}@example.com") for c in ("berlin", "la", "tokyo", "paris"))
    return [
        (human_reply(berlin, at), at),
        (newsletter(at), at),
        (out_of_office(la, at, "Out of office", "I am away until 14 April 2025."), at),
        (dsn("tokyo@example.com", at, original=tokyo.message_id), at),
        (human_reply(paris, at), at),
        (newsletter(at), at),
        (newsletter(at), at),
    ]


def _stored_uids(quick) -> list[int]:
    return sorted(int(r.source.rsplit("#", 1)[1]) for r in rows(quick, Inbound))


def _effect_events(quick) -> dict[str, int]:
    return dict(Counter(e.kind for e in rows(quick, Event, Event.kind.in_(EFFECT_EVENTS))))


@pytest.mark.parametrize(
    ("messages", "extra", "whole"),
    [
        (0, 20, 0),  # inside the first line of the answer: nothing arrived
        (3, 200, 2),  # inside the body (literal) of UID 4: UID 3 arrived whole, its batch did not
        (4, 0, 2),  # UIDs 3 and 4 arrived whole, the FETCH's tagged OK did not
        (5, 30, 4),  # inside the answer for UID 6, in the third FETCH
    ],
    ids=["first-line", "mid-body", "before-tagged-ok", "third-fetch"],
)
def test_connection_dropped_mid_fetch_keeps_whole_batches_and_the_next_sync_resumes(
    dovecot, folder, quick, proxy, messages, extra, whole
):
    """The proxy cuts the connection after `messages` complete messages of the FETCH answers and
    `extra` more bytes. The sync reports a clear error; the batches read whole before the cut
    are stored and acted on; the batch being fetched is not stored at all, not even the
    messages of it that arrived, and the position stays at the last whole batch; the next sync
    reads from there and stores the rest, nothing twice; the mailbox is untouched throughout."""
    at = AFTER_FIRST + timedelta(hours=1)
    append(dovecot, folder, _seven_messages(quick, at))
    before = server_state(dovecot, folder)
    la_check_in = pending_of(quick, "la@example.com")

    proxy.cut_after(messages, extra)
    first = sync(quick, [ImapInbox(proxy.url(folder), starttls="off", batch_size=2)], at + timedelta(minutes=10))
    assert [c.messages for c in proxy.cuts] == [messages]  # the fault happened where meant

    # a clear error, naming what was lost and where the next sync starts; no protocol bytes
    lost = f"UIDs {whole + 1}-{whole + 2}"
    assert first.errors == [
        f"{proxy_label(proxy)}/{folder}: connection lost while fetching {lost} "
        f"(the server closed the connection); the next sync reads again from UID {whole + 1}"
    ]
    assert first.sources[0].error == first.errors[0]
    # the whole batches before the cut are stored and acted on; nothing of the cut batch
    assert (first.read, first.new, first.duplicates) == (whole, whole, 0)
    assert _stored_uids(quick) == list(range(1, whole + 1))
    assert [s.last_uid for s in rows(quick, MailboxState)] == ([whole] if whole else [])
    expected = {"reply": 1} if whole else {}
    if whole >= 4:
        expected = {"reply": 1, "auto_reply": 1, "bounce_hard": 1, "suppressed": 1}
    assert _effect_events(quick) == expected
    assert (enrollment_of(quick, "berlin@example.com").exit_reason == "replied") == (whole > 0)
    assert server_state(dovecot, folder) == before

    # the next sync resumes after the last whole batch: the rest, once each
    second = sync(quick, [ImapInbox(proxy.url(folder), starttls="off", batch_size=2)], at + timedelta(minutes=20))
    assert second.errors == [] and len(proxy.cuts) == 1
    assert (second.read, second.new, second.duplicates) == (7 - whole, 7 - whole, 0)
    assert _stored_uids(quick) == [1, 2, 3, 4, 5, 6, 7]
    assert [s.last_uid for s in rows(quick, MailboxState)] == [7]
    # every effect applied exactly once over the two syncs
    assert _effect_events(quick) == {"reply": 2, "auto_reply": 1, "bounce_hard": 1, "suppressed": 1}
    assert [e.exit_reason for e in (enrollment_of(quick, f"{c}@example.com") for c in ("berlin", "paris"))] == [
        "replied", "replied"]
    assert [(s.email, s.reason) for s in rows(quick, Suppression)] == [("tokyo@example.com", "bounced")]
    moved = pending_of(quick, "la@example.com")
    assert moved.id == la_check_in.id and moved.due_at > la_check_in.due_at
    assert server_state(dovecot, folder) == before  # no flag set, nothing moved or deleted

    third = sync(quick, [ImapInbox(proxy.url(folder), starttls="off", batch_size=2)], at + timedelta(minutes=30))
    assert (third.read, third.new, third.errors) == (0, 0, [])
    assert_read_only(proxy.commands)


def assert_read_only(commands: list[str]) -> None:
    """The folder was opened with EXAMINE and bodies fetched with BODY.PEEK; nothing that
    changes a mailbox was ever sent."""
    verbs = {c.split(" (")[0].split(" BODY")[0] for c in commands}
    assert "EXAMINE" in verbs and "UID FETCH" in {c[:9] for c in commands}
    assert not verbs & {"SELECT", "STORE", "UID STORE", "EXPUNGE", "UID EXPUNGE", "COPY", "UID COPY",
                        "MOVE", "UID MOVE", "DELETE", "APPEND", "CLOSE"}
    bodies = [c for c in commands if "BODY" in c]
    assert bodies and all("BODY.PEEK[" in c for c in bodies)


def proxy_label(proxy) -> str:
    return ImapInbox(proxy.url("INBOX"), starttls="off").label


def test_cli_reports_a_dropped_connection_in_one_line_and_exits_1(dovecot, folder, quick, proxy, run_cli,
                                                                  monkeypatch):
    """`nurture replies sync` over a connection cut in the middle of the second FETCH: exit
    code 1, one `error:` line on stderr, no traceback; what came before is stored and the next
    run stores the rest."""
    at = AFTER_FIRST + timedelta(hours=1)
    append(dovecot, folder, _seven_messages(quick, at))
    before = server_state(dovecot, folder)
    monkeypatch.chdir(quick.root)
    monkeypatch.setenv("NURTURE_DATABASE_URL", quick.db_url)
    monkeypatch.setenv("NURTURE_IMAP_URL", proxy.url(folder))
    monkeypatch.setenv("NURTURE_IMAP_STARTTLS", "off")
    now = (at + timedelta(minutes=5)).isoformat()

    proxy.cut_after(3, 200)  # in the middle of UID 4's body; the default batch holds all 7
    result = run_cli("--now", now, "replies", "sync")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "connection lost while fetching UIDs 1-7" in result.stderr
    assert "the next sync reads again from UID 1" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "p@ss" not in result.stderr and "p%40ss" not in result.stderr
    assert "0 read, 0 new" in result.stdout and rows(quick, Inbound) == []

    again = run_cli("--now", now, "replies", "sync")
    assert again.exit_code == 0, again.stderr
    assert "7 read, 7 new" in again.output
    assert len(rows(quick, Inbound)) == 7 and len(proxy.cuts) == 1
    assert server_state(dovecot, folder) == before
    assert_read_only(proxy.commands)
