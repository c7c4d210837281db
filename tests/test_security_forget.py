"""`forget` leaves no trace: after a candidate was enrolled, mailed (through a real SMTP sink),
replied and had events, a dump of every column of every table (found by reflection, so new
tables are covered too) holds neither the address nor its local part; compressed message
bodies are decompressed before the search. SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import zlib
from datetime import UTC, datetime, timedelta

import pytest
import zstandard
from click.testing import CliRunner
from sqlalchemy import MetaData, create_engine, select

from nurture_mail.cli import cli
from nurture_mail.store.sent_messages import unpack
from nurture_mail.testing import SmtpSink

from .delivery_env import DeliveryEnv

MON = datetime(2027, 3, 1, 0, 0, tzinfo=UTC)
ADDRESS = "zed.forgetme@example.com"
LOCAL = "zed.forgetme"
PEOPLE = f"""\
email,first_name,last_name,status,notes
{ADDRESS},Zed,Forgetme,rejected,call {LOCAL} back
lee@example.com,Lee,Keep,rejected,
"""


@pytest.fixture
def sink():
    s = SmtpSink().start()
    yield s
    s.stop()


def texts(value, dictionaries: dict[int, bytes] | None = None) -> list[str]:
    """Every readable form of one stored value (packed messages unpacked, against each of
    the stored dictionaries too)."""
    if value is None:
        return []
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        found = [raw.decode("latin-1")]
        for dictionary in [None, *(dictionaries or {}).values()]:
            with contextlib.suppress(zlib.error, zstandard.ZstdError):
                found.append(unpack(raw, dictionary).decode("utf-8", "replace"))
        return found
    if isinstance(value, dict | list):
        return [json.dumps(value, ensure_ascii=False)]
    return [str(value)]


def dump(db_url: str) -> dict[str, list[str]]:
    """table -> every value of every row, as text."""
    engine = create_engine(db_url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        out: dict[str, list[str]] = {}
        with engine.connect() as conn:
            dictionaries = {}
            if "message_dictionaries" in meta.tables:
                table = meta.tables["message_dictionaries"]
                dictionaries = dict(conn.execute(select(table.c.id, table.c.content)).all())
            for table in meta.sorted_tables:
                out[table.name] = [
                    t for row in conn.execute(select(table)) for v in row for t in texts(v, dictionaries)
                ]
        return out
    finally:
        engine.dispose()


def cli_run(env: DeliveryEnv, *args: str):
    result = CliRunner().invoke(
        cli, ["--config", str(env.root / "nurture.toml"), "--database", env.db_url, *args], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.timeout(120)
def test_forget_leaves_no_trace_in_any_table(tmp_path, db_url, sink):
    env = DeliveryEnv.create(tmp_path / "ws", db_url, sink)
    try:
        env.import_csv(PEOPLE, MON)
        t = MON
        while len(sink.received) < 2 and t < MON + timedelta(days=4):
            env.tick(t)
            t += timedelta(hours=1)
        sent = {r.rcpt: r for r in sink.received}
        assert set(sent) == {ADDRESS, "lee@example.com"}
        message_id = next(s.message_id for s in env.sends() if s.to_addr == ADDRESS)
        reply = (
            f"From: Zed <{ADDRESS}>\r\nTo: dana@talent.example\r\nSubject: Re: Thank you\r\n"
            f"Message-ID: <reply-1@example.com>\r\nIn-Reply-To: <{message_id}>\r\n"
            f"Date: Tue, 02 Mar 2027 10:00:00 +0000\r\n\r\nThanks! Reach me at {ADDRESS}.\r\n\r\n-- \r\n{LOCAL}\r\n"
        )
        stray = (
            f"From: {ADDRESS}\r\nTo: dana@talent.example\r\nSubject: hello again\r\n"
            f"Message-ID: <stray-1@example.com>\r\nDate: Wed, 03 Mar 2027 10:00:00 +0000\r\n\r\nhi\r\n"
        )
        bounce = (
            "From: MAILER-DAEMON@mx.example\r\nTo: dana@talent.example\r\nSubject: Undelivered Mail\r\n"
            "Message-ID: <bounce-1@mx.example>\r\nAuto-Submitted: auto-replied\r\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
            f"--B\r\nContent-Type: text/plain\r\n\r\n<{ADDRESS}>: mailbox full\r\n"
            f"--B\r\nContent-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; {ADDRESS}\r\n"
            "Action: delayed\r\nStatus: 4.2.2\r\n--B--\r\n"
        )
        files = []
        for name, text in (("reply.eml", reply), ("stray.eml", stray), ("bounce.eml", bounce)):
            path = tmp_path / name
            path.write_text(text)
            files.append(str(path))
        cli_run(env, "--now", "2027-03-04T12:00:00Z", "replies", "sync", *files)
        cli_run(env, "--now", "2027-03-04T12:00:00Z", "candidates", "update", ADDRESS, "--tag", "vip")
        before = dump(env.db_url)
        everywhere = " ".join(" ".join(v) for v in before.values()).lower()
        assert everywhere.count(ADDRESS) >= 5  # the scenario really stored it widely
        for table in ("candidates", "sends", "sent_messages", "inbound", "enrollments", "events", "candidate_tags"):
            assert before.get(table), f"no rows in {table}: the scenario did not reach it"
        # the stored message is read back (unpacked against its dictionary) and names the person
        assert any(f"To: Zed Forgetme <{ADDRESS}>" in v for v in before["sent_messages"])

        cli_run(env, "--now", "2027-03-05T12:00:00Z", "forget", "--yes", ADDRESS)

        after = dump(env.db_url)
        for table, values in after.items():
            for value in values:
                lowered = value.lower()
                assert ADDRESS not in lowered and LOCAL not in lowered, (table, value[:300])
                assert "forgetme" not in lowered, (table, value[:300])
        # The other candidate is untouched, and the address stays suppressed (by hash only).
        assert any("lee@example.com" in v for v in after["candidates"])
        result = cli_run(env, "candidates", "import", str(_write(tmp_path / "again.csv", PEOPLE)))
        assert "1 skipped" in result.output or "skipped" in result.output
        assert not any(ADDRESS in v for v in dump(env.db_url)["candidates"])
    finally:
        env.close()


def _write(path, text):
    path.write_text(text)
    return path
