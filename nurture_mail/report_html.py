"""The HTML report: one self-contained page (inline CSS and SVG, no scripts, no external
assets) from `report_templates/report.html`, rendered with autoescaping Jinja2.

The same page is `nurture report --format html` and the live dashboard of `nurture serve`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from . import charts, pool_report, reports
from .pool_report import PoolReport
from .reports import Report, StepReport, human_duration, percent
from .warmth import COLD_DAYS, WARM_DAYS, PoolFilter

# Past this many candidates the page shows the first ones and says where the rest are.
POOL_ROWS_SHOWN = 500


@dataclass(frozen=True)
class VariantChart:
    campaign: str
    step: str
    svg: Markup
    note: str
    significant: bool


@cache
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("nurture_mail", "report_templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["percent"] = percent
    env.filters["duration"] = human_duration
    return env


def gather_page(
    db,
    *,
    now: datetime,
    since: datetime | None = None,
    campaign: str | None = None,
    warm_days: int = WARM_DAYS,
    cold_days: int = COLD_DAYS,
    sort: str = "group",
) -> tuple[Report, PoolReport]:
    """The report and the first rows of the pool that the page shows, read at once: the pool
    on a connection of its own in a second thread (the databases work without the GIL, and
    each read takes about as long as the other). The report is one snapshot and the pool
    another, a moment apart: two sections of one page."""
    found: dict = {}

    def read_pool() -> None:
        try:
            found["pool"] = pool_report.gather_pool(
                db, now=now, warm_days=warm_days, cold_days=cold_days,
                where=PoolFilter(campaign=campaign), sort=sort, limit=POOL_ROWS_SHOWN)
        except BaseException as exc:  # noqa: BLE001 - raised again by the caller's thread
            found["error"] = exc

    worker = None
    if not db.shared_across_threads:
        read_pool()
    else:
        worker = threading.Thread(target=read_pool, name="nurture-report-pool", daemon=True)
        worker.start()
    try:
        result = reports.gather(db, now=now, since=since, campaign=campaign)
    finally:
        if worker is not None:
            worker.join()
    if "error" in found:
        raise found["error"]
    return result, found["pool"]


def _step_label(campaign: str, step: StepReport, many: bool) -> str:
    return f"{campaign} · {step.id}" if many else step.id


def _rate_text(replied: int, delivered: int, rate: float | None) -> str:
    return f"{percent(rate)}  ({replied}/{delivered})"


def report_charts(report: Report) -> dict:
    """Every chart of the page, as inline SVG."""
    many = len(report.campaigns) > 1
    step_bars = [
        charts.Bar(_step_label(c.id, s, many), s.stats.reply_rate or 0.0,
                   _rate_text(s.stats.replied, s.stats.delivered, s.stats.reply_rate))
        for c in report.campaigns
        for s in c.steps
        if s.stats.delivered
    ]
    top_rate = max((b.value for b in step_bars), default=0.0)
    variants = []
    for c in report.campaigns:
        for s in c.steps:
            if s.test is None:
                continue
            bars = [
                charts.Bar(f"variant {v.id}", v.stats.reply_rate or 0.0,
                           _rate_text(v.stats.replied, v.stats.delivered, v.stats.reply_rate))
                for v in s.variants
            ]
            svg = charts.bar_chart(bars, f"Reply rate by variant: {c.id} / {s.id}",
                                   maximum=max(1e-9, max(b.value for b in bars)), color=charts.REPLY)
            variants.append(VariantChart(c.id, s.id, svg, s.test.note, s.test.significant))
    funnels = []
    for c in report.campaigns:
        bars = [charts.Bar("enrolled", c.enrolled, str(c.enrolled)),
                charts.Bar("still active", c.active, str(c.active))]
        bars += [charts.Bar(f"left: {reason}", n, str(n)) for reason, n in
                 sorted(c.exits.items(), key=lambda kv: (-kv[1], kv[0]))]
        funnels.append((c.id, charts.bar_chart(bars, f"Enrolments and exits: {c.id}",
                                               maximum=max(1, c.enrolled, *(b.value for b in bars)))))
    return {
        "weekly": charts.weekly_chart(report.weekly),
        "steps": charts.bar_chart(step_bars, "Reply rate by step", maximum=max(top_rate, 1e-9)),
        "variants": variants,
        "funnels": funnels,
    }


def render(
    report: Report | None,
    pool: PoolReport | None,
    *,
    title: str,
    company: str,
    ledger_states: list[tuple[str, int]] | None = None,
    campaign_count: int | None = None,
) -> str:
    """The whole page. `ledger_states` and `campaign_count` add the dashboard's queue panel."""
    shown = pool.rows[:POOL_ROWS_SHOWN] if pool is not None else []
    return _environment().get_template("report.html").render(
        title=title,
        company=company,
        report=report,
        charts=report_charts(report) if report is not None else None,
        pool=pool,
        pool_rows=shown,
        pool_hidden=(pool.total - len(shown)) if pool is not None else 0,
        ledger_states=ledger_states,
        campaign_count=campaign_count,
    )
