"""A workspace wired to a real loopback SMTP sink, for delivery tests."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.parser import BytesParser
from pathlib import Path

from sqlalchemy import select

from nurture_mail.config import load_settings
from nurture_mail.database import open_database
from nurture_mail.engine import Engine, TickReport
from nurture_mail.importer import ImportReport, read_rows, records
from nurture_mail.models import Send
from nurture_mail.store import pool
from nurture_mail.testing import FixedClock, SmtpSink
from nurture_mail.transport import make_transport
from nurture_mail.workspace import load_workspace

LAYOUT = """<!doctype html><html><head><style>p { color: #222; }</style></head>
<body>{{ content }}<p>{{ company.postal_address }} <a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>
"""

TEMPLATE = """---
subject: "{subject}"
---
Hi {{{{ candidate.first_name | default("there") }}}},

{body}
"""

DEFAULT_CAMPAIGN = """
id: keep-warm
name: Keep warm
audience:
  status: [rejected]
  tags: {none: [do-not-contact]}
schedule:
  timezone: candidate
  days: [mon, tue, wed, thu, fri]
  hours: "09:00-17:00"
steps:
  - id: thank-you
    wait: 1d
    template: thank-you
  - id: check-in
    wait: 30d
    template: check-in
"""


def schedulers_started(log: Path) -> int:
    """How many `nurture run` daemons writing to `log` have started their scheduler: APScheduler
    logs it once the daemon's SIGTERM handler is in place (signalled before, a daemon that is
    still importing dies of the signal instead of stopping)."""
    return log.read_bytes().count(b"Scheduler started") if log.exists() else 0


@dataclass
class DeliveryEnv:
    root: Path
    db_url: str
    sink: SmtpSink

    @classmethod
    def create(cls, root: Path, db_url: str, sink: SmtpSink, campaign: str = DEFAULT_CAMPAIGN, extra_config: str = "",
               timeout_seconds: int = 5):
        (root / "campaigns").mkdir(parents=True)
        (root / "templates").mkdir()
        (root / "templates" / "_layout.html").write_text(LAYOUT)
        for name, subject in (("thank-you", "Thank you, {{ candidate.first_name | default('friend') }}"),
                              ("check-in", "How are things?"), ("news", "News from {{ company.name }}")):
            (root / "templates" / f"{name}.md").write_text(
                TEMPLATE.format(subject=subject, body=f"This is the {name} email.")
            )
        (root / "nurture.toml").write_text(textwrap.dedent(f"""
            [smtp]
            url = "{sink.url}"
            starttls = "off"
            max_connections = 4
            rate_per_minute = 0
            timeout_seconds = {timeout_seconds}
            [sender]
            from = "Dana Reyes <dana@talent.example>"
            [company]
            name = "Talent Co"
            postal_address = "1 Main St, Springfield"
            [unsubscribe]
            base_url = "https://talent.example/u/"
            secret = "test-secret"
            [defaults]
            timezone = "UTC"
            """) + extra_config)
        env = cls(root, db_url, sink)
        env.write_campaign(campaign)
        return env

    def write_campaign(self, text: str, name: str = "keep-warm.yaml") -> None:
        (self.root / "campaigns" / name).write_text(textwrap.dedent(text))
        self._workspace = None  # as the daemon does when the files change

    def settings(self):
        return load_settings(self.root / "nurture.toml", env={}, database_url=self.db_url)

    def import_csv(self, text: str, now: datetime) -> ImportReport:
        path = self.root / "people.csv"
        path.write_text(textwrap.dedent(text).lstrip())
        db = open_database(self.db_url)
        try:
            report = ImportReport()
            recs = records(path, read_rows(path, {}), extra_tags=(), status=None, report=report)
            pool.import_records(db, str(path), recs, report, now=now)
            return report
        finally:
            db.dispose()

    def tick(self, now: datetime, **engine_kwargs) -> TickReport:
        """One beat, as `nurture tick` does it (settings, database and workspace kept between
        beats like the daemon keeps them)."""
        if getattr(self, "_db", None) is None:
            self._settings = self.settings()
            self._db = open_database(self.db_url)
        if getattr(self, "_workspace", None) is None:
            self._workspace = load_workspace(self._settings, self._db)
        engine = Engine(self._settings, self._db, self._workspace, make_transport(self._settings),
                        clock=FixedClock(now), **engine_kwargs)
        return engine.tick(now)

    def close(self) -> None:
        if getattr(self, "_db", None) is not None:
            self._db.dispose()
            self._db = None

    def sends(self) -> list[Send]:
        db = open_database(self.db_url)
        try:
            with db.sessions() as s:
                return list(s.execute(select(Send).order_by(Send.id)).scalars())
        finally:
            db.dispose()

    def received(self):
        parser = BytesParser(policy=policy.default)
        return [(r.rcpt, parser.parsebytes(r.data)) for r in self.sink.received]

    def db(self):
        return open_database(self.db_url)
