"""How long `nurture report` takes over a big ledger on SQLite.

Builds, in a temporary directory, 1,000,000 sends (3 campaigns x 4 steps, two variants on one
step, mixed states) for 250,000 candidates, plus inbound rows (replies, auto-replies, bounces)
for about 8% of them - all with INSERT ... SELECT over a recursive counter, so the build is
bounded and quick - then times the report queries and the whole `nurture report` command.

    .venv/bin/python bench/report_bench.py [--sends N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

from nurture_mail import reports
from nurture_mail.database import open_database

NOW = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)
STEPS = 4
CAMPAIGNS = ("silver-medalists", "early-leavers", "referrals")


def build(url: str, sends: int) -> None:
    candidates = sends // STEPS
    db = open_database(url)
    try:
        with db.engine.begin() as conn:
            conn.execute(text("PRAGMA synchronous=OFF"))
            conn.execute(text(f"""
                INSERT INTO candidates (id, email, status, owner, attributes, token_key, created_at, updated_at)
                WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {candidates})
                SELECT i, 'c' || i || '@example.com', 'rejected', CASE i % 3 WHEN 0 THEN 'dana' ELSE 'sam' END,
                       '{{}}', 'k' || i, '2026-01-01', '2026-01-01' FROM n"""))
            conn.execute(text("""
                INSERT INTO enrollments (id, candidate_id, campaign_id, state, exit_reason, enrolled_at,
                                         last_step_id, exited_at, needs_next)
                SELECT id, id, CASE id % 3 WHEN 0 THEN 'silver-medalists' WHEN 1 THEN 'early-leavers'
                                           ELSE 'referrals' END,
                       CASE WHEN id % 13 = 0 THEN 'exited' WHEN id % 5 = 0 THEN 'completed' ELSE 'active' END,
                       CASE WHEN id % 13 = 0 THEN 'replied' WHEN id % 5 = 0 THEN 'completed' END,
                       '2026-01-05', 's4', CASE WHEN id % 13 = 0 OR id % 5 = 0 THEN '2026-06-01' END, 0
                FROM candidates"""))
            # One send per (enrollment, step); sent_at spread over a year, a few other states.
            conn.execute(text(f"""
                INSERT INTO sends (id, enrollment_id, campaign_id, candidate_id, step_id, step_number,
                                   variant, state, due_at, message_id, data_started, attempts, sent_at,
                                   created_at, updated_at)
                WITH RECURSIVE s(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM s WHERE k < {STEPS})
                SELECT (e.id - 1) * {STEPS} + s.k, e.id, e.campaign_id, e.candidate_id, 's' || s.k, s.k,
                       CASE WHEN s.k = 2 THEN CASE e.id % 2 WHEN 0 THEN 'a' ELSE 'b' END END,
                       CASE WHEN e.id % 97 = 0 THEN 'failed' WHEN e.id % 89 = 0 THEN 'deferred'
                            WHEN e.id % 499 = 0 THEN 'unknown' ELSE 'sent' END,
                       datetime('2026-01-05', '+' || ((e.id * 7 + s.k * 61) % 360) || ' days'),
                       'm' || e.id || '.' || s.k || '@bench', 1, 1,
                       CASE WHEN e.id % 97 <> 0 AND e.id % 89 <> 0 AND e.id % 499 <> 0
                            THEN datetime('2026-01-05', '+' || ((e.id * 7 + s.k * 61) % 360) || ' days') END,
                       '2026-01-05', datetime('2026-01-05', '+' || ((e.id * 7 + s.k * 61) % 360) || ' days')
                FROM enrollments e CROSS JOIN s"""))
            conn.execute(text("""
                INSERT INTO inbound (dedupe_key, message_id, received_at, kind, bounce, reply_text,
                                     send_id, candidate_id, campaign_id)
                SELECT 'd' || id, 'r' || id || '@bench',
                       datetime(sent_at, '+' || (1 + id % 240) || ' hours'),
                       CASE WHEN id % 50 < 5 THEN 'reply' WHEN id % 50 < 7 THEN 'auto_reply' ELSE 'bounce' END,
                       CASE WHEN id % 50 = 7 THEN 'hard' WHEN id % 50 = 8 THEN 'soft' END,
                       CASE WHEN id % 50 < 5 THEN 'Thanks, happy to talk.' END,
                       id, candidate_id, campaign_id
                FROM sends WHERE state = 'sent' AND id % 50 < 9"""))
        with db.engine.connect() as conn:
            conn.execute(text("ANALYZE"))
    finally:
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nurture-report-bench-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'nurture.db'}"
        started = time.perf_counter()
        build(url, args.sends)
        db = open_database(url)
        try:
            with db.engine.connect() as conn:
                counts = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar()
                          for t in ("sends", "inbound", "enrollments")}
            print(f"built {counts} in {time.perf_counter() - started:.1f} s")
            timings = []
            for _ in range(3):
                t0 = time.perf_counter()
                result = reports.gather(db, now=NOW)
                timings.append(time.perf_counter() - t0)
            total = sum(c.stats.counts["sends"] for c in result.campaigns)
            assert total == counts["sends"], (total, counts)
            print(f"report queries over {total:,} sends: best {min(timings):.2f} s "
                  f"(runs: {', '.join(f'{t:.2f}' for t in timings)})")
        finally:
            db.dispose()
        for fmt in ("json", "html"):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "nurture_mail", "--database", url, "--now",
                            NOW.isoformat(), "report", "--format", fmt, "-o", str(Path(tmp) / f"r.{fmt}")],
                           check=True, capture_output=True)
            print(f"`nurture report --format {fmt}` (whole command, incl. start-up"
                  f"{' and the 250,000-row pool' if fmt == 'html' else ''}): {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
