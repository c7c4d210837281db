"""Test doubles shipped with the package: a real SMTP server on loopback (aiosmtpd) that
records what it receives and can misbehave on demand, and a fixed clock.

The sink is a real server speaking real SMTP over TCP: tests of the send path use it instead
of mocking aiosmtplib. Faults are given per stage as a function of the recipient and the
attempt number, or at random with a seed.
"""

from __future__ import annotations

import asyncio
import random
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*<[^>\r\n]*>", re.I | re.M)

# A fault: an SMTP reply line such as "451 4.3.0 try later", or "drop" to cut the connection.
Fault = str | None
FaultRule = Callable[[str, str, int], Fault]  # (stage, recipient, attempt) -> fault


@dataclass
class Received:
    mail_from: str
    rcpt: str
    data: bytes


class _Handler:
    def __init__(self, sink: SmtpSink):
        self.sink = sink

    async def _fault(self, server: SMTP, stage: str, rcpt: str) -> str | None:
        with self.sink.lock:
            attempt = self.sink.attempts.get((stage, rcpt), 0) + 1
            self.sink.attempts[(stage, rcpt)] = attempt
        fault = self.sink.rule(stage, rcpt, attempt) if self.sink.rule else None
        if fault == "drop":
            server.transport.close()
            return "421 4.4.2 connection dropped by the test"  # never reaches the client
        if fault == "stall":  # say nothing until the client gives up and hangs up (or stop())
            with self.sink.lock:
                self.sink.stalled += 1
            deadline = asyncio.get_running_loop().time() + self.sink.stall_seconds
            while not server.transport.is_closing() and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            return "451 4.4.2 stalled by the test"  # never reaches a client that gave up
        return fault

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.sink.pipelining:  # aiosmtpd reads commands in order; say so, as Postfix does
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session: Session, envelope: Envelope, address, rcpt_options):
        fault = await self._fault(server, "rcpt", address.lower())
        if fault:
            return fault
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        fault = await self._fault(server, "mail", address.lower())
        if fault:
            return fault
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope: Envelope):
        rcpt = envelope.rcpt_tos[0].lower() if envelope.rcpt_tos else ""
        fault = await self._fault(server, "data", rcpt)
        if fault:
            return fault
        data = bytes(envelope.content)
        if not self.sink.keep_data:  # a long load run: keep the Message-ID line only
            found = _MESSAGE_ID.search(data)
            data = found.group(0) + b"\r\n\r\n" if found else b""
        with self.sink.lock:
            for r in envelope.rcpt_tos:
                self.sink.received.append(Received(envelope.mail_from, r.lower(), data))
        if self.sink.delay:  # stored, the client still waiting: the window a crash test aims at
            await asyncio.sleep(self.sink.delay)
        after = await self._fault(server, "after_data", rcpt)
        if after:  # the message is stored, but the client never hears so: "unknown" for it
            return after
        return "250 2.0.0 queued"


@dataclass
class SmtpSink:
    """A loopback SMTP server. `rule(stage, rcpt, attempt)` injects faults at the stages
    "mail" (keyed by the sender), "rcpt", "data" (after the data arrived, instead of storing it) and "after_data"
    (stored, then the reply is replaced: "drop" = the connection dies after the data).
    A rule may answer a reply line ("451 4.3.0 busy"), "drop" (close the connection there) or
    "stall" (answer nothing until the client hangs up, at most `stall_seconds`).
    `delay` (seconds) holds every reply to DATA after the message is stored: the client
    waits while the server already has the message (crash tests kill senders in that gap).
    `keep_data=False` stores only each message's Message-ID header (load tests).
    `pipelining=False` stops offering PIPELINING: the sender then goes one command at a time."""

    host: str = "127.0.0.1"
    rule: FaultRule | None = None
    delay: float = 0.0
    keep_data: bool = True
    pipelining: bool = True
    stall_seconds: float = 30.0
    stalled: int = 0
    received: list[Received] = field(default_factory=list)
    attempts: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    controller: Controller | None = None

    port: int = 0

    def start(self) -> SmtpSink:
        self.port = self.port or free_port(self.host)
        self.controller = Controller(_Handler(self), hostname=self.host, port=self.port, ready_timeout=10)
        self.controller.start()
        return self

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def message_ids(self) -> list[str]:
        from email import message_from_bytes

        return [message_from_bytes(r.data)["Message-ID"].strip("<>") for r in self.received]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def random_faults(seed: int, rate: float) -> FaultRule:
    """Seeded random faults at every stage: temporary codes, permanent ones, drops."""
    rng = random.Random(seed)
    choices = ["451 4.3.0 try later", "452 4.2.2 mailbox busy", "421 4.4.2 closing", "drop", "554 5.7.1 rejected"]
    lock = threading.Lock()

    def rule(stage: str, rcpt: str, attempt: int) -> Fault:
        with lock:
            if rng.random() >= rate:
                return None
            return rng.choice(choices)

    return rule


class FixedClock:
    """A clock that only moves when told to."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now
