"""One beat of the daemon: `tick(now)`.

store -> sequencing/schedule -> templates -> messages -> transport -> store. The engine never
talks SQL or SMTP itself beyond the store functions and the Transport protocol; the clock is
passed in.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from . import scheduling
from .campaigns import Campaign, Step
from .config import Settings
from .database import Database
from .errors import TemplateError
from .rendering import StepEmails, dictionary_sample, sender_of
from .rules import evaluate
from .schedule import DailyCounter, cap_zone_for, day_key, next_slot, zone_for
from .segments import audience_clause
from .store import enrolment, ledger, pool, sent_messages
from .templates import TemplateSet
from .transport import Delivery, Outcome, Transport, TransportRefused
from .workspace import Workspace

try:  # libuv's loop costs less CPU per message than asyncio's own; optional on Windows
    from uvloop import new_event_loop as _loop_factory
except ImportError:  # pragma: no cover
    _loop_factory = None

# Messages per connection in one group (marked `data_started` in one commit, then sent): the
# group, `[smtp] max_connections` x this, is the most a killed daemon leaves `unknown`. Each
# group costs a commit and a round of the connections whatever its size; 8 instead of 4 sent
# 11% more per second with 2 processes (4 paired rounds, bench send), 16 only 2% more again.
INFLIGHT_PER_CONNECTION = 8
BACKOFF_BASE = timedelta(minutes=5)
BACKOFF_CAP = timedelta(hours=6)
_MISSING: Any = object()  # a look-up's miss, where None is a value (a removed step)


@dataclass
class TickReport:
    """What one tick did."""

    enrolled: int = 0
    scheduled: int = 0
    completed: int = 0
    sent: int = 0
    deferred: int = 0
    rescheduled: int = 0
    failed: int = 0
    skipped: int = 0
    cancelled: int = 0
    unknown: int = 0
    requeued: int = 0

    def summary(self) -> str:
        parts = [
            f"{self.enrolled} enrolled",
            f"{self.sent} sent",
            f"{self.deferred} deferred",
            f"{self.failed} failed",
            f"{self.skipped} skipped",
            f"{self.cancelled} cancelled",
        ]
        if self.rescheduled:
            parts.append(f"{self.rescheduled} moved to the next send window")
        if self.unknown:
            parts.append(f"{self.unknown} unknown")
        if self.requeued:
            parts.append(f"{self.requeued} requeued after a stopped sender")
        return ", ".join(parts)


def backoff(attempts: int) -> timedelta:
    """5 min, 10, 20, 40 ... capped at 6 h."""
    return min(BACKOFF_BASE * (2 ** max(attempts - 1, 0)), BACKOFF_CAP)


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Engine:
    """Enrols, schedules and sends for one workspace."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        workspace: Workspace,
        transport: Transport,
        *,
        clock: Callable[[], datetime],
        owner: str | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        sender_only: bool = False,
    ):
        self.settings = settings
        self.db = db
        self.workspace = workspace
        self.transport = transport
        self.clock = clock
        self.owner = owner or new_owner()
        self.should_stop = should_stop
        # A helper of `run --workers`: the daemon it helps enrols and schedules; it only sends.
        self.sender_only = sender_only
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.secret = workspace.unsubscribe_secret
        # Per (campaign, step, variant), for this beat: what its emails share, how they pack.
        self._emails: dict[tuple[str, str, str | None], tuple[StepEmails, sent_messages.Packer]] = {}
        self._sessions = db.sessions  # while sending: pinned to one connection

    @property
    def campaigns(self) -> list[Campaign]:
        return self.workspace.campaigns

    @property
    def templates(self) -> TemplateSet:
        return self.workspace.templates

    # -- the beat ------------------------------------------------------------------------
    def tick(self, now: datetime | None = None) -> TickReport:
        now = now or self.clock()
        report = TickReport()
        stamp = ledger.naive(now)
        with self.db.sessions.begin() as session:
            if not self.sender_only:
                for c in self.campaigns:
                    ledger.sync_campaign(session, c.id, c.name, c.status, [s.id for s in c.steps], stamp)
            report.requeued, unknown = ledger.reap_expired(session, stamp)
            report.unknown += unknown
        # A helper (sender_only) leaves enrolling and scheduling to the daemon it helps.
        for campaign in () if self.sender_only else self.campaigns:
            if campaign.status != "active":
                continue
            with self.db.sessions.begin() as session:
                report.enrolled += enrolment.enrol(
                    session, campaign.id, audience_clause(campaign.audience, now), stamp
                )
            self._schedule(campaign, now, report)
        with asyncio.Runner(loop_factory=_loop_factory) as runner:
            runner.run(self._send_due(now, report))
        return report

    def _schedule(self, campaign: Campaign, now: datetime, report: TickReport) -> None:
        """Place the next step of every enrollment that needs one (`scheduling`)."""
        scheduled, completed = scheduling.schedule_campaign(
            self.db, campaign, now=now, default_timezone=self.settings.default_timezone,
            domain=self._sender(campaign)[1].rsplit("@", 1)[-1],
        )
        report.scheduled += scheduled
        report.completed += completed

    def _sender(self, campaign: Campaign) -> tuple[str, str, str | None]:
        return sender_of(campaign, self.settings)

    # -- sending -------------------------------------------------------------------------
    async def _send_due(self, now: datetime, report: TickReport) -> None:
        """Claim, decide, send, record, until nothing is due or we are told to stop.

        One transaction per group of messages: it records the outcomes of the previous group
        (and the decisions of the batch) and marks this group `data_started`; then the group
        goes out. Half the commits of recording and marking separately, and the same
        guarantee: nothing leaves before its mark is committed, and a crash before the next
        commit leaves at most one group `unknown`."""
        active = {c.id: c for c in self.campaigns if c.status == "active"}
        counters: dict[str, DailyCounter] = {}
        # Messages marked `data_started` in one transaction and sent together: the most that a
        # crash can leave `unknown`. Several per connection keeps commits off the hot path.
        chunk = max(1, self.settings.smtp.max_connections) * INFLIGHT_PER_CONNECTION
        pending = _Pending(ledger.Writes(ledger.naive(now)))
        # One connection for the whole loop: a transaction per group, without a pool checkout
        # and a new Session each time.
        self._sessions = pinned = self.db.pinned_sessions()
        try:
            while not self.should_stop():
                with self._sessions.begin() as session:
                    self._write(session, pending, now)
                    ids = ledger.claim(
                        session,
                        due_by=now,
                        lease_until=self.clock() + self.lease,
                        owner=self.owner,
                        limit=min(self.settings.batch_size, chunk * 4),
                        campaign_ids=list(active),
                    )
                # The rows are ours now: read them after the commit, so that no write lock is
                # held while they are turned into Python objects (SQLite: other senders wait).
                with self._sessions.begin() as session:
                    claimed = ledger.claimed_details(session, ids)
                    for campaign_id in {row.campaign_id for row in claimed} - counters.keys():
                        if campaign_id in active:
                            counters[campaign_id] = self._counter(session, active[campaign_id], now)
                if not claimed:
                    return
                ready = self._decide(claimed, active, counters, now, report, pending.writes)
                for start in range(0, len(ready), chunk):
                    if self.should_stop():
                        self._release([r[0] for r in ready[start:]], pending, now)
                        return
                    await self._deliver(ready[start : start + chunk], active, now, report, pending)
        finally:
            try:
                if pending.writes.any() or pending.bounced:
                    with self._sessions.begin() as session:
                        self._write(session, pending, now)
            finally:
                self._sessions = self.db.sessions
                pinned.close()
                await self.transport.close()

    def _write(self, session, pending: _Pending, now: datetime) -> None:
        """Outcomes and decisions not yet in the database, and the suppressions they cause."""
        pending.writes.flush(session)
        for address in pending.bounced:
            pool.suppress(session, self.db, address, "bounced", now)
        pending.bounced = []

    def _decide(self, claimed, active, counters, now, report, writes: ledger.Writes):
        """Exit checks, window and cap, only_if, rendering. Returns what to send; what not to
        send goes into `writes`, recorded with the next commit."""
        ready = []
        open_slots: dict[tuple[str, str], datetime] = {}
        # A batch is a few steps to candidates in a few zones: each looked up once.
        steps: dict[tuple[str, str], Step | None] = {}
        zones: dict[tuple[str, str | None], ZoneInfo] = {}
        default_timezone = self.settings.default_timezone
        for row in claimed:
            campaign = active.get(row.campaign_id)
            if campaign is None:
                step = None
            elif (step := steps.get((campaign.id, row.step_id), _MISSING)) is _MISSING:
                step = steps[campaign.id, row.step_id] = campaign.step(row.step_id)
            cand = row.candidate
            reason = None
            if row.enrollment_state != "active":
                reason = "enrollment ended"
            elif row.suppressed:
                reason = "address suppressed"
            elif (cand["status"] or "") == "hired":
                reason = "hired"
            elif step is None:
                reason = ledger.STEP_REMOVED
            if reason:
                # A row of a removed step reaches here when it was claimed while the file changed
                # and its lease ran out: its enrollment moves on, as `cancel_removed_steps` does.
                writes.cancel(row.send_id, reason, move_on=row.enrollment_id if reason == ledger.STEP_REMOVED else None)
                report.cancelled += 1
                continue
            zone = zones.get((campaign.id, cand["timezone"]))
            if zone is None:
                zone = zones[campaign.id, cand["timezone"]] = zone_for(
                    campaign.schedule, cand["timezone"], default_timezone
                )
            counter = counters[campaign.id]
            if counter.cap is None:  # no cap: the window alone decides, the same for a whole zone
                key = (campaign.id, zone.key)
                slot = open_slots.get(key)
                if slot is None:
                    slot = open_slots[key] = next_slot(now, campaign.schedule, zone)
            else:
                slot = counter.place(now, campaign.schedule, zone, cap_zone_for(campaign.schedule, self.settings.default_timezone))
            if slot > now:
                writes.defer(row.send_id, slot, reason=None, count_attempt=False)
                report.rescheduled += 1
                continue
            if step.only_if and not evaluate(step.only_if, cand, now):
                rule = ", ".join(f"{c.field} {c.op} {c.value!r}" for c in step.only_if)
                writes.finish(row.send_id, row.enrollment_id, row.step_id, "skipped", reason=f"only_if: {rule}")
                report.skipped += 1
                continue
            try:
                message = self._render(campaign, step, row, zone, now)
            except (TemplateError, ValueError) as exc:
                writes.finish(row.send_id, row.enrollment_id, row.step_id, "failed", reason=f"cannot render: {exc}")
                report.failed += 1
                continue
            ready.append((row.send_id, row, message))
        return ready

    def _counter(self, session, campaign: Campaign, now: datetime) -> DailyCounter:
        cap = campaign.schedule.max_per_day
        if cap is None:
            return DailyCounter(None)
        zone = cap_zone_for(campaign.schedule, self.settings.default_timezone)
        today = day_key(now, zone)
        start = datetime.combine(today, time(0), tzinfo=zone)
        end = datetime.combine(today + timedelta(days=1), time(0), tzinfo=zone)
        return DailyCounter(cap, {today: ledger.sent_between(session, campaign.id, start, end)})

    def _render(self, campaign: Campaign, step, row, zone, now: datetime) -> tuple[bytes, ledger.Prepared]:
        """The message, and what the ledger stores of it (packed here, outside any transaction)."""
        key = (campaign.id, step.id, row.variant)
        emails = self._emails.get(key)
        if emails is None:
            emails = self._emails[key] = (
                StepEmails(self.templates, self.settings, self.secret, campaign, step, row.variant),
                self._packer(campaign, step, row.variant, now),
            )
        prepared = emails[0].prepare(row.candidate, message_id=row.message_id, now=now, zone=zone)
        stored = ledger.Prepared(prepared.to_addr, prepared.rendered.subject, *emails[1].pack(prepared.message))
        return prepared.message, stored

    def _packer(self, campaign: Campaign, step, variant: str | None, now: datetime) -> sent_messages.Packer:
        """How this beat packs the step's messages: against the step's synthetic email."""
        try:
            sample = dictionary_sample(self.templates, self.settings, self.secret, campaign, step, variant)
        except (TemplateError, ValueError):  # the real emails fail the same way, or render
            return sent_messages.PLAIN
        with self._sessions.begin() as session:
            return sent_messages.packer(session, sample, ledger.naive(now))

    async def _deliver(self, group, active, now: datetime, report: TickReport, pending: _Pending) -> None:
        with self._sessions.begin() as session:
            self._write(session, pending, now)
            marked = set(
                ledger.mark_data_started(
                    session,
                    self.owner,
                    {send_id: stored for send_id, _, (_, stored) in group},
                    self.clock() + self.lease,
                )
            )
        sendable = [(sid, row, msg) for sid, row, msg in group if sid in marked]
        senders = {cid: self._sender(active[cid])[1] for cid in {row.campaign_id for _, row, _ in sendable}}
        results = await self.transport.send_batch(
            [(senders[row.campaign_id], stored[0], message) for _, row, (message, stored) in sendable]
        )
        refused: TransportRefused | None = None
        writes = pending.writes
        for (sid, row, _), result in zip(sendable, results, strict=True):
            if isinstance(result, TransportRefused):
                # Refused before any data: back to the queue untouched, then stop.
                writes.defer(sid, row.due_at, reason=str(result), count_attempt=False)
                refused = result
                continue
            if isinstance(result, BaseException):
                # A fault we cannot place: the data may have left. Never resend blindly.
                result = Delivery(Outcome.UNKNOWN, None, f"transport error: {type(result).__name__}: {result}")
            if self._record(writes, row, result, now, report):
                pending.bounced.append(row.candidate["email"])
        if refused is not None:
            raise refused  # the caller's `finally` records what this group did

    def _record(self, writes: ledger.Writes, row, delivery: Delivery, now: datetime, report: TickReport) -> bool:
        """Turn a delivery into a ledger outcome; True when the address must be suppressed."""
        outcome = delivery.outcome
        if outcome is Outcome.SENT:
            writes.finish(row.send_id, row.enrollment_id, row.step_id, "sent", response=delivery.response, sent=True)
            report.sent += 1
        elif outcome is Outcome.UNKNOWN:
            writes.finish(row.send_id, row.enrollment_id, row.step_id, "unknown", reason=delivery.response, sent=True)
            report.unknown += 1
        elif outcome is Outcome.DEFERRED:
            attempts = row.attempts + 1
            if attempts >= self.settings.smtp.max_attempts:
                writes.finish(row.send_id, row.enrollment_id, row.step_id, "failed",
                              reason=f"gave up after {attempts} attempts: {delivery.response}")
                report.failed += 1
            else:
                writes.defer(row.send_id, now + backoff(attempts), reason=delivery.response, count_attempt=True)
                report.deferred += 1
        else:
            writes.finish(row.send_id, row.enrollment_id, row.step_id, "failed",
                          response=delivery.response, reason=delivery.response)
            report.failed += 1
            return delivery.recipient_rejected
        return False

    def _release(self, send_ids: list[int], pending: _Pending, now: datetime) -> None:
        """Stopping: record what is pending and hand back rows claimed but not started, due as
        they were."""
        stamp = ledger.naive(self.clock())
        with self._sessions.begin() as session:
            self._write(session, pending, now)
            if send_ids:
                ledger.release(session, send_ids, self.owner, stamp)


@dataclass
class _Pending:
    """What the sender decided or heard and has not written yet: it goes with the next commit."""

    writes: ledger.Writes
    bounced: list[str] = field(default_factory=list)
