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
