"""`nurture report pool`: the warm pool - who answered recently, who is cooling, who went cold.

The grouping, filters and order are SQL (`store.warm_pool.pool_rows`); this module shapes rows
for people (first line of the last reply) and programs (JSON, CSV).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from .store import pool as pool_store
from .store import warm_pool as store
from .store.ledger import aware
from .warmth import COLD_DAYS, GROUPS, WARM_DAYS, PoolFilter

COLUMNS = ("group", "email", "name", "owner", "tags", "status", "last_contact", "last_reply", "reply")
LINE_MAX = 120


@dataclass
class PoolReport:
    as_of: datetime
    warm_days: int
    cold_days: int
    rows: list[dict]  # all of them, or the first `limit` (see `total`)
    group_counts: dict[str, int] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        return {g: self.group_counts.get(g, 0) for g in GROUPS}

    @property
    def total(self) -> int:
        return sum(self.group_counts.values())


def first_line(text: str | None) -> str | None:
    """The first line that says something (quoted lines skipped); cut to LINE_MAX."""
    if not text:
        return None
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(">"):
            return line if len(line) <= LINE_MAX else line[: LINE_MAX - 1] + "…"
    return None


def _name(row: dict) -> str | None:
    if row["full_name"]:
        return row["full_name"]
    parts = [p for p in (row["first_name"], row["last_name"]) if p]
    return " ".join(parts) or None


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else aware(moment).isoformat().replace("+00:00", "Z")


def gather_pool(
    db,
    *,
    now: datetime,
    warm_days: int = WARM_DAYS,
    cold_days: int = COLD_DAYS,
    where: PoolFilter = PoolFilter(),
    sort: str = "group",
    limit: int | None = None,
) -> PoolReport:
    """The pool; with `limit`, only the first rows (in `sort` order) leave the database, and
    the group counts still cover everyone."""
    with db.sessions() as session:
        raw, counts = store.pool_rows(session, now=now, warm_days=warm_days, cold_days=cold_days,
                                      where=where, sort=sort, limit=limit)
        tags = pool_store.tags_of(session, [r["id"] for r in raw])
    rows = [
        {
            "group": r["grp"],
            "email": r["email"],
            "name": _name(r),
            "owner": r["owner"],
            "tags": tags.get(r["id"], []),
            "status": r["status"],
            "last_contact": _iso(r["last_contact"]),
            "last_reply": _iso(r["last_reply"]),
            "reply": first_line(r["reply_text"]),
            "reply_campaign": r["reply_campaign"],
        }
        for r in raw
    ]
    return PoolReport(now, warm_days, cold_days, rows, counts)


def to_json(report: PoolReport) -> dict:
    return {
        "as_of": _iso(report.as_of),
        "warm_days": report.warm_days,
        "cold_days": report.cold_days,
        "counts": report.counts,
        "candidates": report.rows,
    }
