"""Pipelined SMTP transactions (RFC 2920) on a connection aiosmtplib has opened.

aiosmtplib greets, says EHLO, starts TLS and logs in; when the server offers PIPELINING the
connection is handed to `Wire`, which sends MAIL FROM, RCPT TO and DATA in one write and reads
every reply in order. One round trip for the envelope, one for the data, and no per-command
futures, timeouts or address re-parsing: aiosmtplib's one-command-at-a-time protocol costs
more CPU per message than rendering it.

Exactly-once rests on one fact this module reports faithfully: whether the message data has
started to leave (`DataPhaseLost`) or not (`EnvelopeLost`) when a connection breaks.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Awaitable, Callable

from .mime import CrlfBytes

MAX_LINE = 4096  # RFC 5321 allows 512 octets per reply line; be generous, never unbounded
MAX_PENDING = 64 * 1024
_RESOLUTION = 1e-3  # a timer that fires this close to its deadline has met it


class WireError(Exception):
    """The connection broke or the server spoke something that is not SMTP."""


class EnvelopeLost(WireError):
    """The connection broke before any of the message data was written."""

    def __init__(self, message: str, *, nothing_heard: bool):
        super().__init__(message)
        self.nothing_heard = nothing_heard  # not even the MAIL reply: a stale reused connection


class DataPhaseLost(WireError):
    """The connection broke after the message data started: its fate is unknown."""


def stuff(data: bytes) -> bytes:
    """The DATA payload: CRLF line ends, leading dots doubled (RFC 5321 4.5.2), the final dot."""
    if type(data) is not CrlfBytes:
        crlf = data.count(b"\r\n")  # counting, not copying: every CR and LF in a CRLF pair
        if data.count(b"\n") != crlf or data.count(b"\r") != crlf:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if data.startswith(b"."):
        data = b"." + data
    if b"\r\n." in data:
        data = data.replace(b"\r\n.", b"\r\n..")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


_UNSAFE = re.compile("[<>\r\n\0]")  # what would break the command line


def envelope_address(address: str, smtputf8: bool) -> tuple[bytes, bool]:
    """`<address>` as bytes for MAIL FROM / RCPT TO, and whether it needs SMTPUTF8.

    The address was validated when stored; this only refuses what would break the command
    line (control characters, angle brackets) instead of trusting it."""
    if not address or len(address) > 320 or _UNSAFE.search(address) is not None:
        raise ValueError(f"address cannot be used in an SMTP envelope: {address!r}")
    if address.isascii():
        return b"<" + address.encode("ascii") + b">", False
    if not smtputf8:
        raise ValueError(f"{address} needs SMTPUTF8, which the SMTP server does not offer")
    return b"<" + address.encode("utf-8") + b">", True


def _envelope(item: tuple[bytes, bytes, bytes, bool]) -> bytes:
    """MAIL FROM, RCPT TO and DATA of one message, as one write."""
    sender, recipient, _, utf8 = item
    return b"MAIL FROM:" + sender + (b" SMTPUTF8" if utf8 else b"") + b"\r\nRCPT TO:" + recipient + b"\r\nDATA\r\n"


class Wire(asyncio.Protocol):
    """Reads every SMTP reply in order into a queue; the sender awaits them one by one."""

    def __init__(self, transport: asyncio.Transport, *, smtputf8: bool, timeout: float):
        self.transport = transport
        self.smtputf8 = smtputf8
        self.timeout = timeout
        self.replies: deque[tuple[int, str]] = deque()
        self.partial: list[str] = []
        self.buffer = b""
        self.waiter: asyncio.Future | None = None
        self.lost: BaseException | None = None
        self.data_started = False
        self.broken = False  # a fault left the conversation in an unknown place: never reuse
        # The replies awaited now must all have come by `deadline` (loop time; None: no limit).
        # One timer per connection, moved lazily: it fires at the deadline it was set for and
        # goes back to sleep when the deadline has moved on, so a message costs no timer of
        # its own (two `asyncio.timeout`s a message cost more than parsing its replies).
        self.deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        # The loop the conversation runs on, looked up once: asyncio.get_running_loop() makes
        # a getpid() system call each time (CPython 3.11), a few per message.
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            line = buffer[start : end + 1]
            start = end + 1
            if len(line) < 4 or not line[:3].isdigit() or line[3:4] not in (b" ", b"-", b"\r", b"\n"):
                self._fail(WireError(f"not an SMTP reply: {line[:80]!r}"))
                return
            text = line[4:].strip(b" \t\r\n").decode("utf-8", "replace")
            if line[3:4] == b"-":
                self.partial.append(text)
                if len(self.partial) > 100:
                    self._fail(WireError("SMTP reply has too many lines"))
                    return
                continue
            if self.partial:
                text = "\n".join([*self.partial, text])
                self.partial = []
            self.replies.append((int(line[:3]), text))
        self.buffer = buffer[start:]
        if len(self.buffer) > MAX_LINE or len(self.replies) > MAX_PENDING:
            self._fail(WireError("SMTP reply line too long"))
            return
        if self.waiter is not None and self.replies and not self.waiter.done():
            self.waiter.set_result(None)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._fail(exc or ConnectionResetError("connection closed by the server"))

    def eof_received(self) -> bool:
        self._fail(ConnectionResetError("connection closed by the server"))
        return False

    def _fail(self, exc: BaseException) -> None:
        if self.lost is None:
            self.lost = exc
        self.broken = True
        self._stop_timer()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    # -- time limits ---------------------------------------------------------------------------
    def _running_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _within(self, seconds: float | None) -> None:
        """The replies awaited from now on must come within `seconds` (None: no limit)."""
        self.deadline = None if seconds is None else self._running_loop().time() + seconds

    def _expired(self, loop: asyncio.AbstractEventLoop) -> bool:
        # Timers may fire a hair early; the loop's clock resolution is what it promises.
        return self.deadline is not None and loop.time() + _RESOLUTION >= self.deadline

    def _on_timer(self) -> None:
        self._timer = None
        if self.deadline is None:
            return
        loop = self._running_loop()
        if self._expired(loop):
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(None)  # `reply` sees the deadline passed
        elif self.waiter is not None:
            self._timer_at = self.deadline
            self._timer = loop.call_at(self.deadline, self._on_timer)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- the conversation ---------------------------------------------------------------------
    @property
    def usable(self) -> bool:
        return not self.broken and self.lost is None and not self.transport.is_closing()

    async def reply(self) -> tuple[int, str]:
        """The next reply in order; raises WireError when the connection is gone, TimeoutError
        when the deadline (`_within`) passes first."""
        while not self.replies:
            if self.lost is not None:
                raise WireError(str(self.lost) or type(self.lost).__name__)
            loop = self._running_loop()
            if self.deadline is not None:
                if self._expired(loop):
                    raise TimeoutError(f"no SMTP reply within {self.timeout:g} s")
                if self._timer is None or self._timer_at > self.deadline:
                    self._stop_timer()
                    self._timer_at = self.deadline
                    self._timer = loop.call_at(self.deadline, self._on_timer)
            self.waiter = loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.replies.popleft()

    async def transaction(self, sender: bytes, recipient: bytes, payload: bytes, utf8: bool) -> tuple[str, int, str]:
        """One message: (stage, code, text) of the reply that decided it.

        stage is "MAIL FROM", "RCPT TO", "DATA" (the reply to the DATA command) or "sent"
        (the reply after the data). Raises EnvelopeLost / DataPhaseLost when the connection
        breaks, TimeoutError when the server stalls before the data (a stall after it is
        DataPhaseLost)."""
        (outcome,) = await self.series([(sender, recipient, payload, utf8)])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def series(self, items: list[tuple[bytes, bytes, bytes, bool]],
                     before_each: Callable[[], Awaitable[None]] | None = None) -> list:
        """Several transactions on this connection, pipelined across messages: the message
        content may open a group of commands (RFC 2920 3.1), so each message's data goes out
        in one write with the next message's envelope, one round trip a message.

        `items` are (sender, recipient, payload, utf8) as `transaction` takes them;
        `before_each` is awaited before each envelope is written (the rate limit). Returns an
        outcome for each item of a prefix of `items`: (stage, code, text) as `transaction`
        returns it, or the exception that ended the connection during that item: EnvelopeLost
        or TimeoutError before its data, DataPhaseLost after. The items after the prefix were
        not attempted: at most their envelope was written, never their data."""
        out: list = []
        if not items:
            return out
        if before_each is not None:
            await before_each()
        self.data_started = False
        self.transport.write(_envelope(items[0]))
        expect_reset = False  # a RSET went out ahead of this item's envelope
        last = len(items) - 1
        replies = self.replies
        for i, item in enumerate(items):
            heard = 0
            self._within(self.timeout)
            try:
                if expect_reset:
                    code, text = await self.reply()
                    if code >= 300:
                        raise WireError(f"RSET refused: {code} {text}")
                    expect_reset = False
                # A reply already read is taken as `reply` would take it (first, before any
                # check), without a coroutine: usually all four replies of a message are.
                mail = replies.popleft() if replies else await self.reply()
                heard = 1
                rcpt = replies.popleft() if replies else await self.reply()
                data = replies.popleft() if replies else await self.reply()
            except WireError as exc:
                self.broken = True
                out.append(EnvelopeLost(str(exc), nothing_heard=heard == 0 and i == 0))
                return out
            except TimeoutError as exc:
                self.broken = True
                out.append(exc)
                return out
            finally:
                self._within(None)
            if mail[0] >= 300 or rcpt[0] >= 300 or data[0] != 354:
                if data[0] == 354:  # accepted DATA without a sender or recipient: end it empty
                    self.transport.write(b".\r\n")
                    await self._settle(1)
                stage = "MAIL FROM" if mail[0] >= 300 else "RCPT TO" if rcpt[0] >= 300 else "DATA"
                out.append((stage, *(mail if mail[0] >= 300 else rcpt if rcpt[0] >= 300 else data)))
                if i == last or not self.usable:
                    await self.reset()
                    return out
                if before_each is not None:
                    await before_each()
                self.transport.write(b"RSET\r\n" + _envelope(items[i + 1]))
                expect_reset = True
                continue
            if i < last and before_each is not None:
                await before_each()
            self.data_started = True
            self.transport.write(item[2] if i == last else item[2] + _envelope(items[i + 1]))
            self._within(self.timeout)
            try:
                done = replies.popleft() if replies else await self.reply()
            except (WireError, TimeoutError) as exc:
                self.broken = True
                out.append(DataPhaseLost(str(exc) or type(exc).__name__))
                return out
            finally:
                self._within(None)
            self.data_started = False
            out.append(("sent", *done))
        return out

    async def _settle(self, count: int) -> None:
        self._within(self.timeout)
        try:
            for _ in range(count):
                await self.reply()
        except (WireError, TimeoutError):
            self.broken = True
        finally:
            self._within(None)

    async def reset(self) -> None:
        """RSET after a refusal so the connection can carry the next message."""
        if not self.usable:
            return
        self.transport.write(b"RSET\r\n")
        self._within(self.timeout)
        try:
            code, _ = await self.reply()
        except (WireError, TimeoutError):
            self.broken = True
            return
        finally:
            self._within(None)
        if code >= 300:
            self.broken = True

    async def quit(self) -> None:
        if self.usable:
            self.transport.write(b"QUIT\r\n")
            self._within(min(2.0, self.timeout))
            try:
                await self.reply()
            except (WireError, TimeoutError):
                pass
            finally:
                self._within(None)
        self.close()

    def close(self) -> None:
        self.broken = True
        self._stop_timer()
        if not self.transport.is_closing():
            self.transport.close()
