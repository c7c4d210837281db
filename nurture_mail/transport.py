"""Transports: how message bytes leave. The engine sees only the `Transport` protocol.

* `SmtpTransport`: a pool of reused connections opened by aiosmtplib (EHLO, STARTTLS required
  unless the operator turned it off for a server on localhost, AUTH), a rate limit, one
  recipient per transaction; pipelined (`smtp_wire`) when the server offers PIPELINING.
* `MaildirTransport`: writes to `outbox/` when no SMTP server is configured, so a first run
  never mails anyone by accident.

Every outcome is a `Delivery`: the engine turns it into a ledger state. The one distinction
that matters for exactly-once is whether the message data may have reached the server: a
connection lost after the DATA command was accepted is `UNKNOWN`, never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import mailbox
import re
import ssl
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib

from .config import SmtpSettings
from .errors import ConfigError, NurtureError
from .smtp_wire import DataPhaseLost, EnvelopeLost, Wire, envelope_address, stuff

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


class Outcome(StrEnum):
    SENT = "sent"  # the server accepted the message (250 after the data)
    DEFERRED = "deferred"  # temporary failure before the data: try again later
    FAILED = "failed"  # permanent refusal (5xx): never retried
    UNKNOWN = "unknown"  # the data may have reached the server: never retried automatically


@dataclass(frozen=True)
class Delivery:
    outcome: Outcome
    code: int | None
    response: str

    @property
    def enhanced_status(self) -> str | None:
        m = _ENHANCED.match(self.response or "")
        return ".".join(m.groups()) if m else None

    @property
    def recipient_rejected(self) -> bool:
        """A permanent error about the address itself (5.1.x, or 550/553 at RCPT)."""
        status = self.enhanced_status
        if status:
            return status.startswith("5.1.")
        return self.outcome is Outcome.FAILED and self.code in (550, 551, 553) and "RCPT" in self.response


class Transport(Protocol):
    async def send(self, sender: str, recipient: str, data: bytes) -> Delivery: ...

    async def send_batch(self, messages: Sequence[tuple[str, str, bytes]]) -> list[Delivery | BaseException]:
        """A Delivery per (sender, recipient, data), in order, or the exception in its place."""
        ...

    async def close(self) -> None: ...


class MaildirTransport:
    """Delivers into a local Maildir (the `outbox/`)."""

    def __init__(self, directory: Path):
        for sub in ("tmp", "new", "cur"):
            (Path(directory) / sub).mkdir(parents=True, exist_ok=True)
        self.box = mailbox.Maildir(directory, create=False)

    async def send(self, sender: str, recipient: str, data: bytes) -> Delivery:
        try:
            key = self.box.add(data)  # written to tmp/ then renamed into new/: all or nothing
        except OSError as exc:
            return Delivery(Outcome.DEFERRED, None, f"cannot write to the outbox: {exc}")
        return Delivery(Outcome.SENT, 250, f"written to outbox as {key}")

    async def send_batch(self, messages: Sequence[tuple[str, str, bytes]]) -> list[Delivery | BaseException]:
        return [await self.send(*message) for message in messages]

    async def close(self) -> None:
        self.box.close()


class MemoryTransport:
    """Keeps messages in a list; for unit tests and dry runs."""

    def __init__(self):
        self.sent: list[tuple[str, str, bytes]] = []

    async def send(self, sender: str, recipient: str, data: bytes) -> Delivery:
        self.sent.append((sender, recipient, data))
        return Delivery(Outcome.SENT, 250, "ok (memory)")

    async def send_batch(self, messages: Sequence[tuple[str, str, bytes]]) -> list[Delivery | BaseException]:
        return [await self.send(*message) for message in messages]

    async def close(self) -> None:
        pass


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    implicit_tls: bool
    starttls: bool
    username: str | None
    password: str | None


def parse_smtp_url(url: str, starttls: str) -> SmtpTarget:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # an unclosed "[" or a port that is no number (no password shown)
        raise ConfigError(f"[smtp] url: {exc}") from None
    if parts.scheme not in ("smtp", "smtps"):
        raise ConfigError(f"[smtp] url must start with smtp:// or smtps://, got {parts.scheme or '?'}://")
    if not parts.hostname:
        raise ConfigError("[smtp] url has no host")
    implicit = parts.scheme == "smtps"
    port = port or (465 if implicit else 587)
    use_starttls = not implicit and starttls == "required"
    if not implicit and not use_starttls and parts.hostname not in LOCAL_HOSTS:
        raise ConfigError(
            f"[smtp] starttls = off is only allowed for a server on localhost, not {parts.hostname}"
        )
    return SmtpTarget(
        host=parts.hostname,
        port=port,
        implicit_tls=implicit,
        starttls=use_starttls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


class RateLimiter:
    """Token bucket: at most `per_minute` sends per minute, smoothly (0 = unlimited)."""

    def __init__(self, per_minute: int, clock=time.monotonic):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, min(per_minute / 60.0, 50.0))
        self.tokens = self.capacity
        self.clock = clock
        self.last = clock()
        self.lock = asyncio.Lock()

    async def acquire(self) -> None:
        if self.rate <= 0:
            return
        async with self.lock:
            while True:
                now = self.clock()
                self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
                self.last = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)


class TransportRefused(NurtureError):
    """The server cannot be used safely at all (no STARTTLS, bad certificate): stop sending."""


class _StaleConnection(Exception):
    """A reused connection turned out closed before anything was sent on it."""


class _DataPhaseLost(Exception):
    """The connection broke after the message data started: its fate is unknown."""


class SmtpTransport:
    """A pool of up to `max_connections` reused SMTP connections."""

    def __init__(self, settings: SmtpSettings, *, helo: str | None = None, tls_context: ssl.SSLContext | None = None,
                 pipelining: bool = True):
        if settings.url is None:
            raise ConfigError("[smtp] url is not set")
        self.target = parse_smtp_url(settings.url.reveal(), settings.starttls)
        self.timeout = settings.timeout_seconds
        self.helo = helo or settings.helo
        # Loading the system CA store costs ~25 ms: only when TLS is actually used.
        needs_tls = self.target.implicit_tls or self.target.starttls
        self.tls_context = tls_context or (ssl.create_default_context() if needs_tls else None)
        self.limiter = RateLimiter(settings.rate_per_minute)
        self.max_connections = max(1, settings.max_connections)
        self.slots = asyncio.Semaphore(self.max_connections)
        self.idle: list[aiosmtplib.SMTP | Wire] = []
        self.pipelining = pipelining

    async def _connect(self) -> aiosmtplib.SMTP | Wire:
        t = self.target
        client = aiosmtplib.SMTP(
            hostname=t.host,
            port=t.port,
            use_tls=t.implicit_tls,
            start_tls=t.starttls,
            tls_context=self.tls_context,
            timeout=self.timeout,
            local_hostname=self.helo,
        )
        await client.connect()
        if t.username:
            await client.login(t.username, t.password or "")
        if not self.pipelining:
            return client
        if client.last_ehlo_response is None:  # aiosmtplib says EHLO lazily; we need its list
            await client.ehlo()
        if not client.supports_extension("pipelining"):
            return client
        # Greeted, encrypted and logged in: hand the connection to the pipelined wire.
        transport = client.protocol.transport
        wire = Wire(transport, smtputf8=client.supports_extension("smtputf8"), timeout=self.timeout)
        transport.set_protocol(wire)
        return wire

    async def send(self, sender: str, recipient: str, data: bytes) -> Delivery:
        (result,) = await self.send_batch([(sender, recipient, data)])
        if isinstance(result, BaseException):
            raise result
        return result

    async def send_batch(self, messages: Sequence[tuple[str, str, bytes]]) -> list[Delivery | BaseException]:
        """A Delivery per (sender, recipient, data), in order; in place of one, the exception
        that kept it from being tried (TransportRefused: the server cannot be used safely) or
        that left its fate unknown (anything unexpected). The messages are dealt over up to
        `max_connections` connections, each taking its share in order, pipelined."""
        results: list[Delivery | BaseException | None] = [None] * len(messages)
        lanes = min(self.max_connections, len(messages))
        await asyncio.gather(*(
            self._lane(messages, range(lane, len(messages), lanes), results) for lane in range(lanes)
        ))
        return results  # type: ignore[return-value]  # every lane fills its share

    async def _lane(self, messages: Sequence[tuple[str, str, bytes]], share: range, results: list) -> None:
        """One connection's share, in order. A connection that breaks is replaced and the
        share goes on from the first message it did not try."""
        queue = deque(share)
        async with self.slots:
            client = self.idle.pop() if self.idle else None
            reused = client is not None  # a reused connection may have been closed while idle
            try:
                while queue:
                    if client is None or not _usable(client):
                        _drop(client)
                        client, reused = None, False
                        try:
                            client = await self._connect()
                        except (TimeoutError, aiosmtplib.SMTPException, EnvelopeLost, OSError) as exc:
                            failure = self._failure(exc)  # no server to talk to: the same for all
                            for index in queue:
                                results[index] = failure
                            return
                    if isinstance(client, Wire):
                        reused = await self._pipelined(client, messages, queue, results, reused)
                    else:
                        reused = await self._one_by_one(client, messages, queue, results, reused)
            except TransportRefused as exc:  # nothing more is tried: the rest keep their place
                _fill(results, share, exc)
            except Exception as exc:  # a fault we cannot place: the engine records `unknown`
                _fill(results, share, exc)
                _drop(client)
                client = None
            finally:
                if client is not None and _usable(client):
                    self.idle.append(client)
                else:
                    _drop(client)

    async def _pipelined(self, wire: Wire, messages, queue: deque, results: list, reused: bool) -> bool:
        """Everything in `queue` over `wire` in one pipelined series; what it did not try
        stays queued. Returns whether the next connection counts as reused."""
        items, order = [], []
        senders: dict[str, tuple[bytes, bool]] = {}  # a batch has one sender, or a few
        for index in queue:
            sender, recipient, data = messages[index]
            try:
                if (mail := senders.get(sender)) is None:
                    mail = senders[sender] = envelope_address(sender, wire.smtputf8)
                mail_from, utf8_from = mail
                rcpt_to, utf8_to = envelope_address(recipient, wire.smtputf8)
            except ValueError as exc:  # an address the envelope cannot carry; nothing is sent
                results[index] = Delivery(Outcome.FAILED, None, f"cannot send: {exc}")
                continue
            items.append((mail_from, rcpt_to, stuff(data), utf8_from or utf8_to))
            order.append(index)
        queue.clear()
        limit = self.limiter.acquire if self.limiter.rate > 0 else None
        outcomes = await wire.series(items, limit)
        for index, outcome in zip(order, outcomes, strict=False):
            if isinstance(outcome, EnvelopeLost) and outcome.nothing_heard and reused:
                # The server closed the idle connection: nothing was sent; once more on a new one.
                queue.extend(order[order.index(index):])
                return False
            results[index] = self._outcome(outcome)
        queue.extend(order[len(outcomes):])  # not tried: the connection broke before them
        return False

    async def _one_by_one(self, client: aiosmtplib.SMTP, messages, queue: deque, results: list,
                          reused: bool) -> bool:
        """The first message of `queue` on a server without PIPELINING."""
        index = queue[0]
        sender, recipient, data = messages[index]
        try:
            # aiosmtplib would parse "x\r\nRCPT TO:<y>" down to y: refuse such addresses first.
            envelope_address(sender, True)
            envelope_address(recipient, True)
        except ValueError as exc:
            results[queue.popleft()] = Delivery(Outcome.FAILED, None, f"cannot send: {exc}")
            return reused
        await self.limiter.acquire()
        try:
            delivery = await self._stepwise(client, sender, recipient, data)
        except _StaleConnection as exc:
            client.close()
            if reused:  # closed while idle: nothing was sent; once more on a new connection
                return False
            delivery = self._failure(exc)
        except _DataPhaseLost as exc:
            client.close()
            delivery = Delivery(Outcome.UNKNOWN, None, f"connection lost after the message data: {exc}")
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            delivery = self._failure(exc)
        results[queue.popleft()] = delivery
        return True

    def _outcome(self, outcome) -> Delivery:
        """A Delivery from what `Wire.series` said of one message."""
        if isinstance(outcome, DataPhaseLost):
            return Delivery(Outcome.UNKNOWN, None, f"connection lost after the message data: {outcome}")
        if isinstance(outcome, BaseException):  # EnvelopeLost, or a stall before the data
            return self._failure(outcome)
        stage, code, text = outcome
        if stage != "sent":
            return _from_code(code, text, stage)
        if code != 250:
            return _from_code(code, text, "DATA")
        return Delivery(Outcome.SENT, code, f"{code} {text}")

    def _failure(self, exc: BaseException) -> Delivery:
        """A failure before any data: the server's refusal, or a connection problem; raises
        TransportRefused when TLS cannot be had (nothing may be sent at all then)."""
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            return _from_code(exc.code, exc.message, "connect")
        if _is_tls_refusal(exc):
            raise TransportRefused(
                f"SMTP server {self.target.host}:{self.target.port} refused: {exc}; "
                "nothing was sent (set [smtp] starttls = \"off\" only for a server on localhost)"
            ) from None
        return Delivery(Outcome.DEFERRED, None, f"connection problem before the data: {exc or type(exc).__name__}")

    async def _stepwise(self, client: aiosmtplib.SMTP, sender: str, recipient: str, data: bytes) -> Delivery:
        """One message, one command at a time (a server without PIPELINING), on a clean connection; leaves it clean (RSET after a refusal) or broken.

        No RSET before each message: after a completed DATA the server has already reset the
        transaction, and the round trip costs as much as the MAIL command itself."""
        try:
            await client.mail(sender)
        except aiosmtplib.SMTPServerDisconnected as exc:
            raise _StaleConnection(str(exc)) from exc
        except aiosmtplib.SMTPResponseException as exc:
            await _reset(client)
            return _from_code(exc.code, exc.message, "MAIL FROM")
        try:
            await client.rcpt(recipient)
        except aiosmtplib.SMTPResponseException as exc:
            await _reset(client)
            return _from_code(exc.code, exc.message, "RCPT TO")
        body_started = False
        protocol = client.protocol
        original_write = protocol.write

        def write(chunk: bytes) -> None:
            nonlocal body_started
            if chunk != b"DATA\r\n":
                body_started = True
            original_write(chunk)

        protocol.write = write  # to learn whether the data left before a connection broke
        try:
            response = await client.data(data)
        except aiosmtplib.SMTPResponseException as exc:
            await _reset(client)
            return _from_code(exc.code, exc.message, "DATA")
        except (TimeoutError, aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
            if body_started:
                raise _DataPhaseLost(str(exc) or type(exc).__name__) from exc
            raise
        finally:
            protocol.write = original_write
        return Delivery(Outcome.SENT, response.code, f"{response.code} {response.message}")

    async def close(self) -> None:
        while self.idle:
            client = self.idle.pop()
            try:
                await asyncio.wait_for(client.quit(), timeout=2)
            except Exception:
                client.close()


def _fill(results: list, share: range, value: BaseException) -> None:
    """`value` for every message of `share` that has no outcome yet (queued or in flight)."""
    for index in share:
        if results[index] is None:
            results[index] = value


def _usable(client: aiosmtplib.SMTP | Wire | None) -> bool:
    if isinstance(client, Wire):
        return client.usable
    return client is not None and client.is_connected


async def _reset(client: aiosmtplib.SMTP) -> None:
    """Clear a refused transaction so the connection can be reused; drop it if that fails."""
    if not client.is_connected:
        return
    try:
        await client.execute_command(b"RSET")
    except (TimeoutError, aiosmtplib.SMTPException, OSError):
        client.close()


def _drop(client: aiosmtplib.SMTP | Wire | None) -> None:
    if client is not None:
        with contextlib.suppress(Exception):
            client.close()


def _from_code(code: int, message: str, stage: str) -> Delivery:
    text = f"{code} {message}".strip() + f" (at {stage})"
    if 400 <= code < 500 or code < 200:
        return Delivery(Outcome.DEFERRED, code, text)
    return Delivery(Outcome.FAILED, code, text)


def _is_tls_refusal(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "starttls" in text and ("not supported" in text or "extension" in text) or isinstance(exc, ssl.SSLError)


def make_transport(settings) -> Transport:
    """SMTP when `[smtp] url` is set, else the outbox Maildir."""
    if settings.smtp.url:
        return SmtpTransport(settings.smtp)
    return MaildirTransport(settings.outbox_dir)
