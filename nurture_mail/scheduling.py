"""Placing next steps in the ledger, one campaign at a time: `schedule_campaign`.

What every tick does after enrolling (`Engine._schedule`). The rows are exactly those that
`sequencing.next_step` and `sequencing.schedule_step` give enrollment by enrollment (same step,
due time and variant; a new Message-ID of the same form as `messages.make_message_id`); they
are only made faster, which matters when a campaign enrols a million candidates at once:

* the due time depends on the time zone, the anchor (enrolment or last send) and any pause, so
  it is computed once per group of enrollments that share them (`sequencing.Scheduler`);
* enrollments with no ledger row yet and no pause get their first step set-at-a-time inside
  the database (`enrolment.place_first_steps`), in spans of `FIRST_SPAN` per transaction
  (PostgreSQL: `PLACERS` spans at once, `_first_steps_in_parallel`);
* everything else (a next step after a send, a paused enrollment, a step that was removed) is
  read in batches of `BATCH` and placed from Python, with Message-IDs made in bulk.

Each span or batch is one transaction, so a crash leaves every enrollment either placed (its
ledger row and Message-ID made together) or still waiting.
"""

from __future__ import annotations

import base64
import os
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime

from .campaigns import Campaign
from .database import Database
from .messages import make_message_id, time_prefix
from .sequencing import Scheduler, next_step, variant_for
from .store import enrolment
from .store.ledger import aware, naive

# Waiting enrollments per first-step transaction. SQLite: big spans write the message_id index
# in fewer sweeps (a 250,000 span holds the write lock about 5 s). PostgreSQL: the span's rows
# pass through Python, so smaller spans bound the daemon's memory.
FIRST_SPAN = {"sqlite": 250_000, "postgresql": 50_000}
BATCH = 5000  # enrollments per transaction on the general way
# PostgreSQL: connections that place first-step spans at once (`_first_steps_in_parallel`).
PLACERS = 2
# PostgreSQL plans the claims that follow from its statistics of `sends`; autovacuum renews
# them a minute or more after big writes (never, where it is off). Planned for the table as it
# was before a campaign placed a first step for 200,000 candidates, each claim of 256 rows read
# and sorted all of them (50 ms; 5 ms in index order). So scheduling that places this many rows
# runs ANALYZE, which samples a bounded number of rows: ~0.1 s.
ANALYZE_AFTER = 10_000
_MAX_ROUNDS = 1_000_000  # more spans or batches than any pool needs: a loop guard only
_UNSET = object()


def message_ids(domain: str, count: int) -> list[str]:
    """`count` new Message-IDs, each as `messages.make_message_id(domain)` makes one (the
    moment's `time_prefix`, 96 random bits as 16 URL-safe base64 characters, then @ and the
    domain in ASCII), made in bulk: every 12 random bytes encode to 16 characters of their own."""
    if count <= 0:
        return []
    suffix = "@" + make_message_id(domain).split("@", 1)[1]
    prefix = time_prefix()
    text = base64.urlsafe_b64encode(os.urandom(12 * count)).decode("ascii")
    return [prefix + text[i : i + 16] + suffix for i in range(0, 16 * count, 16)]


def schedule_campaign(
    db: Database, campaign: Campaign, *, now: datetime, default_timezone: str, domain: str
) -> tuple[int, int]:
    """Give every enrollment of `campaign` that waits for its next step a ledger row for it, or
    complete it when no step is left. Returns (rows placed, enrollments completed)."""
    stamp = naive(now)
    scheduler = Scheduler(campaign, default_timezone)
    placed = _first_steps(db, campaign, scheduler, stamp, domain)
    more, completed = _next_steps(db, campaign, scheduler, stamp, domain)
    if placed + more >= ANALYZE_AFTER and db.dialect == "postgresql":
        _analyze_ledger(db)
    return placed + more, completed


def _analyze_ledger(db: Database) -> None:
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE sends")


