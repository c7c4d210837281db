"""Send throughput: the ceiling (Postfix smtp-source -> smtp-sink), a naive baseline (render +
EmailMessage + one smtplib connection) and the real engine end to end (ledger rows due ->
claimed -> rendered -> sent -> recorded) through `nurture run` processes, on SQLite and
PostgreSQL; and, with valgrind installed, the CPU instructions the engine spends per message
(`instructions`): a count a busy machine does not move."""

from __future__ import annotations

import signal
import smtplib
import subprocess
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

from .common import (
    SMTP_SOURCE,
    VALGRIND,
    Figure,
    callgrind_instructions,
    children_cpu_s,
    fresh_pg_schema,
    python,
    smtp_sink,
)

T0 = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
CAMPAIGN = """
id: bench
name: Bench
audience: {status: [rejected], where: {first_name: {exists: true}}}
schedule: {timezone: UTC}
steps:
  - {id: thank-you, wait: 1m, template: thank-you}
"""


def ceiling(n: int, size: int = 3000, sessions: int = 8) -> Figure:
    with smtp_sink() as port:
        start = time.perf_counter()
        subprocess.run([SMTP_SOURCE, "-d", "-s", str(sessions), "-l", str(size), "-m", str(n),
                        "-f", "bench@talent.example", "-t", "sink@example.com", f"127.0.0.1:{port}"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
        elapsed = time.perf_counter() - start
    return Figure("send ceiling: smtp-source -> smtp-sink", n / elapsed, "msg/s",
                  {"messages": n, "bytes": size, "sessions": sessions})


def _workspace(root: Path, port: int, n: int) -> Path:
    from nurture_mail.scaffold import create_workspace

    create_workspace(root)
    for f in (root / "campaigns").glob("*.yaml"):
        f.unlink()
    (root / "campaigns" / "bench.yaml").write_text(CAMPAIGN)
    toml = root / "nurture.toml"
    toml.write_text(toml.read_text() + f"""
[smtp]
url = "smtp://127.0.0.1:{port}"
starttls = "off"
max_connections = 8
rate_per_minute = 0

[daemon]
tick_seconds = 1
lease_seconds = 300
batch_size = 500
""".replace("[daemon]\ntick_seconds = 60\n", ""))
    text = toml.read_text().replace("[daemon]\ntick_seconds = 60\n", "", 1)
    toml.write_text(text)
    csv = root / "people.csv"
    with csv.open("w") as fh:
        fh.write("email,first_name,last_name,status,role,timezone\n")
        for i in range(n):
            fh.write(f"person{i}@example{i % 97}.com,Name{i},Surname{i},rejected,Backend Engineer,Europe/Berlin\n")
    return csv


def import_and_schedule(base: list[str], csv: Path, root: Path) -> float:
    """Import `csv` and run one tick at T0 (`base` is `python -m nurture_mail --database URL`):
    every candidate is enrolled and its send scheduled, due an hour later. Returns the tick's
    seconds."""
    subprocess.run(base + ["candidates", "import", str(csv)], cwd=root, check=True, capture_output=True)
    start = time.perf_counter()
    subprocess.run(base + ["--now", T0.isoformat(), "tick"], cwd=root, check=True, capture_output=True)
    return time.perf_counter() - start


def naive(n: int) -> Figure:
    """What a first version would do: render, EmailMessage, one smtplib connection."""
    from nurture_mail.templates import TemplateSet

    with tempfile.TemporaryDirectory() as tmp, smtp_sink() as port:
        root = Path(tmp)
        _workspace(root, port, 1)
        templates = TemplateSet(root / "templates")
        client = smtplib.SMTP("127.0.0.1", port)
        start = time.perf_counter()
        size = 0
        for i in range(n):
            ctx = {
                "candidate": {"first_name": f"Name{i}", "last_name": "X", "role": "Engineer", "status": "rejected"},
                "sender": {"name": "Dana Reyes", "email": "dana@talent.example"},
                "company": {"name": "Talent Co", "postal_address": "1 Main St"},
                "campaign": {"id": "bench", "name": "Bench"}, "step": {"id": "thank-you", "number": 1},
                "unsubscribe_url": f"https://talent.example/u/{i}", "today": date(2027, 3, 1),
            }
            r = templates.render("thank-you", ctx)
            msg = EmailMessage()
            msg["From"] = "Dana Reyes <dana@talent.example>"
            msg["To"] = f"Name{i} <person{i}@example.com>"
            msg["Subject"] = r.subject
            msg.set_content(r.text)
            msg.add_alternative(r.html, subtype="html")
            data = msg.as_bytes()
            size += len(data)
            client.sendmail("dana@talent.example", [f"person{i}@example.com"], data)
        elapsed = time.perf_counter() - start
        client.quit()
    return Figure("send naive: render+EmailMessage+smtplib", n / elapsed, "msg/s",
                  {"messages": n, "avg_bytes": size // n})


class _Progress:
    """Whether sends are left and whether one has been sent, read on one connection kept open
    for the run, polled every 20 ms (the end of a run is seen within 20 ms).

    Claimable rows are looked for from the last one seen, in the order of their index
    (`ix_sends_claimable`: due_at, id), which is the order the senders claim them in: from the
    start of the index, PostgreSQL steps over an entry for every row claimed so far (dead
    until a vacuum, and autovacuum is off on the benchmark machines). A poll grew from 0.15
    to 1.2 ms over a 50,000-message run, ~13 us of the server's time a message (about a tenth
    of it), and ~10 ms at the end. A row found from there answers "yes"; finding none, the
    whole index is looked at before the answer is "no", so a row moved back (released,
    requeued) is never missed."""

    def __init__(self, db_url: str):
        from sqlalchemy import create_engine

        self.engine = create_engine(db_url)
        self.conn = self.engine.connect()
        self.seen: tuple | None = None  # (due_at, id) of the claimable row last found

    def _ask(self, sql: str, params: tuple | None = None):
        answer = self.conn.exec_driver_sql(sql, params).first() if params else self.conn.exec_driver_sql(sql).first()
        self.conn.commit()  # a fresh snapshot next time
        return answer

    def _claimable(self, since: tuple | None) -> tuple | None:
        """(due_at, id) of the first claimable row, from `since` on (None: from the start)."""
        sql = "SELECT due_at, id FROM sends WHERE state IN ('scheduled', 'deferred')"
        if since is not None:
            sql += " AND (due_at, id) >= (?, ?)" if self.engine.dialect.name == "sqlite" else \
                " AND (due_at, id) >= (%s, %s)"
        row = self._ask(sql + " ORDER BY due_at, id LIMIT 1", since)
        return None if row is None else tuple(row)

    def unfinished(self) -> bool:
        row = self._claimable(self.seen) if self.seen is not None else None
        if row is None:
            row = self._claimable(None)
        if row is not None:
            self.seen = row
            return True
        return bool(self._ask("SELECT EXISTS (SELECT 1 FROM sends WHERE state = 'claimed')")[0])

    def any_sent(self) -> bool:
        return bool(self._ask("SELECT EXISTS (SELECT 1 FROM sends WHERE state = 'sent')")[0])

    def sent(self) -> int:
        return self.conn.exec_driver_sql("SELECT count(*) FROM sends WHERE state = 'sent'").scalar()

    def close(self) -> None:
        self.conn.close()
        self.engine.dispose()


def compile_bytecode() -> None:
    """Write nurture_mail's bytecode, as installing a wheel does: where PYTHONDONTWRITEBYTECODE
    is set (it is on the benchmark machines), an editable install would otherwise compile
    every module again in each process it starts (~0.1 s of the startup measured here)."""
    import compileall

    import nurture_mail

    compileall.compile_dir(Path(nurture_mail.__file__).parent, quiet=1)


def engine_run(n: int, backend: str, processes: int, timeout: float = 900) -> Figure:
    """`nurture run` x processes against smtp-sink; rows were made due beforehand."""
    with tempfile.TemporaryDirectory() as tmp, smtp_sink() as port:
        root = Path(tmp)
        csv = _workspace(root, port, n)
        drop = None
        if backend == "postgresql":
            db_url, drop = fresh_pg_schema()
        else:
            db_url = f"sqlite:///{root / 'nurture.db'}"
        try:
            base = [python(), "-m", "nurture_mail", "--database", db_url]
            schedule_s = import_and_schedule(base, csv, root)
            later = (T0 + timedelta(hours=1)).isoformat()
            compile_bytecode()
            progress = _Progress(db_url)
            children_before = children_cpu_s()
            start = time.perf_counter()
            # One daemon with `processes` sender processes (--workers): SQLite allows one lock
            # holder; on PostgreSQL separate daemons would share the queue the same way.
            procs = [subprocess.Popen(base + ["--now", later, "run", "--workers", str(processes)], cwd=root,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)]
            first = None  # when the first message was sent: startup ends there
            try:
                while time.perf_counter() - start < timeout:
                    if first is None and progress.any_sent():
                        first = time.perf_counter() - start
                    if not progress.unfinished():
                        break
                    time.sleep(0.02)
                elapsed = time.perf_counter() - start
                sent = progress.sent()
            finally:
                progress.close()
            for p in procs:
                p.send_signal(signal.SIGTERM)
            errors = [p.communicate(timeout=60)[1] for p in procs]
            rss = _peak_rss_mb()
            engine_cpu = children_cpu_s() - children_before  # the daemon and its helpers, reaped
        finally:
            if drop is not None:
                drop()
    detail = {"messages": n, "sent": sent, "processes": processes, "enrol+schedule_s": round(schedule_s, 1),
              "peak_rss_mb": round(rss)}
    if sent:
        # CPU time of `nurture run` (helpers included) a message, start-up included: what a
        # change saves shows here even when the machine's load moves the wall-clock figures.
        detail["engine_cpu_us_per_msg"] = round(engine_cpu / sent * 1e6)
    if first is not None and elapsed > first:
        # The figure counts from the start of `nurture run` (imports, workspace, first beat);
        # this is the rate once the first messages are out, what a running daemon keeps up.
        detail["startup_s"] = round(first, 2)
        detail["running_msg_s"] = round(sent / (elapsed - first))
    if sent < n:
        detail["error"] = (errors[0] or "")[-300:]
    return Figure(f"send engine: {backend}, {processes} process(es)", sent / elapsed, "msg/s", detail)


def _peak_rss_mb() -> float:
    from .common import peak_rss_children_mb

    return peak_rss_children_mb()


def one_tick(root: str) -> None:
    """One sending tick, in this process, over the workspace `engine_run` builds in `root`
    (what each beat of `nurture run` does): prints its summary."""
    import os

    from nurture_mail.config import load_settings
    from nurture_mail.database import open_database
    from nurture_mail.engine import Engine
    from nurture_mail.transport import make_transport
    from nurture_mail.workspace import load_workspace

    os.chdir(root)
    later = T0 + timedelta(hours=1)
    settings = load_settings(Path(root) / "nurture.toml", env={},
                             database_url=f"sqlite:///{Path(root) / 'nurture.db'}")
    db = open_database(settings.database_url)
    try:
        engine = Engine(settings, db, load_workspace(settings, db), make_transport(settings),
                        clock=lambda: later)
        print(engine.tick(later).summary())
    finally:
        db.dispose()


def instructions(small: int = 1000, large: int = 3000) -> Figure | None:
    """CPU instructions per message of a sending tick (SQLite, one process, in process, real
    SMTP to smtp-sink), counted by valgrind's callgrind: the tick over `large` due messages
    minus the tick over `small`, per message. None without valgrind."""
    if VALGRIND is None:
        return None
    counts = {}
    with tempfile.TemporaryDirectory() as tmp, smtp_sink() as port:
        for n in (small, large):
            root = Path(tmp) / str(n)
            root.mkdir()
            csv = _workspace(root, port, n)
            base = [python(), "-m", "nurture_mail", "--database", f"sqlite:///{root / 'nurture.db'}"]
            import_and_schedule(base, csv, root)
            counts[n], run = callgrind_instructions(
                [python(), "-c", "import sys; from bench.send import one_tick; one_tick(sys.argv[1])",
                 str(root)],
                cwd=Path(__file__).resolve().parents[1],
            )
            if f"{n} sent" not in run.stdout:
                raise RuntimeError(f"tick of {n}: {run.stdout[-200:]}")
    per_message = (counts[large] - counts[small]) / (large - small)
    return Figure("send engine: instructions per message (callgrind)", per_message, "instr",
                  {"backend": "sqlite", "processes": 1, "messages": f"{large} - {small}"})
