"""Schema migrations: the recorded head matches the scripts, and upgrade is idempotent."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from nurture_mail.database import MIGRATIONS, SCHEMA_HEAD, current_revision, open_database


def test_schema_head_constant_matches_migrations():
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_current_head() == SCHEMA_HEAD


def test_open_creates_every_table_and_is_idempotent(db_url):
    db = open_database(db_url)
    tables = set(inspect(db.engine).get_table_names())
    assert {"candidates", "candidate_tags", "campaigns", "enrollments", "sends", "inbound",
            "suppressions", "events", "meta", "mailbox_state"} <= tables
    salt = db.salt
    db.dispose()
    again = open_database(db_url)
    assert again.salt == salt
    assert current_revision(again.engine) == SCHEMA_HEAD
    again.dispose()


def test_a_sqlite_install_never_loads_the_postgresql_dialect(tmp_path):
    # Importing SQLAlchemy's PostgreSQL dialect costs a tenth of the daemon's imports: on
    # SQLite, the daemon, a send and a report run without it (the first migration, once, may).
    url = f"sqlite:///{tmp_path / 'x.db'}"
    open_database(url).dispose()
    code = (
        "import json, sys\n"
        "from datetime import UTC, datetime\n"
        "import nurture_mail.daemon, nurture_mail.engine\n"
        "from nurture_mail import pool_report, reports\n"
        "from nurture_mail.database import open_database\n"
        "from nurture_mail.store import inbound, ledger, pool\n"
        f"db = open_database({url!r})\n"
        "now = datetime(2027, 3, 1, tzinfo=UTC)\n"
        "with db.sessions.begin() as s:\n"
        "    pool.suppress(s, db, 'gone@example.com', 'bounced', now)\n"
        "    ledger.claim(s, due_by=now, lease_until=now, owner='me', limit=5, campaign_ids=['c'])\n"
        "reports.gather(db, now=now)\n"
        "pool_report.gather_pool(db, now=now, limit=10)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(run.stdout.splitlines()[-1]))
    # the store's modules that hold PostgreSQL statements were loaded ...
    assert {"nurture_mail.store.enrolment", "nurture_mail.store.sent_messages"} <= loaded
    assert not {m for m in loaded if m.startswith("sqlalchemy.dialects.postgresql")}  # ... not PostgreSQL


def test_postgresql_gets_the_partial_indexes_where_clauses(pg_url):
    """Given late (models.postgresql_options), the WHERE is in the models' indexes for
    PostgreSQL as soon as an engine for it exists, and in the indexes the migrations build."""
    code = (
        "from sqlalchemy.schema import CreateIndex\n"
        "from nurture_mail.database import create_db_engine\n"
        "from nurture_mail.models import Send\n"
        f"engine = create_db_engine({pg_url!r})\n"
        "index = next(i for i in Send.__table__.indexes if i.name == 'ix_sends_claimable')\n"
        "print(CreateIndex(index).compile(dialect=engine.dialect))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "WHERE state IN ('scheduled', 'deferred')" in run.stdout
    db = open_database(pg_url)
    try:
        with db.engine.connect() as conn:
            found = dict(conn.execute(text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()")).all())
    finally:
        db.dispose()
    assert "WHERE" in found["ix_sends_claimable"] and "WHERE" in found["ix_inbound_replies"]


def test_sqlite_uses_wal(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 'x.db'}")
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    db.dispose()


def _alembic(conn, revision: str) -> None:
    from alembic import command

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)


def test_migrations_build_exactly_the_models_schema(db_url):
    """What the migration scripts create is what models.py declares (no drift either way)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from nurture_mail.models import Base

    db = open_database(db_url)
    try:
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
    finally:
        db.dispose()