def _first_steps(db: Database, campaign: Campaign, scheduler: Scheduler, stamp: datetime, domain: str) -> int:
    """Fresh enrollments (no ledger row, no pause): their first step, set-at-a-time."""
    step = next_step(campaign, frozenset())
    if step is None:
        return 0
    first = enrolment.FirstStep(
        campaign_id=campaign.id,
        step_id=step.id,
        step_number=step.number,
        due=lambda zone, anchor: naive(scheduler.due(step, aware(anchor), zone)[0]),
        by_zone=campaign.schedule.timezone == "candidate",
        message_ids=lambda n: message_ids(domain, n),
        variant=(lambda key: variant_for(step, key)) if step.variants else None,
        stamp=stamp,
    )
    if db.dialect == "postgresql":
        return _first_steps_in_parallel(db, first)
    placed, after = 0, 0
    for _ in range(_MAX_ROUNDS):
        with db.sessions.begin() as session:
            upto, count = enrolment.waiting_span(session, campaign.id, after, FIRST_SPAN[db.dialect])
            if not count:
                return placed
            placed += enrolment.place_first_steps(session, first, after, upto, count)
        after = upto
    raise AssertionError("unreachable: spans advance through a finite table")


def _first_steps_in_parallel(db: Database, first: enrolment.FirstStep) -> int:
    """PostgreSQL: spans placed by `PLACERS` connections at once, each span its own
    transaction as above. Most of a span's time is the server's (the rows inserted, their
    foreign keys checked, `needs_next` cleared), and psycopg lets go of the GIL while it
    waits, so a second server process works meanwhile.

    This thread finds the spans in order (disjoint ranges of enrollment ids; each transaction
    checks again that its enrollments still wait) and reserves each one's ledger ids before
    handing it on, so that the ledger ids still follow enrollment ids across spans. At most
    `PLACERS` spans are handed on ahead: their rows pass through Python."""
    placed, after = 0, 0
    running: list[Future] = []
    # At most PLACERS spans are submitted, so each starts at once: on an error the loop stops
    # and the spans not yet found stay waiting, for the next tick.
    with db.sessions() as session, ThreadPoolExecutor(PLACERS, thread_name_prefix="nurture-place") as pool:
        for _ in range(_MAX_ROUNDS):
            upto, count = enrolment.waiting_span(session, first.campaign_id, after, FIRST_SPAN[db.dialect])
            if not count:
                break
            ids = enrolment.reserve_send_ids(session, count)
            session.commit()  # the next span is read in a fresh snapshot
            if len(running) >= PLACERS:
                placed += running.pop(0).result()
            running.append(pool.submit(_place_span, db, first, after, upto, count, ids))
            after = upto
        for future in running:
            placed += future.result()
    return placed


def _place_span(db: Database, first: enrolment.FirstStep, after: int, upto: int, count: int,
                ids: list[int]) -> int:
    with db.sessions.begin() as session:
        return enrolment.place_first_steps(session, first, after, upto, count, ids)


def _next_steps(
    db: Database, campaign: Campaign, scheduler: Scheduler, stamp: datetime, domain: str
) -> tuple[int, int]:
    """Every other waiting enrollment, in batches placed from Python."""
    placed = completed = 0
    steps: dict[frozenset[str], object] = {}
    for _ in range(_MAX_ROUNDS):
        with db.sessions.begin() as session:
            pending = enrolment.needing_next(session, campaign.id, BATCH)
            if not pending:
                return placed, completed
            rows, finished = [], []
            ids = iter(message_ids(domain, len(pending)))
            for p in pending:
                step = steps.get(p.done, _UNSET)
                if step is _UNSET:
                    if len(steps) > 10_000:  # distinct progress states: a handful in practice
                        steps.clear()
                    step = steps[p.done] = next_step(campaign, p.done)
                if step is None:
                    finished.append(p.enrollment_id)
                    continue
                due = scheduler.schedule(
                    step, anchor=p.anchor, candidate_key=p.email, candidate_timezone=p.timezone,
                    not_before=p.paused_until,
                )
                rows.append(
                    enrolment.new_send_row(
                        enrollment_id=p.enrollment_id,
                        campaign_id=campaign.id,
                        candidate_id=p.candidate_id,
                        step_id=step.id,
                        step_number=step.number,
                        variant=due.variant,
                        due_at=due.due_at,
                        message_id=next(ids),
                        stamp=stamp,
                    )
                )
            enrolment.add_sends(session, rows, finished, stamp)
            placed += len(rows)
            completed += len(finished)
    raise AssertionError("unreachable: every batch clears the enrollments it read")

