"""The ledger rows `scheduling.schedule_campaign` places are exactly those of the row-by-row
definition (`next_step` + `schedule_step` per enrollment), on SQLite and PostgreSQL: same
steps, due times and variants, Message-IDs of the same form, and the same enrollments left
completed or waiting. Generated campaigns and pools cover the set-at-a-time first step (many
zones, bad and empty zones, several anchors) and the general way (paused, mid-sequence, removed
steps, nothing left).
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select

from nurture_mail import scheduling
from nurture_mail.campaigns import Audience, Campaign, Step, Variant
from nurture_mail.messages import make_message_id
from nurture_mail.models import Candidate, Enrollment, Send
from nurture_mail.schedule import SchedulePolicy
from nurture_mail.sequencing import Scheduler, next_step, schedule_step

NOW = datetime(2027, 3, 1, 9, 30, tzinfo=UTC)
ZONES = ["Europe/Berlin", "Asia/Tokyo", "America/Los_Angeles", "Asia/Kolkata", "Australia/Lord_Howe",
         "America/Sao_Paulo", "", " Europe/Berlin ", "Not/AZone", "UTC", None]
MESSAGE_ID = re.compile(r"^[0-9a-f]{12}[A-Za-z0-9_-]{16}@[a-z0-9.-]+$")


def campaign_of(policy: SchedulePolicy, steps: list[Step]) -> Campaign:
    return Campaign(
        id="drip", name="Drip", status="active", sender=None, audience=Audience(),
        schedule=policy, exit_when=frozenset(), steps=tuple(steps), path=Path("drip.yaml"),
    )


policies = st.builds(
    SchedulePolicy,
    timezone=st.sampled_from(["candidate", "candidate", "Asia/Tokyo", "America/New_York"]),
    days=st.sets(st.integers(0, 6), min_size=1).map(frozenset),
    hours=st.one_of(
        st.none(),
        st.tuples(st.integers(0, 23), st.integers(0, 23)).map(lambda h: (time(h[0]), time(h[1], 30))),
    ),
    skip_dates=st.sets(st.dates(date(2027, 2, 25), date(2027, 4, 30)), max_size=4).map(frozenset),
)
step_specs = st.lists(
    st.tuples(st.integers(0, 60 * 24 * 40), st.lists(st.integers(0, 3), max_size=3)),
    min_size=0, max_size=4,
)
# Per enrollment: zone, minutes before NOW it was enrolled (a few values: groups), how many of
# the steps it already has rows for, an optional pause, and whether it still waits.
enrollment_specs = st.lists(
    st.tuples(
        st.sampled_from(ZONES),
        st.sampled_from([0, 0, 0, 90, 60 * 24 * 3]),
        st.sampled_from([0, 0, 0, 1, 2, 5]),
        st.one_of(st.none(), st.integers(-60 * 24, 60 * 24 * 20)),
        st.sampled_from([True, True, True, False]),
    ),
    min_size=0, max_size=40,
)


def build_steps(specs) -> list[Step]:
    steps = []
    for number, (wait, weights) in enumerate(specs, start=1):
        variants = tuple(Variant(id=f"v{i}", weight=w) for i, w in enumerate(weights))
        if variants and sum(w for w in weights) == 0:
            variants = ()
        steps.append(Step(id=f"s{number}", number=number, wait=timedelta(minutes=wait),
                          template="t", variants=variants))
    return steps


def fill(db, campaign: Campaign, specs) -> None:
    """Candidates, enrollments and earlier ledger rows as the specs say."""
    stamp = NOW.replace(tzinfo=None)
    with db.sessions.begin() as s:
        for i, (zone, ago, done, pause, waiting) in enumerate(specs):
            cand = Candidate(email=f"p{i}@example.com", status="rejected", timezone=zone, attributes={},
                             token_key=f"k{i:030d}", created_at=stamp, updated_at=stamp)
            s.add(cand)
            s.flush()
            enrolled = stamp - timedelta(minutes=ago)
            # An id left over by a step since removed from the file counts as done too.
            ids = [st.id for st in campaign.steps[:done]] + (["gone"] if done == 5 else [])
            e = Enrollment(candidate_id=cand.id, campaign_id=campaign.id, state="active",
                           enrolled_at=enrolled, needs_next=waiting,
                           last_sent_at=enrolled + timedelta(hours=1) if ids else None,
                           paused_until=stamp + timedelta(minutes=pause) if pause is not None else None)
            s.add(e)
            s.flush()
            for k, step_id in enumerate(ids):
                s.add(Send(enrollment_id=e.id, campaign_id=campaign.id, candidate_id=cand.id,
                           step_id=step_id, step_number=k + 1, state="sent", due_at=enrolled,
                           message_id=f"old{e.id}-{k}@example.com", data_started=True, attempts=1,
                           created_at=enrolled, updated_at=enrolled))


def expected(db, campaign: Campaign) -> tuple[set, set]:
    """The definition: every waiting enrollment, one at a time (read with plain ORM queries)."""
    rows, completed = set(), set()
    with db.sessions() as s:
        pending = s.execute(
            select(Enrollment, Candidate).join(Candidate, Candidate.id == Enrollment.candidate_id)
            .where(Enrollment.needs_next.is_(True), Enrollment.state == "active")
        ).all()
        done: dict[int, set[str]] = {}
        for send in s.execute(select(Send)).scalars():
            done.setdefault(send.enrollment_id, set()).add(send.step_id)
    for e, cand in pending:
        step = next_step(campaign, frozenset(done.get(e.id, ())))
        if step is None:
            completed.add(e.id)
            continue
        aware = (e.last_sent_at or e.enrolled_at).replace(tzinfo=UTC)
        due = schedule_step(campaign, step, anchor=aware, candidate_key=cand.email,
                            candidate_timezone=cand.timezone, default_timezone="Europe/London",
                            not_before=e.paused_until.replace(tzinfo=UTC) if e.paused_until else None)
        rows.add((e.id, cand.id, step.id, step.number, due.variant, due.due_at.replace(tzinfo=None)))
    return rows, completed


def placed(db, campaign: Campaign) -> tuple[set, set, list[str], int]:
    stamp = NOW.replace(tzinfo=None)
    with db.sessions() as s:
        new = s.execute(select(Send).where(Send.message_id.not_like("old%"))).scalars().all()
        completed = set(s.execute(select(Enrollment.id).where(Enrollment.state == "completed")).scalars())
        waiting = s.execute(select(func.count()).select_from(Enrollment).where(Enrollment.needs_next)).scalar()
        rows = {(r.enrollment_id, r.candidate_id, r.step_id, r.step_number, r.variant, r.due_at) for r in new}
        assert all((r.state, r.attempts, r.data_started, r.updated_at) == ("scheduled", 0, False, stamp) for r in new)
        return rows, completed, [r.message_id for r in new], waiting


def impossible(campaign: Campaign) -> bool:
    """A window that never opens (e.g. a one-day allowance swallowed by skip dates)."""
    try:
        for step in campaign.steps:
            for zone in ("Europe/Berlin", "UTC"):
                Scheduler(campaign, "Europe/London").due(step, NOW, zone)
    except ValueError:
        return True
    return False


def check(db, policy, step_spec, specs) -> None:
    campaign = campaign_of(policy, build_steps(step_spec))
    if impossible(campaign):
        return
    with db.sessions.begin() as s:
        for table in (Send, Enrollment, Candidate):
            s.execute(delete(table))
    fill(db, campaign, specs)
    want_rows, want_completed = expected(db, campaign)
    got = scheduling.schedule_campaign(db, campaign, now=NOW, default_timezone="Europe/London",
                                       domain="talent.example")
    rows, completed, ids, waiting = placed(db, campaign)
    assert rows == want_rows
    assert completed == want_completed
    assert got == (len(want_rows), len(want_completed))
    assert waiting == 0
    assert len(set(ids)) == len(ids)
    assert all(MESSAGE_ID.match(m) and m.endswith("@talent.example") for m in ids)


def test_schedule_campaign_equals_the_row_by_row_definition(db):
    @settings(derandomize=True, database=None, max_examples=60, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(policies, step_specs, enrollment_specs)
    def run(policy, step_spec, specs):
        check(db, policy, step_spec, specs)

    run()


def test_first_steps_in_spans_and_groups(db, monkeypatch):
    """Several spans (a tiny span size), many zone groups, two anchors, variants on step one."""
    monkeypatch.setattr(scheduling, "FIRST_SPAN", {"sqlite": 7, "postgresql": 7})
    policy = SchedulePolicy(days=frozenset({0, 1, 2, 3}), hours=(time(9), time(17)))
    steps = [(60 * 24, [1, 2]), (60 * 24 * 10, [])]
    specs = [(ZONES[i % len(ZONES)], [0, 90][i % 2], 0, None, True) for i in range(50)]
    check(db, policy, steps, specs)
    with db.sessions() as s:
        order = s.execute(select(Send.enrollment_id).order_by(Send.id)).scalars().all()
    assert order == sorted(order)  # ledger ids follow enrollment ids: the daily-cap tie-break


def _spans_setup(db, monkeypatch, n=40, span=7):
    """A first step for `n` fresh enrollments in spans of `span`; returns the campaign."""
    monkeypatch.setattr(scheduling, "FIRST_SPAN", {"sqlite": span, "postgresql": span})
    policy = SchedulePolicy(days=frozenset(range(7)), hours=None)
    campaign = campaign_of(policy, build_steps([(60, [1, 1]), (60 * 24, [])]))
    fill(db, campaign, [(ZONES[i % len(ZONES)], 0, 0, None, True) for i in range(n)])
    return campaign


def _schedule(db, campaign):
    return scheduling.schedule_campaign(db, campaign, now=NOW, default_timezone="Europe/London",
                                        domain="talent.example")


@pytest.fixture
def pg_db(pg_url):
    from nurture_mail.database import open_database

    database = open_database(pg_url)
    yield database
    database.dispose()


def test_postgresql_places_two_first_step_spans_at_once(pg_db, monkeypatch):
    """Each of two placing threads waits at a barrier until the other has started a span too:
    placed one span after the other, the barrier breaks (its timeout only bounds a failure).
    (SQLite has one writer: its spans are placed one after the other.)"""
    import threading

    db = pg_db
    campaign = _spans_setup(db, monkeypatch)
    want_rows, _ = expected(db, campaign)
    barrier = threading.Barrier(2, timeout=30)
    threads, real, calls = set(), scheduling.enrolment.place_first_steps, itertools.count()

    def place(session, first, after, upto, most, send_ids=()):
        threads.add(threading.get_ident())
        if next(calls) < 2:  # the first two spans meet
            barrier.wait()
        return real(session, first, after, upto, most, send_ids)

    monkeypatch.setattr(scheduling.enrolment, "place_first_steps", place)
    assert _schedule(db, campaign) == (40, 0)
    rows, _, _, waiting = placed(db, campaign)
    assert rows == want_rows and waiting == 0
    assert not barrier.broken and len(threads) == 2
    with db.sessions() as s:
        order = s.execute(select(Send.enrollment_id).order_by(Send.id)).scalars().all()
    assert order == sorted(order)  # reserved ids: spans placed at once still number in order


def test_two_daemons_placing_the_same_spans_at_once_place_each_enrollment_once(pg_db, pg_url, monkeypatch):
    """Two daemons (two Database objects, each with its placing threads) schedule the same
    campaign at the same moment: each enrollment gets one first-step row, by one of them."""
    import threading

    from nurture_mail.database import open_database

    campaign = _spans_setup(pg_db, monkeypatch)
    want_rows, _ = expected(pg_db, campaign)
    other = open_database(pg_url)
    start, results, errors = threading.Barrier(2, timeout=30), [], []

    def daemon(db):
        try:
            start.wait()
            results.append(_schedule(db, campaign))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    try:
        threads = [threading.Thread(target=daemon, args=(db,)) for db in (pg_db, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        other.dispose()
    assert not errors
    assert sum(placed_count for placed_count, _ in results) == 40  # each enrollment by one daemon
    rows, _, ids, waiting = placed(pg_db, campaign)
    assert rows == want_rows and waiting == 0 and len(set(ids)) == len(ids) == 40


def test_a_failed_first_step_span_leaves_each_enrollment_placed_or_waiting(db, monkeypatch):
    campaign = _spans_setup(db, monkeypatch)
    want_rows, _ = expected(db, campaign)
    real = scheduling.enrolment.place_first_steps

    def place(session, first, after, upto, most, *more):
        if after >= 14:  # the third span and every later one
            raise RuntimeError("the database went away")
        return real(session, first, after, upto, most, *more)

    monkeypatch.setattr(scheduling.enrolment, "place_first_steps", place)
    with pytest.raises(RuntimeError, match="went away"):
        _schedule(db, campaign)
    with db.sessions() as s:
        state = s.execute(
            select(Enrollment.id, Enrollment.needs_next, func.count(Send.id))
            .outerjoin(Send, Send.enrollment_id == Enrollment.id).group_by(Enrollment.id, Enrollment.needs_next)
        ).all()
    assert {(waiting, rows) for _, waiting, rows in state} == {(False, 1), (True, 0)}
    assert sorted(e for e, waiting, _ in state if not waiting) == sorted(e for e, _, _ in state)[:14]
    monkeypatch.setattr(scheduling.enrolment, "place_first_steps", real)
    _schedule(db, campaign)  # the next tick places the rest
    rows, _, ids, waiting = placed(db, campaign)
    assert rows == want_rows and waiting == 0 and len(set(ids)) == len(ids)


def test_postgresql_first_step_rows_take_the_reserved_ids_when_there_are_enough(pg_db, monkeypatch):
    from nurture_mail.store import enrolment

    db = pg_db
    campaign = _spans_setup(db, monkeypatch, n=10, span=100)
    step = campaign.steps[0]
    first = enrolment.FirstStep(
        campaign_id=campaign.id, step_id=step.id, step_number=1,
        due=lambda zone, anchor: anchor, by_zone=True,
        message_ids=lambda n: scheduling.message_ids("talent.example", n), variant=None,
        stamp=NOW.replace(tzinfo=None),
    )
    with db.sessions.begin() as s:
        top = s.execute(select(func.max(Enrollment.id))).scalar()
        few = enrolment.reserve_send_ids(s, 3)
        assert enrolment.place_first_steps(s, first, 0, top - 5, 5, few) == 5  # 3 ids for 5 rows
        enough = enrolment.reserve_send_ids(s, 8)
        assert enough == sorted(enough) and min(enough) > max(few)
        assert enrolment.place_first_steps(s, first, top - 5, top, 5, enough) == 5
        got = s.execute(select(Send.enrollment_id, Send.id).order_by(Send.enrollment_id)).all()
    assert [i for _, i in got[5:]] == enough[:5]  # in enrollment order
    assert not set(few) & {i for _, i in got}  # too few: the sequence numbered those rows


def test_an_impossible_schedule_raises_its_own_error(db):
    policy = SchedulePolicy(days=frozenset({0}), skip_dates=frozenset(
        date(2027, 3, 1) + timedelta(days=7 * k) for k in range(120)))
    campaign = campaign_of(policy, build_steps([(0, [])]))
    fill(db, campaign, [("UTC", 0, 0, None, True)])
    with pytest.raises(ValueError, match="no send window"):
        scheduling.schedule_campaign(db, campaign, now=NOW, default_timezone="UTC", domain="talent.example")
    with db.sessions() as s:
        assert s.execute(select(func.count()).select_from(Send)).scalar() == 0
        assert s.execute(select(Enrollment.needs_next)).scalar() is True


def test_message_ids_have_the_form_of_make_message_id(monkeypatch):
    from nurture_mail import messages

    moment = 1_780_000_000_123  # ms since 1970 (2026-05-28)
    monkeypatch.setattr(messages, "_clock", lambda: moment * 1_000_000 + 999_999)
    ids = scheduling.message_ids("bücher.example", 2000)
    assert len(set(ids)) == 2000
    reference = make_message_id("bücher.example")
    assert all(len(m) == len(reference) and m.endswith("@xn--bcher-kva.example") for m in ids)
    assert all(MESSAGE_ID.match(m) for m in ids + [reference])
    assert {m[:12] for m in ids + [reference]} == {f"{moment:012x}"}  # the moment, in ms
    # Every one of the 96 random bits varies: each of the 16 characters takes many values.
    for position in range(12, 28):
        assert len({m[position] for m in ids}) > 40
    assert scheduling.message_ids("talent.example", 0) == []


def test_message_ids_made_later_sort_after_earlier_ones(monkeypatch):
    """So the unique index on message_id grows at its end (the time prefix)."""
    from nurture_mail import messages

    made = []
    for moment in (1_780_000_000_000, 1_780_000_000_001, 1_780_000_086_400):
        monkeypatch.setattr(messages, "_clock", lambda moment=moment: moment * 1_000_000)
        made.append(sorted(scheduling.message_ids("talent.example", 300)) + [make_message_id("talent.example")])
    for earlier, later in zip(made, made[1:], strict=False):
        assert max(earlier) < min(later)
