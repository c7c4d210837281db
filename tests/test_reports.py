"""Report arithmetic on hand-built ledgers with known answers, on SQLite and PostgreSQL:
counts, delivered and reply rates per campaign, step and variant; percentiles of time to reply;
exits; weekly series; --since boundaries with time zones; the warm pool; the z-test."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta

import pytest

from nurture_mail import pool_report, reports
from nurture_mail.durations import parse_instant
from nurture_mail.reports import VariantReport, compare_variants, two_proportion_z
from nurture_mail.warmth import SORTS, PoolFilter

from .report_ledger import T0, H, Ledger, build_alpha, utc

NOW = utc(T0 + 30 * timedelta(days=1))


@pytest.fixture(params=[True, False], ids=["copies", "ledger"])
def alpha(db, request):
    """The known-answer ledger, its inbound rows counted from the copies of their sends (as
    reply_sync stores them) or from the sends themselves (as for messages matched while
    their send was on the wire): the same report either way."""
    return build_alpha(db, copies=request.param)


def by_id(items, key):
    return {i["id"]: i for i in items}[key]


def report_json(db, **kwargs):
    return reports.to_json(reports.gather(db, now=NOW, **kwargs))


def test_campaign_step_and_variant_counts(db, alpha):
    out = report_json(db)
    assert [c["id"] for c in out["campaigns"]] == ["alpha", "beta", "gamma"]
    a = by_id(out["campaigns"], "alpha")
    assert a["name"] == "Alpha <campaign>"
    assert {k: a[k] for k in ("enrolled", "active", "sent", "delivered", "replied", "auto_replies",
                               "bounced", "bounced_hard", "bounced_soft", "unsubscribed", "failed",
                               "unknown", "deferred", "scheduled")} == {
        "enrolled": 10, "active": 4, "sent": 9, "delivered": 7, "replied": 4, "auto_replies": 1,
        "bounced": 2, "bounced_hard": 1, "bounced_soft": 1, "unsubscribed": 1, "failed": 1,
        "unknown": 1, "deferred": 1, "scheduled": 1,
    }
    assert a["reply_rate"] == round(4 / 7, 4)
    assert a["exits"] == {"bounced": 1, "replied": 4, "unsubscribed": 1}
    assert [s["id"] for s in a["steps"]] == ["s1", "s2"]

    s1 = by_id(a["steps"], "s1")
    # A soft bounce and then a reply (c5): replied, not bounced. Failed and unknown: not sent.
    assert (s1["sent"], s1["delivered"], s1["replied"], s1["bounced"]) == (8, 6, 3, 2)
    assert (s1["failed"], s1["unknown"], s1["auto_replies"]) == (1, 1, 1)
    assert s1["reply_rate"] == 0.5
    assert s1["exits"] == {"bounced": 1, "replied": 3, "unsubscribed": 1}
    assert s1["unsubscribed"] == 1
    va, vb = s1["variants"]
    assert (va["id"], va["sent"], va["delivered"], va["replied"], va["failed"]) == ("a", 4, 3, 1, 1)
    assert (vb["id"], vb["sent"], vb["delivered"], vb["replied"], vb["unknown"]) == ("b", 4, 3, 2, 1)
    assert va["reply_rate"] == round(1 / 3, 4) and vb["reply_rate"] == round(2 / 3, 4)
    assert (va["bounced_soft"], vb["bounced_hard"]) == (1, 1)
    assert s1["variant_test"]["leader"] == "b"
    assert s1["variant_test"]["significant"] is False
    assert "not significant yet" in s1["variant_test"]["note"]

    s2 = by_id(a["steps"], "s2")
    assert (s2["sent"], s2["replied"], s2["reply_rate"], s2["scheduled"], s2["deferred"]) == (1, 1, 1.0, 1, 1)
    assert s2["variants"] == [] and s2["variant_test"] is None


def test_zero_sends_and_all_bounced(db, alpha):
    out = report_json(db)
    beta = by_id(out["campaigns"], "beta")
    assert (beta["enrolled"], beta["active"], beta["sent"], beta["replied"]) == (2, 2, 0, 0)
    assert beta["reply_rate"] is None and beta["median_reply_seconds"] is None
    assert beta["steps"] == []
    gamma = by_id(out["campaigns"], "gamma")
    assert (gamma["sent"], gamma["bounced"], gamma["bounced_hard"], gamma["delivered"]) == (3, 3, 3, 0)
    assert gamma["reply_rate"] is None  # nothing delivered: no rate, not 0% and not a crash
    assert gamma["exits"] == {"bounced": 3} and gamma["active"] == 0


def test_unmatched_inbound_does_not_count(db, alpha):
    # c7 replied without a send_id, a stranger replied, c9 answered a send of unknown fate,
    # and an "other" message is matched to c6's send: none of them is a reply in the rates.
    led: Ledger = alpha["ledger"]
    before = report_json(db)
    led.inbound("reply", T0 + 3 * H, candidate=alpha["c"][8], campaign="alpha", text="no send")
    after = report_json(db)
    assert before["campaigns"] == after["campaigns"]
    assert by_id(after["campaigns"], "alpha")["replied"] == 4


def test_a_send_with_copied_and_looked_up_messages_counts_once(db):
    """A reply matched while its send was on the wire carries no sent_at (the report reads the
    send); a later one carries the copies. The send counts once per kind either way, its time
    to reply from its first reply, whichever way that one was stored."""
    led = Ledger(db)
    led.campaign("mix", ["s1"])
    sends = []
    for i in range(3):
        cand = led.candidate(f"m{i}@example.com")
        sends.append((cand, led.send(led.enrol(cand, "mix"), cand, "mix", "s1", at=T0, variant="a")))
    (c0, s0), (c1, s1), (c2, s2) = sends
    led.inbound("reply", T0 + 1 * H, send=s0, candidate=c0, campaign="mix", copies=False)
    led.inbound("reply", T0 + 3 * H, send=s0, candidate=c0, campaign="mix")
    led.inbound("reply", T0 + 2 * H, send=s1, candidate=c1, campaign="mix")
    led.inbound("reply", T0 + 5 * H, send=s1, candidate=c1, campaign="mix", copies=False)
    led.inbound("auto_reply", T0 + H, send=s1, candidate=c1, campaign="mix", copies=False)
    led.inbound("auto_reply", T0 + H, send=s1, candidate=c1, campaign="mix")
    led.inbound("bounce", T0 + H, send=s2, candidate=c2, campaign="mix", bounce="soft")
    led.inbound("bounce", T0 + 2 * H, send=s2, candidate=c2, campaign="mix", bounce="hard", copies=False)
    mix = by_id(report_json(db)["campaigns"], "mix")
    assert (mix["sent"], mix["replied"], mix["auto_replies"], mix["bounced"], mix["bounced_hard"]) == (3, 2, 1, 1, 1)
    (variant,) = by_id(mix["steps"], "s1")["variants"]
    assert (variant["id"], variant["replied"]) == ("a", 2)
    assert mix["median_reply_seconds"] == 1.5 * 3600  # first replies after 1 h and 2 h


def test_time_to_reply_percentiles(db, alpha):
    a = by_id(report_json(db)["campaigns"], "alpha")
    s1 = by_id(a["steps"], "s1")
    # s1 first replies after 1h, 3h and 2h (c0's second reply is not its first).
    assert (s1["median_reply_seconds"], s1["p90_reply_seconds"]) == (7200, 10080)
    va, vb = s1["variants"]
    assert (va["median_reply_seconds"], va["p90_reply_seconds"]) == (3600, 3600)
    assert (vb["median_reply_seconds"], vb["p90_reply_seconds"]) == (9000, 10440)
    s2 = by_id(a["steps"], "s2")
    assert s2["median_reply_seconds"] == s2["p90_reply_seconds"] == 2 * 86400
    # 1h, 2h, 3h, 2d: percentile_cont's linear interpolation.
    assert (a["median_reply_seconds"], a["p90_reply_seconds"]) == (9000, 124200)


def test_weekly_series(db, alpha):
    weekly = reports.gather(db, now=NOW).weekly
    # gamma's sends on Sunday 23:30 belong to the week of Monday 4 January.
    assert weekly == [(date(2027, 1, 4), 11, 3), (date(2027, 1, 11), 1, 1)]


@pytest.mark.parametrize(
    "since,s1_sent,s1_replied",
    [
        ("2027-01-04T11:00:00Z", 6, 1),  # exactly c2's send: included
        ("2027-01-04T13:00:00+02:00", 6, 1),  # the same instant in another zone
        ("2027-01-04T11:00:00", 6, 1),  # naive: UTC
        ("2027-01-04T11:00:01Z", 5, 1),  # one second later: c2 out
        ("2027-01-04T10:59:59+01:00", 7, 2),  # a second before c1 (UTC+1): c1 and its reply in
        ("2027-01-04", 8, 3),
        ("2027-02-01", 0, 0),
    ],
)
def test_since_boundaries(db, alpha, since, s1_sent, s1_replied):
    out = report_json(db, since=parse_instant(since))
    a = by_id(out["campaigns"], "alpha")
    s1 = next((s for s in a["steps"] if s["id"] == "s1" and s["sent"] + s["failed"] + s["unknown"]), None)
    assert (s1["sent"] if s1 else 0, s1["replied"] if s1 else 0) == (s1_sent, s1_replied)


def test_since_counts_the_cohort(db, alpha):
    out = report_json(db, since=utc(T0 + 2 * H))
    a = by_id(out["campaigns"], "alpha")
    s1 = by_id(a["steps"], "s1")
    assert (s1["sent"], s1["failed"], s1["unknown"], s1["delivered"], s1["reply_rate"]) == (6, 1, 1, 4, 0.25)
    assert out["since"] == "2027-01-04T11:00:00Z"
    # Enrolments count from the day they started (before --since here); exits when they happened.
    assert (a["enrolled"], a["exits"]["replied"]) == (0, 4)
    later = report_json(db, since=utc(T0 + 10 * timedelta(days=1)))
    assert by_id(later["campaigns"], "alpha")["sent"] == 0


def test_one_campaign_and_an_unknown_one(db, alpha):
    out = report_json(db, campaign="gamma")
    assert [c["id"] for c in out["campaigns"]] == ["gamma"]
    assert out["weekly"] == [{"week": "2027-01-04", "sent": 3, "replied": 0}]
    from nurture_mail.errors import NotFound

    with pytest.raises(NotFound, match="no campaign 'nope'"):
        reports.gather(db, now=NOW, campaign="nope")


def test_an_empty_database(db):
    out = report_json(db)
    assert out["campaigns"] == [] and out["weekly"] == []
    assert pool_report.to_json(pool_report.gather_pool(db, now=NOW))["counts"] == {
        "warm": 0, "cooling": 0, "cold": 0}


# --- the pool -----------------------------------------------------------------------------------


def pool(db, now=NOW, **kwargs):
    return pool_report.gather_pool(db, now=now, **kwargs)


def test_pool_groups(db, alpha):
    result = pool(db)
    groups = {r["email"]: r["group"] for r in result.rows}
    warm = {f"c{i}@example.com" for i in (0, 1, 5, 6, 7, 9)}
    assert {e for e, g in groups.items() if g == "warm"} == warm
    assert {e for e, g in groups.items() if g == "cold"} == {"c8@example.com", "b0@example.com", "b1@example.com"}
    assert result.counts == {"warm": 6, "cooling": 6, "cold": 3}
    rows = {r["email"]: r for r in result.rows}
    assert rows["c0@example.com"]["reply"] == "Also..."  # the latest reply
    assert rows["c1@example.com"]["reply"] == "Yes"  # quoted lines skipped
    assert rows["c0@example.com"]["last_reply"] == "2027-01-04T14:00:00Z"
    assert rows["c6@example.com"]["last_contact"] == "2027-01-11T09:00:00Z"
    assert rows["c8@example.com"]["last_contact"] is None  # failed: never reached them
    assert rows["c0@example.com"]["tags"] == ["python"]
    # The default order: warm, cooling, cold; newest reply first inside a group.
    order = [r["group"] for r in result.rows]
    assert order == sorted(order, key=["warm", "cooling", "cold"].index)
    assert result.rows[0]["email"] == "c6@example.com"


def test_pool_limited_in_sql(db, alpha):
    # The HTML page asks for the first rows only (their names and status read for them alone);
    # the group counts still cover everyone.
    everyone = pool(db)
    for sort in SORTS:
        first = pool(db, sort=sort, limit=4)
        assert first.rows == pool(db, sort=sort).rows[:4]
        assert first.counts == everyone.counts == {"warm": 6, "cooling": 6, "cold": 3}
        assert first.total == 15
    assert pool(db, where=PoolFilter(group="cold"), limit=1).counts == {"warm": 0, "cooling": 0, "cold": 3}
    assert pool(db, where=PoolFilter(tags=("nope",)), limit=5).counts == {"warm": 0, "cooling": 0, "cold": 0}


def test_the_html_page_reads_the_report_and_the_pool_together(db, alpha):
    """`report_html.gather_page` (the pool in a second thread): what the two reads give one
    after the other, for every campaign filter and pool order it is asked for."""
    from nurture_mail.report_html import POOL_ROWS_SHOWN, gather_page

    for campaign, sort in ((None, "group"), ("alpha", "email"), ("gamma", "last-reply")):
        result, warm = gather_page(db, now=NOW, campaign=campaign, sort=sort, warm_days=10, cold_days=40)
        assert reports.to_json(result) == report_json(db, campaign=campaign)
        alone = pool(db, where=PoolFilter(campaign=campaign), sort=sort, warm_days=10, cold_days=40,
                     limit=POOL_ROWS_SHOWN)
        assert pool_report.to_json(warm) == pool_report.to_json(alone)
        assert warm.total == alone.total > 0


def test_the_html_page_raises_what_its_pool_read_raised(db, alpha, monkeypatch):
    from nurture_mail import errors
    from nurture_mail.report_html import gather_page

    def broken(*args, **kwargs):
        raise errors.NurtureError("the pool read failed")

    monkeypatch.setattr(pool_report, "gather_pool", broken)
    with pytest.raises(errors.NurtureError, match="the pool read failed"):
        gather_page(db, now=NOW)
    # A report error (an unknown campaign) is the caller's, once the pool read is done.
    monkeypatch.undo()
    with pytest.raises(errors.NotFound):
        gather_page(db, now=NOW, campaign="nope")


def test_pool_ages_with_the_clock(db, alpha):
    day = timedelta(days=1)
    later = {r["email"]: r["group"] for r in pool(db, now=utc(T0 + 100 * day)).rows}
    assert later["c0@example.com"] == "cooling"  # reply older than 90 days, contact within 180
    much_later = {r["email"]: r["group"] for r in pool(db, now=utc(T0 + 200 * day)).rows}
    assert much_later["c0@example.com"] == "cold"
    assert set(much_later.values()) == {"cold"}
    tight = {r["email"]: r["group"] for r in pool(db, warm_days=1, cold_days=5).rows}
    assert tight["c6@example.com"] == "cold"


def test_pool_filters_and_sorts(db, alpha):
    dana = pool(db, where=PoolFilter(owner="DANA"))
    assert {r["email"] for r in dana.rows} == {
        "c0@example.com", "c2@example.com", "c4@example.com", "c6@example.com", "c8@example.com",
        "b0@example.com", "b1@example.com"}
    assert {r["email"] for r in pool(db, where=PoolFilter(tags=("python",))).rows} == {
        f"c{i}@example.com" for i in range(5)}
    assert pool(db, where=PoolFilter(tags=("python", "nope"))).rows == []
    assert {r["email"] for r in pool(db, where=PoolFilter(campaign="beta")).rows} == {
        "b0@example.com", "b1@example.com"}
    assert [r["group"] for r in pool(db, where=PoolFilter(group="cold")).rows] == ["cold"] * 3
    by_reply = [r["email"] for r in pool(db, sort="last-reply").rows][:6]
    assert by_reply == [f"c{i}@example.com" for i in (6, 7, 9, 5, 0, 1)]
    emails = [r["email"] for r in pool(db, sort="email").rows]
    assert emails == sorted(emails)


# --- the z-test (pure) --------------------------------------------------------------------------


def variant(vid, replied, delivered):
    stats = reports.Stats({**reports.EMPTY.counts, "replied": replied}, delivered,
                          replied / delivered if delivered else None)
    return VariantReport(vid, stats)


def test_two_proportion_z_known_value():
    # 30/100 vs 15/100: pooled p = 0.225, se = sqrt(.225 * .775 * .02) = 0.05906
    assert two_proportion_z(30, 100, 15, 100) == pytest.approx(0.15 / math.sqrt(0.225 * 0.775 * 0.02))
    assert two_proportion_z(0, 0, 1, 10) is None
    assert two_proportion_z(0, 10, 0, 10) is None


@pytest.mark.parametrize(
    "a,b,significant,phrase",
    [
        ((30, 100), (15, 100), True, "a beats b"),
        ((20, 100), (15, 100), False, "not significant yet"),
        ((5, 10), (0, 10), False, "too few sends"),
        ((0, 50), (0, 50), False, "not significant yet"),
    ],
)
def test_variant_comparison(a, b, significant, phrase):
    result = compare_variants([variant("b", *b), variant("a", *a)])
    assert result.significant is significant
    assert phrase in result.note
    assert compare_variants([variant("a", *a)]) is None


def test_human_duration():
    assert reports.human_duration(None) == "–"
    assert reports.human_duration(40 * 60) == "40m"
    assert reports.human_duration(3 * 3600 + 12 * 60) == "3h 12m"
    assert reports.human_duration(2 * 86400 + 3600 * 4) == "2d 4h"
    assert reports.human_duration(86400) == "1d"


def test_report_times_are_utc(db, alpha):
    out = report_json(db)
    assert out["as_of"] == "2027-02-03T09:00:00Z"
    assert datetime.fromisoformat(out["as_of"]).utcoffset() == timedelta(0)


def _percentile_cont(values: list[float], p: float) -> float:
    """percentile_cont: linear interpolation between the values around 1 + p * (n - 1)."""
    ordered = sorted(values)
    at = 1 + p * (len(ordered) - 1)
    low = int(at)
    fraction = at - low
    upper = ordered[low] if low < len(ordered) else 0.0
    return ordered[low - 1] * (1 - fraction) + upper * fraction


def test_percentiles_match_percentile_cont_on_random_delays(db):
    # Many delays per hour of delay, ties, exact hours, a later second reply: SQLite's
    # histogram-then-exact path must give PostgreSQL's percentile_cont at every level.
    import random

    rng = random.Random(7)
    led = Ledger(db)
    led.campaign("rand", ["s1", "s2"])
    delays: dict[tuple[str, str | None], list[float]] = {}
    for i in range(90):
        cand = led.candidate(f"r{i}@example.com")
        enrollment = led.enrol(cand, "rand")
        step, variant = ("s1", "ab"[i % 2]) if i % 3 else ("s2", None)
        sent_at = T0 + (i % 5) * H
        send = led.send(enrollment, cand, "rand", step, at=sent_at, variant=variant,
                        number=1 if step == "s1" else 2)
        if i % 7 == 0:
            continue  # no reply
        # Exact hours, a spread, one hour's worth of near ties, and replies stamped before
        # their send (a clock off by minutes): a negative delay.
        seconds = rng.choice([3600, 7200, rng.randrange(0, 3 * 86400), rng.randrange(3000, 4000),
                              rng.randrange(-5000, 0)])
        led.inbound("reply", sent_at + timedelta(seconds=seconds), send=send, candidate=cand, campaign="rand")
        led.inbound("reply", sent_at + timedelta(seconds=seconds + 600), send=send, candidate=cand, campaign="rand")
        delays.setdefault((step, variant), []).append(float(seconds))
    # A bounce of no known type counts as soft.
    cand = led.candidate("untyped@example.com")
    send = led.send(led.enrol(cand, "rand"), cand, "rand", "s2", number=2)
    led.inbound("bounce", T0 + H, send=send, candidate=cand, campaign="rand")
    result = reports.gather(db, now=NOW)
    (campaign,) = result.campaigns

    def check(stats, values):
        assert stats.median_reply == pytest.approx(_percentile_cont(values, 0.5))
        assert stats.p90_reply == pytest.approx(_percentile_cont(values, 0.9))

    assert (campaign.stats.counts["bounced"], campaign.stats.counts["bounced_soft"]) == (1, 1)
    check(campaign.stats, [d for values in delays.values() for d in values])
    for step in campaign.steps:
        check(step.stats, [d for (s, _), values in delays.items() if s == step.id for d in values])
        for v in step.variants:
            check(v.stats, delays[(step.id, v.id)])


def test_reply_times_from_hours_are_percentile_cont():
    # The pure half of the SQLite path: hours of delay, then the exact delays of the wanted
    # hours only, give percentile_cont exactly.
    import random

    from nurture_mail import reply_times

    rng = random.Random(3)
    assert reply_times.percentiles({}, {}) == (None, None)
    for n in (1, 2, 3, 4, 9, 10, 11, 250):
        values = [rng.choice([3600.0, -60.0, 0.0, rng.uniform(-7200, 5 * 86400)]) for _ in range(n)]
        hours: dict[int, int] = {}
        exact: dict[int, list[float]] = {}
        for v in values:
            hour = int(v / 3600)  # truncated, as SQLite's CAST does
            hours[hour] = hours.get(hour, 0) + 1
            exact.setdefault(hour, []).append(v)
        wanted = reply_times.wanted_hours(hours)
        assert len(wanted) <= 4
        median, p90 = reply_times.percentiles(hours, {h: exact[h] for h in wanted})
        assert median == pytest.approx(_percentile_cont(values, 0.5))
        assert p90 == pytest.approx(_percentile_cont(values, 0.9))


def test_report_leaves_no_temporary_tables(db, alpha):
    # The tally's temporary tables go with the report: a pooled connection does not keep them.
    reports.gather(db, now=NOW)
    reports.gather(db, now=NOW, campaign="alpha")
    temporary = {
        "sqlite": "SELECT name FROM sqlite_temp_master",
        "postgresql": "SELECT relname FROM pg_class WHERE relnamespace = pg_my_temp_schema()",
    }[db.dialect]
    with db.engine.connect() as conn:  # the pool's last connection: the one the report used
        assert conn.exec_driver_sql(temporary).all() == []


def test_the_html_page_of_an_in_memory_database_reads_its_pool_in_the_same_thread():
    """An in-memory SQLite database is one per connection: a second thread would see an
    empty one without tables, so `gather_page` reads the pool where the report is read."""
    from nurture_mail.database import open_database
    from nurture_mail.report_html import gather_page

    db = open_database("sqlite://")
    try:
        Ledger(db).candidate("solo@example.com")
        result, warm = gather_page(db, now=NOW)
        assert result.campaigns == [] and warm.counts == {"warm": 0, "cooling": 0, "cold": 1}
    finally:
        db.dispose()
