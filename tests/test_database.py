"""Schema migrations: the recorded head matches the scripts, and upgrade is idempotent."""

from __future__ import annotations

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

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


def test_upgrade_moves_messages_kept_in_the_ledger_to_sent_messages(db_url):
    """0001 kept each message in sends.body; 0002 moves them to sent_messages, unchanged
    (they still unpack), and drops the column."""
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
