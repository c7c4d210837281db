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


# --- several messages on one connection -----------------------------------------------------


def test_each_message_data_goes_out_with_the_next_envelope_in_one_write():
    """RFC 2920 3.1: the content may open a group, so a series costs one round trip a message."""
    transport = _Transport()
    wire = Wire(transport, smtputf8=False, timeout=5)
    items = [(b"<s@x.example>", f"<r{i}@x.example>".encode(), f"body {i}\r\n.\r\n".encode(), False) for i in range(3)]
    envelope = [b"MAIL FROM:<s@x.example>\r\nRCPT TO:<r%d@x.example>\r\nDATA\r\n" % i for i in range(3)]

    async def run():
        task = asyncio.ensure_future(wire.series(items))
        await asyncio.sleep(0)
        assert transport.written == [envelope[0]]
        wire.data_received(b"250 ok\r\n250 ok\r\n354 go\r\n")
        await asyncio.sleep(0)
        assert transport.written[1:] == [b"body 0\r\n.\r\n" + envelope[1]]
        wire.data_received(b"250 queued 0\r\n250 ok\r\n550 5.1.1 no such user\r\n503 no recipients\r\n")
        await asyncio.sleep(0)
        # the refused envelope is reset in the same write as the next envelope
        assert transport.written[2:] == [b"RSET\r\n" + envelope[2]]
        wire.data_received(b"250 reset\r\n250 ok\r\n250 ok\r\n354 go\r\n")
        await asyncio.sleep(0)
        assert transport.written[3:] == [b"body 2\r\n.\r\n"]  # the last data goes alone
        wire.data_received(b"250 queued 2\r\n")
        return await task

    outcomes = asyncio.run(run())
    assert outcomes == [("sent", 250, "queued 0"), ("RCPT TO", 550, "5.1.1 no such user"), ("sent", 250, "queued 2")]
    assert wire.usable


def test_a_series_cut_after_a_data_reports_that_message_lost_and_the_next_untried():
    transport = _Transport()
    wire = Wire(transport, smtputf8=False, timeout=5)
    items = [(b"<s@x.example>", f"<r{i}@x.example>".encode(), b"x\r\n.\r\n", False) for i in range(3)]

    async def run():
        task = asyncio.ensure_future(wire.series(items))
        await asyncio.sleep(0)
        wire.data_received(b"250 ok\r\n250 ok\r\n354 go\r\n")
        await asyncio.sleep(0)
        wire.connection_lost(ConnectionResetError("reset"))
        return await task

    outcomes = asyncio.run(run())
    assert len(outcomes) == 1  # the second envelope was written, its data never: not tried
    from nurture_mail.smtp_wire import DataPhaseLost

    assert isinstance(outcomes[0], DataPhaseLost)


def send_batch(url: str, messages, connections: int = 1):
    async def run():
        transport = SmtpTransport(smtp_settings(url, connections=connections))
        try:
            return await transport.send_batch(messages)
        finally:
            await transport.close()

    return asyncio.run(run())


def batch(n: int) -> list[tuple[str, str, bytes]]:
    return [("dana@talent.example", f"p{i}@example.com", f"Subject: {i}\r\n\r\nhi {i}\r\n".encode()) for i in range(n)]


def faulty_sink(stage: str, victim: str, fault: str) -> SmtpSink:
    def rule(s, rcpt, attempt):
        return fault if s == stage and rcpt == victim and attempt == 1 else None

    return SmtpSink(rule=rule).start()


@pytest.mark.parametrize("connections", [1, 3])
def test_a_batch_arrives_once_each_in_order_per_connection(sink, connections):
    messages = batch(12)
    results = send_batch(sink.url, messages, connections)
    assert [r.outcome for r in results] == [Outcome.SENT] * 12
    assert sorted(r.rcpt for r in sink.received) == sorted(m[1] for m in messages)
    if connections == 1:
        assert [r.rcpt for r in sink.received] == [m[1] for m in messages]
    assert {r.data for r in sink.received} == {m[2] for m in messages}


def test_a_drop_after_the_data_in_a_batch_is_unknown_and_the_rest_go_on_a_new_connection():
    server = faulty_sink("after_data", "p3@example.com", "drop")
    try:
        results = send_batch(server.url, batch(7))
    finally:
        server.stop()
    outcomes = [r.outcome for r in results]
    assert outcomes == [Outcome.SENT] * 3 + [Outcome.UNKNOWN] + [Outcome.SENT] * 3
    assert [r.rcpt for r in server.received] == [f"p{i}@example.com" for i in range(7)]  # p3 once


def test_a_drop_before_the_data_in_a_batch_defers_that_message_and_the_rest_go_on():
    server = faulty_sink("rcpt", "p2@example.com", "drop")
    try:
        results = send_batch(server.url, batch(6))
    finally:
        server.stop()
    assert [r.outcome for r in results] == [Outcome.SENT] * 2 + [Outcome.DEFERRED] + [Outcome.SENT] * 3
    assert "before the data" in results[2].response
    assert [r.rcpt for r in server.received] == [f"p{i}@example.com" for i in range(6) if i != 2]


@pytest.mark.parametrize("stage,fault,outcome", [
    ("rcpt", "450 4.2.1 mailbox busy", Outcome.DEFERRED),
    ("data", "554 5.7.1 content refused", Outcome.FAILED),
    ("after_data", "451 4.3.0 try later", Outcome.DEFERRED),
])
def test_a_refusal_in_a_batch_leaves_the_connection_usable_for_the_rest(stage, fault, outcome):
    server = faulty_sink(stage, "p1@example.com", fault)
    try:
        results = send_batch(server.url, batch(4))
    finally:
        server.stop()
    assert [r.outcome for r in results] == [Outcome.SENT, outcome, Outcome.SENT, Outcome.SENT]
    stored = [r.rcpt for r in server.received]
    assert stored[0] == "p0@example.com" and stored[-2:] == ["p2@example.com", "p3@example.com"]


def test_an_unusable_address_in_a_batch_fails_alone(sink):
    messages = batch(3)
    messages[1] = ("dana@talent.example", "bad\r\nRCPT TO:<evil@example.com>", b"x\r\n")
    results = send_batch(sink.url, messages)
    assert [r.outcome for r in results] == [Outcome.SENT, Outcome.FAILED, Outcome.SENT]
    assert [r.rcpt for r in sink.received] == ["p0@example.com", "p2@example.com"]


def test_no_server_defers_the_whole_batch():
    from nurture_mail.testing import free_port

    results = send_batch(f"smtp://127.0.0.1:{free_port()}", batch(5), connections=2)
    assert [r.outcome for r in results] == [Outcome.DEFERRED] * 5


def test_a_fault_in_the_middle_of_a_series_gives_every_message_an_outcome(sink, monkeypatch):
    """Whatever breaks inside a connection's share, no message is left without a result
    (the engine records an exception in place of a Delivery as `unknown`)."""
    calls = []

    async def broken_series(self, items, before_each=None):
        calls.append(len(items))
        raise RuntimeError("a bug in the middle of a series")

    monkeypatch.setattr(Wire, "series", broken_series)
    results = send_batch(sink.url, batch(5), connections=2)
    if calls:  # the pipelined sink; the stepwise one never reaches a series
        assert all(isinstance(r, RuntimeError) for r in results)
    else:
        assert [r.outcome for r in results] == [Outcome.SENT] * 5