@pytest.mark.parametrize("half_done", [False, True], ids=["fresh", "after-a-half-done-upgrade"])
def test_upgrade_moves_messages_kept_in_the_ledger_to_sent_messages(db_url, half_done):
    """0001 kept each message in sends.body; 0002 moves them to sent_messages, unchanged
    (they still unpack), and drops the column; it also completes an upgrade that stopped
    after creating its tables (SQLite runs DDL outside the transaction)."""
    import zlib
    from datetime import datetime

    from sqlalchemy import create_engine, text

    from nurture_mail.store.sent_messages import unpack

    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            _alembic(conn, "0001")
            now = datetime(2027, 3, 1, 9, 0)
            conn.execute(text("INSERT INTO candidates (id, email, status, attributes, token_key, created_at, updated_at) "
                              "VALUES (1, 'a@example.com', 'rejected', '{}', 'k1', :now, :now)"), {"now": now})
            conn.execute(text("INSERT INTO campaigns (id, name, status, steps, updated_at) "
                              "VALUES ('c', 'C', 'active', '[]', :now)"), {"now": now})
            conn.execute(text("INSERT INTO enrollments (id, candidate_id, campaign_id, state, enrolled_at, needs_next) "
                              "VALUES (1, 1, 'c', 'active', :now, false)"), {"now": now})
            for sid, body in ((1, zlib.compress(b"message one")), (2, None)):
                conn.execute(text(
                    "INSERT INTO sends (id, enrollment_id, campaign_id, candidate_id, step_id, step_number, state, "
                    "due_at, message_id, data_started, attempts, body, created_at, updated_at) VALUES "
                    "(:id, 1, 'c', 1, :step, 1, 'sent', :now, :mid, true, 1, :body, :now, :now)"),
                    {"id": sid, "step": f"s{sid}", "mid": f"m{sid}@x", "body": body, "now": now})
        if half_done:  # an earlier upgrade stopped after creating the new tables
            with engine.begin() as conn:
                conn.exec_driver_sql("CREATE TABLE message_dictionaries (id INTEGER PRIMARY KEY)")
                conn.exec_driver_sql("CREATE TABLE sent_messages (send_id INTEGER PRIMARY KEY, "
                                     "dictionary_id INTEGER, body BYTEA NOT NULL)"
                                     .replace("BYTEA", "BLOB" if db_url.startswith("sqlite") else "BYTEA"))
        db = open_database(db_url)  # upgrades to the head
        try:
            with db.engine.connect() as conn:
                rows = conn.execute(text("SELECT send_id, dictionary_id, body FROM sent_messages")).all()
                columns = {c["name"] for c in inspect(conn).get_columns("sends")}
            assert [(r[0], r[1], unpack(r[2])) for r in rows] == [(1, None, b"message one")]
            assert "body" not in columns
        finally:
            db.dispose()
    finally:
        engine.dispose()


def test_upgrade_gives_stored_inbound_rows_their_sends_copies(db_url):
    """0003: messages stored before it get their send's step and variant, and its sent_at when
    the send was accepted; unmatched ones stay as they were."""
    from datetime import datetime

    from sqlalchemy import create_engine, select

    from nurture_mail.models import Inbound

    engine = create_engine(db_url)
    try:
        now = datetime(2027, 3, 1, 9, 0)
        with engine.begin() as conn:
            _alembic(conn, "0002")
            conn.execute(text("INSERT INTO candidates (id, email, status, attributes, token_key, created_at, updated_at) "
                              "VALUES (1, 'a@example.com', 'rejected', '{}', 'k1', :now, :now)"), {"now": now})
            conn.execute(text("INSERT INTO enrollments (id, candidate_id, campaign_id, state, enrolled_at, needs_next) "
                              "VALUES (1, 1, 'c', 'active', :now, false)"), {"now": now})
            for sid, state, variant in ((1, "sent", "b"), (2, "unknown", None)):
                conn.execute(text(
                    "INSERT INTO sends (id, enrollment_id, campaign_id, candidate_id, step_id, step_number, variant, "
                    "state, due_at, message_id, data_started, attempts, sent_at, created_at, updated_at) VALUES "
                    "(:id, 1, 'c', 1, :step, :id, :variant, :state, :now, :mid, true, 1, :sent, :now, :now)"),
                    {"id": sid, "step": f"s{sid}", "variant": variant, "state": state, "mid": f"m{sid}@x",
                     "now": now, "sent": now if state == "sent" else None})
            for iid, send in ((1, 1), (2, 2), (3, None)):
                conn.execute(text(
                    "INSERT INTO inbound (id, dedupe_key, received_at, kind, send_id, campaign_id) "
                    "VALUES (:id, :key, :now, 'reply', :send, 'c')"),
                    {"id": iid, "key": f"k{iid}", "now": now, "send": send})
        db = open_database(db_url)  # upgrades to the head
        try:
            with db.engine.connect() as conn:
                rows = conn.execute(select(Inbound.id, Inbound.step_id, Inbound.variant, Inbound.send_sent_at)
                                    .order_by(Inbound.id)).all()
                indexes = {i["name"]: i["column_names"] for i in inspect(conn).get_indexes("inbound")}
            assert [tuple(r) for r in rows] == [(1, "s1", "b", now), (2, "s2", None, None), (3, None, None, None)]
            assert indexes["ix_inbound_unaccepted"] == ["send_id"]
        finally:
            db.dispose()
    finally:
        engine.dispose()


