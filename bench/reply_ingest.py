"""Reply sync rate: 20,000 messages from a Maildir, matched against a few thousand sends.

    .venv/bin/python bench/reply_ingest.py [--messages 20000] [--sends 3000]
        [--backends sqlite,postgresql] [--database URL] [--runs 3] [--workers N]

Builds a database with candidates, enrollments and sent ledger rows, and a Maildir mixing
real messages from ../shared/corpus (human replies rethreaded onto our sends, bounces from
many MTAs, ordinary mail) with generated out-of-office notes (English, German, French) and
DSNs naming our recipients, every message with its own Message-ID. Then times
`sync_replies` over the Maildir (everything new: classify, match, store, act), and a second
time (everything already stored: the re-read cost of a file source). Runs on SQLite (a
temporary file) and PostgreSQL (a temporary schema of NURTURE_BENCH_DATABASE_URL, default the
local `test` database; skipped with a note when unreachable), prints messages/s for each, and
a `RESULT {json}` line per backend for `python -m bench`. Everything is seeded: the same
arguments give the same Maildir and the same database.

Wall-clock rates on a shared machine say as much about the neighbours as about the code, so
each sync also reports its CPU time: this process's, and its classifier workers' (children,
counted when they exit at the end of the sync). The PostgreSQL server's own CPU is not in it.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

from sqlalchemy import insert

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import children_cpu_s  # noqa: E402
from nurture_mail.config import load_settings  # noqa: E402
from nurture_mail.database import open_database  # noqa: E402
from nurture_mail.inbox import MaildirInbox  # noqa: E402
from nurture_mail.models import Candidate, Enrollment, Inbound, Send  # noqa: E402
from nurture_mail.reply_sync import sync_replies  # noqa: E402
from nurture_mail.store.enrolment import new_send_row  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"
NOW = datetime(2027, 3, 10, 12, 0, tzinfo=UTC)
DROP = re.compile(r"^(message-id|in-reply-to|references|from|date)\s*:", re.I)

OOO = [
    ("Out of Office: {s}", "I am out of the office and will be back on 24 March. Limited email."),
    ("Abwesenheitsnotiz: {s}", "Ich bin bis zum 20. März nicht im Büro und lese keine E-Mails."),
    ("Réponse automatique : {s}", "Je suis absente, de retour le 25 mars. Cordialement."),
    ("Automatic reply: {s}", "I am currently away with limited access to email."),
]


def rewrite(raw: bytes, headers: list[str]) -> bytes:
    """Replace identity headers (and their folded lines) with ours."""
    text = raw.decode("utf-8", "surrogateescape").replace("\r\n", "\n")
    head, sep, body = text.partition("\n\n")
    kept, dropping = [], False
    for line in head.split("\n"):
        if line[:1] in (" ", "\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = bool(DROP.match(line))
        if not dropping:
            kept.append(line)
    out = "\n".join(headers + kept) + (sep or "\n\n") + body
    return out.encode("utf-8", "surrogateescape")


def populate(db, sends: int, rng: random.Random) -> list[tuple[str, str]]:
    """Candidates, one enrollment and one sent message each. Returns (email, message id)."""
    stamp = (NOW - timedelta(days=5)).replace(tzinfo=None)
    out = []
    with db.sessions.begin() as s:
        s.execute(insert(Candidate.__table__), [
            {"email": f"c{i}@people.example", "status": "rejected", "attributes": {},
             "token_key": f"{rng.getrandbits(128):032x}", "created_at": stamp, "updated_at": stamp}
            for i in range(sends)
        ])
        s.execute(insert(Enrollment.__table__), [
            {"candidate_id": i + 1, "campaign_id": "keep-warm", "state": "active",
             "enrolled_at": stamp, "needs_next": False}
            for i in range(sends)
        ])
        rows = []
        for i in range(sends):
            mid = f"{rng.getrandbits(96):024x}@talent.example"
            row = new_send_row(enrollment_id=i + 1, campaign_id="keep-warm", candidate_id=i + 1,
                               step_id="thank-you", step_number=1, variant=None, due_at=stamp,
                               message_id=mid, stamp=stamp)
            row.update(state="sent", sent_at=stamp + timedelta(hours=1),
                       to_addr=f"c{i}@people.example", subject="Thank you")
            rows.append(row)
            out.append((f"c{i}@people.example", mid))
        s.execute(insert(Send.__table__), rows)
        # a pending second step for every enrollment, for out-of-office notes to move
        s.execute(insert(Send.__table__), [
            new_send_row(enrollment_id=i + 1, campaign_id="keep-warm", candidate_id=i + 1,
                         step_id="check-in", step_number=2, variant=None,
                         due_at=NOW + timedelta(days=3),
                         message_id=f"{rng.getrandbits(96):024x}@talent.example", stamp=stamp)
            for i in range(sends)
        ])
    return out


def build_maildir(path: Path, count: int, sends: list[tuple[str, str]], rng: random.Random) -> dict:
    for sub in ("new", "cur", "tmp"):
        (path / sub).mkdir(parents=True)
    replies = [p.read_bytes() for p in sorted((CORPUS / "replies").glob("*.eml"))]
    bounces = [p.read_bytes() for p in sorted((CORPUS / "bounces").glob("*.eml"))]
    others = [p.read_bytes() for p in sorted((CORPUS / "non-bounces").glob("*.eml"))]
    mix = {"reply": 0, "auto_reply": 0, "corpus bounce": 0, "dsn": 0, "other": 0}
    when = format_datetime(NOW - timedelta(days=1))
    for n in range(count):
        email, mid = rng.choice(sends)
        own = f"<bench{n}.{rng.getrandbits(32):08x}@mail.example>"
        roll = rng.random()
        if roll < 0.5:
            raw = rewrite(rng.choice(replies), [
                f"From: Candidate <{email}>", f"Date: {when}", f"Message-ID: {own}",
                f"In-Reply-To: <{mid}>", f"References: <{mid}>"])
            mix["reply"] += 1
        elif roll < 0.7:
            subject, text = rng.choice(OOO)
            raw = (f"From: <{email}>\nTo: dana@talent.example\nSubject: {subject.format(s='Thank you')}\n"
                   f"Date: {when}\nMessage-ID: {own}\nIn-Reply-To: <{mid}>\nAuto-Submitted: auto-replied\n"
                   f"Content-Type: text/plain; charset=utf-8\n\n{text}\n").encode()
            mix["auto_reply"] += 1
        elif roll < 0.8:
            raw = rewrite(rng.choice(bounces), [
                "From: MAILER-DAEMON@mx.example", f"Date: {when}", f"Message-ID: {own}"])
            mix["corpus bounce"] += 1
        elif roll < 0.9:
            status = rng.choice(["5.1.1", "5.1.1", "4.2.2"])
            raw = (f"From: MAILER-DAEMON@mx.talent.example\nTo: dana@talent.example\n"
                   f"Subject: Undelivered Mail Returned to Sender\nDate: {when}\nMessage-ID: {own}\n"
                   "MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; "
                   'boundary="b"\n\n--b\nContent-Type: text/plain\n\nCould not deliver.\n\n'
                   "--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx\n\n"
                   f"Final-Recipient: rfc822; {email}\nAction: failed\nStatus: {status}\n\n"
                   f"--b\nContent-Type: text/rfc822-headers\n\nMessage-ID: <{mid}>\n\n--b--\n").encode()
            mix["dsn"] += 1
        else:
            raw = rewrite(rng.choice(others), [
                "From: someone@elsewhere.example", f"Date: {when}", f"Message-ID: {own}"])
            mix["other"] += 1
        (path / "new" / f"{1700000000 + n}.M{n}P1.bench").write_bytes(raw)
    return mix


EXIT_WHEN = {"keep-warm": frozenset({"replied", "unsubscribed", "bounced", "hired"})}


def run_once(url: str, args, tmp_path: Path) -> dict:
    """One database: populate, build the Maildir, sync twice. Returns the figures."""
    rng = random.Random(args.seed)
    db = open_database(url)
    try:
        (tmp_path / "nurture.toml").write_text("")
        settings = load_settings(tmp_path / "nurture.toml", env={}, database_url=url)
        sends = populate(db, args.sends, rng)
        maildir = tmp_path / "Maildir"
        mix = build_maildir(maildir, args.messages, sends, rng)
        size = sum(p.stat().st_size for p in (maildir / "new").iterdir())
        print(f"{args.messages} messages ({size / 1e6:.1f} MB): "
              + ", ".join(f"{v} {k}" for k, v in mix.items()) + f"; {args.sends} sends; {db.dialect}")

        clock = _Clock()
        report = sync_replies(settings, db, now=NOW, exit_when=EXIT_WHEN, sources=[MaildirInbox(maildir)],
                              workers=args.workers)
        first, cpu, workers_cpu = clock.read()
        print(f"  first sync:  {report.read} read in {first:.2f} s = {report.read / first:,.0f} messages/s; "
              f"CPU {cpu:.2f} s here + {workers_cpu:.2f} s in workers")
        print(f"    {report.summary()}")

        start = time.perf_counter()
        again = sync_replies(settings, db, now=NOW, exit_when=EXIT_WHEN, sources=[MaildirInbox(maildir)],
                              workers=args.workers)
        second = time.perf_counter() - start
        print(f"  second sync: {again.read} read, {again.new} new in {second:.2f} s = "
              f"{again.read / second:,.0f} messages/s (all already stored)")
        with db.sessions() as s:
            stored = s.query(Inbound).count()
        assert stored == report.new == args.messages, (stored, report.new)
        assert again.new == 0 and again.duplicates == args.messages, again
        return {"dialect": db.dialect, "first": report.read / first, "second": again.read / second,
                "wall": first, "cpu": cpu, "workers_cpu": workers_cpu, "summary": report.summary()}
    finally:
        db.dispose()


class _Clock:
    """Wall time, this process's CPU time and its reaped children's, from now on."""

    def __init__(self):
        self.wall = time.perf_counter()
        self.cpu = time.process_time()
        self.children = children_cpu_s()

    def read(self) -> tuple[float, float, float]:
        return (time.perf_counter() - self.wall, time.process_time() - self.cpu,
                children_cpu_s() - self.children)


def backend_url(backend: str, args, tmp_path: Path):
    """(url, cleanup) for a backend, or (None, reason) when it cannot run here."""
    if args.database:
        return args.database, None
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'bench.db'}", None
    from bench.common import fresh_pg_schema

    try:
        return fresh_pg_schema()
    except Exception as exc:  # no server: say so and go on with the other backend
        return None, f"PostgreSQL unavailable ({type(exc).__name__}: {str(exc).splitlines()[0]})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--sends", type=int, default=3_000)
    parser.add_argument("--backends", default="sqlite,postgresql",
                        help="comma-separated: sqlite, postgresql (default both)")
    parser.add_argument("--database", help="one database URL instead of the backends")
    parser.add_argument("--runs", type=int, default=3, help="repeat and report the medians")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=None,
                        help="classifier processes (default: sync_replies' own choice; 0: none)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the sync's debug lines")
    args = parser.parse_args()
    if args.verbose:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="    %(message)s")
        logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    if not CORPUS.is_dir():
        sys.exit(f"corpus not found at {CORPUS}")

    backends = ["url"] if args.database else [b.strip() for b in args.backends.split(",") if b.strip()]
    for backend in backends:
        rates, seconds, walls, cpus, worker_cpus = [], [], [], [], []
        for _ in range(max(1, args.runs)):
            with tempfile.TemporaryDirectory() as tmp:
                url, cleanup = backend_url(backend, args, Path(tmp))
                if url is None:
                    print(f"{backend}: skipped: {cleanup}")
                    break
                try:
                    figures = run_once(url, args, Path(tmp))
                finally:
                    if callable(cleanup):
                        cleanup()
            rates.append(figures["first"])
            seconds.append(figures["second"])
            walls.append(figures["wall"])
            cpus.append(figures["cpu"])
            worker_cpus.append(figures["workers_cpu"])
        if not rates:
            continue
        rate = statistics.median(rates)
        again = statistics.median(seconds)
        cpu, worker_cpu = statistics.median(cpus), statistics.median(worker_cpus)
        name = figures["dialect"]
        print(f"{name}: reply ingest {rate:,.0f} messages/s (first sync, median of {len(rates)}: "
              f"{statistics.median(walls):.2f} s wall, CPU {cpu:.2f} s here + {worker_cpu:.2f} s in "
              f"workers = {args.messages / (cpu + worker_cpu):,.0f} messages per CPU-second); "
              f"re-read {again:,.0f} messages/s")
        print("RESULT " + json.dumps({
            "benchmark": f"reply ingest ({name})", "value": round(rate, 1), "unit": "messages/s",
            "detail": {"messages": args.messages, "sends": args.sends, "runs": len(rates),
                       "wall_s": round(statistics.median(walls), 2), "cpu_s": round(cpu, 2),
                       "workers_cpu_s": round(worker_cpu, 2), "reread_per_s": round(again, 1),
                       "target": 5000},
        }))


if __name__ == "__main__":
    main()
