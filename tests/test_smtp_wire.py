"""The pipelined SMTP wire: dot-stuffing, reply parsing, envelopes, and real conversations with
a loopback aiosmtpd server that offers PIPELINING (and one that does not)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nurture_mail.config import Secret, SmtpSettings
from nurture_mail.smtp_wire import Wire, envelope_address, stuff
from nurture_mail.testing import SmtpSink
from nurture_mail.transport import Outcome, SmtpTransport


def smtp_settings(url: str, connections: int = 2) -> SmtpSettings:
    return SmtpSettings(url=Secret(url), starttls="off", max_connections=connections, rate_per_minute=0,
                        timeout_seconds=10, max_attempts=3, helo="sender.test")


# --- dot-stuffing ---------------------------------------------------------------------------


def unstuff(payload: bytes) -> bytes:
    """What a receiving server does (RFC 5321 4.5.2): drop the final dot, undouble dots."""
    assert payload.endswith(b"\r\n.\r\n")
    lines = payload[:-3].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


def test_stuff_doubles_leading_dots_and_ends_with_the_final_dot():
    assert stuff(b".hidden\r\nplain\r\n.\r\n..two\r\n") == b"..hidden\r\nplain\r\n..\r\n...two\r\n.\r\n"


def test_stuff_turns_bare_line_feeds_and_carriage_returns_into_crlf():
    assert stuff(b"a\nb\rc\r\nd") == b"a\r\nb\r\nc\r\nd\r\n.\r\n"


@given(st.lists(st.sampled_from([b"", b".", b"..", b".x", b"x.", b"text", b" .", b"\xc3\xa9"]), max_size=12))
def test_stuffed_payload_unstuffs_to_the_message(lines):
    message = b"\r\n".join(lines) + b"\r\n"
    assert unstuff(stuff(message)) == message
    body = stuff(message)[:-3]
    assert b"\r\n.\r\n" not in b"\r\n" + body  # no line of the body ends the data early


# --- envelope addresses ---------------------------------------------------------------------


def test_envelope_address_quotes_ascii():
    assert envelope_address("ann@example.com", smtputf8=False) == (b"<ann@example.com>", False)


@pytest.mark.parametrize("bad", ["a@b.c>\r\nRCPT TO:<x@y.z", "a\n@b.c", "<a@b.c>", "", "a@b\0.c"])
def test_envelope_address_refuses_what_would_break_the_command(bad):
    with pytest.raises(ValueError):
        envelope_address(bad, smtputf8=True)


def test_non_ascii_address_needs_smtputf8():
    assert envelope_address("zoë@example.com", smtputf8=True) == ("<zoë@example.com>".encode(), True)
    with pytest.raises(ValueError, match="SMTPUTF8"):
        envelope_address("zoë@example.com", smtputf8=False)


# --- reply parsing ------------------------------------------------------------------------


class _Transport(asyncio.Transport):
    def __init__(self):
        super().__init__()
        self.closed = False
        self.written = []

    def write(self, data):
        self.written.append(data)

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True


REPLIES = b"250-first line\r\n250-second\r\n250 last\r\n354 go ahead\r\n550 5.1.1 no such user\r\n"


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=1, max_value=len(REPLIES) - 1), unique=True, max_size=10))
def test_replies_are_read_in_order_however_the_bytes_are_split(cuts):
    wire = Wire(_Transport(), smtputf8=False, timeout=5)
    edges = [0, *sorted(cuts), len(REPLIES)]
    for a, b in zip(edges, edges[1:], strict=False):
        wire.data_received(REPLIES[a:b])
    assert list(wire.replies) == [(250, "first line\nsecond\nlast"), (354, "go ahead"), (550, "5.1.1 no such user")]
    assert wire.usable


def test_garbage_from_the_server_breaks_the_connection_not_the_sender():
    transport = _Transport()
    wire = Wire(transport, smtputf8=False, timeout=5)
    wire.data_received(b"HTTP/1.1 400 Bad Request\r\n")
    assert not wire.usable and transport.closed

    async def read():
        return await wire.reply()

    with pytest.raises(Exception, match="not an SMTP reply"):
        asyncio.run(read())


def test_an_endless_reply_line_is_refused():
    wire = Wire(_Transport(), smtputf8=False, timeout=5)
    wire.data_received(b"250-" + b"x" * 10_000)
    assert not wire.usable


# --- real conversations ---------------------------------------------------------------------


@pytest.fixture(params=[True, False], ids=["pipelining", "stepwise"])
def sink(request):
    server = SmtpSink(pipelining=request.param).start()
    yield server
    server.stop()


def send_all(url: str, messages: list[tuple[str, str, bytes]]):
    async def run():
        transport = SmtpTransport(smtp_settings(url))
        try:
            return await asyncio.gather(*(transport.send(*m) for m in messages))
        finally:
            await transport.close()

    return asyncio.run(run())


def test_messages_arrive_byte_for_byte_with_dot_lines(sink):
    body = b"Subject: dots\r\n\r\n.leading dot\r\n.\r\n..\r\nend\r\n"
    messages = [("dana@talent.example", f"p{i}@example.com", body) for i in range(20)]
    results = send_all(sink.url, messages)
    assert [r.outcome for r in results] == [Outcome.SENT] * 20
    assert sorted(r.rcpt for r in sink.received) == sorted(m[1] for m in messages)
    assert {r.data for r in sink.received} == {body}


def test_refusals_on_one_connection_leave_it_usable_for_the_next_message():
    refused = {"bad@example.com"}
    server = SmtpSink(rule=lambda stage, rcpt, attempt: "550 5.1.1 no such user" if stage == "rcpt" and rcpt in refused else None).start()
    try:
        async def run():
            transport = SmtpTransport(smtp_settings(server.url, connections=1))
            try:
                out = []
                for rcpt in ["a@example.com", "bad@example.com", "b@example.com", "bad@example.com", "c@example.com"]:
                    out.append(await transport.send("dana@talent.example", rcpt, b"Subject: x\r\n\r\nhi\r\n"))
                return out
            finally:
                await transport.close()

        results = asyncio.run(run())
    finally:
        server.stop()
    assert [r.outcome for r in results] == [Outcome.SENT, Outcome.FAILED, Outcome.SENT, Outcome.FAILED, Outcome.SENT]
    assert results[1].recipient_rejected and "RCPT TO" in results[1].response
    assert [r.rcpt for r in server.received] == ["a@example.com", "b@example.com", "c@example.com"]


def test_address_the_server_cannot_carry_fails_cleanly_and_sends_nothing(sink):
    results = send_all(sink.url, [("dana@talent.example", "bad\r\nRCPT TO:<evil@example.com>", b"x\r\n")])
    assert results[0].outcome is Outcome.FAILED
    assert "cannot send" in results[0].response
    assert sink.received == []