def test_downgrade_puts_every_message_back_in_its_ledger_row(tmp_path, db_url):
    """0002 -> 0001: messages packed against a dictionary are unpacked and stored plain in
    sends.body, as 0001 read them."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import create_engine, text

    from nurture_mail.store import sent_messages
    from nurture_mail.store.sent_messages import unpack
    from nurture_mail.testing import SmtpSink

    from .delivery_env import DeliveryEnv

    mon = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
    sink = SmtpSink().start()
    env = DeliveryEnv.create(tmp_path / "ws", db_url, sink)
    try:
        env.import_csv("email,first_name,status\na@example.com,Ann,rejected\nb@example.com,Bo,rejected\n", mon)
        t = mon
        while len(sink.received) < 2 and t < mon + timedelta(days=4):
            env.tick(t)
            t += timedelta(hours=1)
        db = open_database(db_url)
        with db.sessions.begin() as session:
            kept = sent_messages.read(session, [s.id for s in env.sends()])
            dictionaries = session.execute(text("SELECT count(*) FROM sent_messages "
                                                "WHERE dictionary_id IS NOT NULL")).scalar()
        db.dispose()
        assert len(kept) == 2 and dictionaries == 2
        engine = create_engine(db_url)
        try:
            with engine.begin() as conn:
                from alembic import command

                cfg = Config()
                cfg.set_main_option("script_location", str(MIGRATIONS))
                cfg.attributes["connection"] = conn
                command.downgrade(cfg, "0001")
            with engine.connect() as conn:
                back = dict(conn.execute(text("SELECT id, body FROM sends WHERE body IS NOT NULL")).all())
            assert {sid: unpack(body) for sid, body in back.items()} == kept
        finally:
            engine.dispose()
    finally:
        env.close()
        sink.stop()


def test_a_pinned_connection_does_not_carry_a_failed_commit_into_the_next_transaction(tmp_path):
    """A COMMIT that fails (a deferred foreign key here) can leave the driver inside the
    transaction: the next transaction must start clean on a new connection, not join it."""
    import pytest
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import IntegrityError

    url = f"sqlite:///{tmp_path / 'x.db'}"
    db = open_database(url)
    try:
        with db.engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
            conn.exec_driver_sql("CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER "
                                 "REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)")
        pinned = db.pinned_sessions()
        with pytest.raises(IntegrityError), pinned.begin() as session:
            session.execute(text("INSERT INTO child (parent_id) VALUES (99)"))
        with pinned.begin() as session:
            session.execute(text("INSERT INTO parent (id) VALUES (1)"))
        pinned.close()
        other = create_engine(url)
        with other.connect() as conn:
            rows = (conn.exec_driver_sql("SELECT count(*) FROM parent").scalar(),
                    conn.exec_driver_sql("SELECT count(*) FROM child").scalar())
        other.dispose()
        assert rows == (1, 0)
    finally:
        db.dispose()


def test_a_pinned_postgresql_connection_dropped_by_the_server_is_replaced(pg_url):
    """What pool_pre_ping did at each checkout: a connection the server dropped while the
    sender waited is found dead before the next transaction and replaced."""
    from sqlalchemy import create_engine, text

    db = open_database(pg_url)
    admin = create_engine(pg_url)
    try:
        pinned = db.pinned_sessions()
        pinned.IDLE_PING_SECONDS = 0  # ping before every transaction (no waiting in a test)
        with pinned.begin() as session:
            first = session.execute(text("SELECT pg_backend_pid()")).scalar()
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        with pinned.begin() as session:
            second = session.execute(text("SELECT pg_backend_pid()")).scalar()
        assert second != first
        pinned.close()
    finally:
        admin.dispose()
        db.dispose()


def test_upgrade_puts_the_claimable_index_in_claim_order(db_url):
    """0004: `ix_sends_claimable` becomes (due_at, id), still partial; running it again (as
    after a failure half-way) changes nothing."""
    from sqlalchemy import create_engine

    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            _alembic(conn, "0003")
        with engine.connect() as conn:
            before = {i["name"]: i["column_names"] for i in inspect(conn).get_indexes("sends")}
        open_database(db_url).dispose()  # upgrades to the head
        with engine.begin() as conn:
            _alembic(conn, "0004")
        with engine.connect() as conn:
            after = {i["name"]: i for i in inspect(conn).get_indexes("sends")}
            if conn.dialect.name == "postgresql":
                where = conn.execute(text(
                    "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_sends_claimable' "
                    "AND schemaname = current_schema()")).scalar_one()
            else:
                where = conn.exec_driver_sql(
                    "SELECT sql FROM sqlite_master WHERE name = 'ix_sends_claimable'").scalar_one()
    finally:
        engine.dispose()
    assert before["ix_sends_claimable"] == ["due_at"]
    assert after["ix_sends_claimable"]["column_names"] == ["due_at", "id"]
    assert "WHERE" in where and "scheduled" in where
