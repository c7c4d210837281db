"""Header injection: hostile candidate values in every field that reaches a header (the To
display name from first/last/full name, a subject built from any attribute) go through the
real engine to a real SMTP sink; every received message has exactly the promised header set,
one recipient, and one-line headers. Addresses cannot carry anything: they are validated."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesParser

import pytest

from nurture_mail.importer import ImportReport, read_rows, records
from nurture_mail.store import pool
from nurture_mail.testing import SmtpSink

from .delivery_env import DeliveryEnv

MON = datetime(2027, 3, 1, 0, 0, tzinfo=UTC)
PAYLOADS = [
    "Dana\r\nBcc: victim@evil.example",
    "Dana\nBcc: victim@evil.example",
    "Dana\rBcc: victim@evil.example",
    "Dana\u2028Bcc: victim@evil.example",
    "Dana\u0085Bcc: victim@evil.example",
    "Dana\x0bBcc: victim@evil.example",
    "Dana\r\n\r\n<script>body</script>",
    "=?utf-8?q?Dana=0D=0ABcc:_victim@evil.example?=",
    "Dana <victim@evil.example>, Eve",
    '"Dana" <victim@evil.example>',
    "Dana\x00\r\nX-Injected: yes",
]
CAMPAIGN = """
id: inject
name: Inject
audience:
  status: [rejected]
schedule:
  days: [mon, tue, wed, thu, fri]
  hours: "00:00-24:00"
steps:
  - id: hello
    wait: 1m
    template: thank-you
    subject: "{{ candidate.first_name | default('-') }} {{ candidate.last_name | default('-') }} {{ candidate.full_name | default('-') }} {{ candidate.role | default('-') }} {{ candidate.note | default('-') }} {{ candidate.skills | default([]) | join(',') }}"
"""
EXPECTED_HEADERS = {
    "from", "to", "subject", "date", "message-id", "list-unsubscribe", "list-unsubscribe-post",
    "mime-version", "content-type",
}
FIELDS = ("first_name", "last_name", "full_name", "role", "note", "skills")


@pytest.fixture
def sink():
    s = SmtpSink().start()
    yield s
    s.stop()


def people() -> list[dict]:
    rows = []
    for i, payload in enumerate(PAYLOADS):
        for field in FIELDS:
            row = {"email": f"p{i}-{field.replace('_', '')}@example.com", "status": "rejected"}
            row[field] = [payload, "ok"] if field == "skills" else payload
            rows.append(row)
    return rows


@pytest.mark.timeout(120)
def test_hostile_values_never_add_headers_or_recipients(tmp_path, db_url, sink):
    env = DeliveryEnv.create(tmp_path / "ws", db_url, sink, campaign=CAMPAIGN)
    try:
        path = tmp_path / "people.jsonl"
        rows = people()
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
        db = env.db()
        try:
            report = ImportReport()
            recs = records(path, read_rows(path, {}), extra_tags=(), status=None, report=report)
            pool.import_records(db, str(path), recs, report, now=MON)
        finally:
            db.dispose()
        assert report.errors == [] and report.created == len(rows)
        t = MON
        while len(sink.received) < len(rows) and t < MON + timedelta(days=2):
            env.tick(t)
            t += timedelta(hours=1)
        assert {s.state for s in env.sends()} == {"sent"}
        expected = {r["email"] for r in rows}
        assert sorted(r.rcpt for r in sink.received) == sorted(expected)  # nobody else got mail
        parser = BytesParser(policy=policy.default)
        for received in sink.received:
            raw_head = received.data.split(b"\r\n\r\n", 1)[0]
            assert b"\n" not in raw_head.replace(b"\r\n", b"") and b"\r" not in raw_head.replace(b"\r\n", b"")
            message = parser.parsebytes(received.data)
            names = [name.lower() for name in message]
            assert set(names) == EXPECTED_HEADERS, (received.rcpt, names)
            assert len(names) == len(set(names)), names  # nothing doubled
            to = message["To"]
            assert [a.addr_spec for a in to.addresses] == [received.rcpt], str(to)
            subject = str(message["Subject"])
            assert "\n" not in subject and "\r" not in subject and "\u2028" not in subject
            assert "victim@evil.example" not in {a.addr_spec for a in message["From"].addresses}
            for part in message.walk():
                if part.get_content_type() == "text/html":
                    assert "<script>" not in part.get_content()
    finally:
        env.close()
