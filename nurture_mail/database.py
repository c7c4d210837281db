"""Opening the database: engine options per dialect and schema migrations on start.

SQLite runs in WAL mode with foreign keys on and a busy timeout; PostgreSQL through psycopg 3.
The schema is owned by Alembic (`nurture_mail/migrations`); `open_database` upgrades it when the
recorded revision is behind, so a fresh directory just works.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, event, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from .errors import ConfigError, NurtureError
from .models import Meta, postgresql_options

MIGRATIONS = Path(__file__).with_name("migrations")
# The newest revision in migrations/versions; a test keeps the two in step.
SCHEMA_HEAD = "0004"


@dataclass
class Database:
    """An engine, a session factory and the install's suppression salt."""

    engine: Engine
    sessions: sessionmaker[Session]
    salt: str

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def shared_across_threads(self) -> bool:
        """Whether connections opened in different threads see the same data: not for an
        in-memory SQLite database, where each thread's connection is a database of its own."""
        return not (self.dialect == "sqlite" and self.engine.url.database in (None, "", ":memory:"))

    def email_hash(self, email: str) -> str:
        """Salted hash of a normalised address: how suppressions are looked up and kept."""
        return hashlib.sha256((self.salt + email).encode()).hexdigest()

    def dispose(self) -> None:
        self.engine.dispose()

    def pinned_sessions(self) -> PinnedSessions:
        """Sessions on one connection held until `close()`, for a loop of short transactions
        (the sender's): no pool checkout, reset and new Session per transaction."""
        return PinnedSessions(self.engine)


class PinnedSessions:
    """`sessionmaker.begin()` (a transaction, committed at the end of the `with`) on one
    connection and one Session, reused by every transaction until `close()`.

    What the pool did at each checkout is done here: a transaction that fails (a statement,
    or the COMMIT itself, after which the driver may still be inside it) takes its connection
    with it, and the next one opens a fresh one; on PostgreSQL a connection idle for a while
    (the sender waiting on SMTP) is pinged first and replaced if the server dropped it."""

    IDLE_PING_SECONDS = 1.0

    def __init__(self, engine: Engine):
        self._engine = engine
        self._ping = engine.dialect.name != "sqlite"
        self._connection: Connection | None = None
        self._session: Session | None = None
        self._used = 0.0

    @contextmanager
    def begin(self) -> Iterator[Session]:
        if self._connection is not None and self._ping and (
            time.monotonic() - self._used > self.IDLE_PING_SECONDS and not self._alive()
        ):
            self._discard()
        if self._connection is None:
            self._connection = self._engine.connect()
            self._session = Session(bind=self._connection, expire_on_commit=False)
        try:
            with self._session.begin():
                yield self._session
        except BaseException:
            self._discard()
            raise
        finally:
            self._used = time.monotonic()

    def _alive(self) -> bool:
        try:
            return bool(self._engine.dialect.do_ping(self._connection.connection.dbapi_connection))
        except Exception:  # noqa: BLE001 - any failure means: use another connection
            return False

    def _discard(self) -> None:
        session, connection = self._session, self._connection
        self._session = self._connection = None
        if session is not None:
            session.close()
        if connection is not None:
            connection.invalidate()  # never back to the pool: its state is unknown
            connection.close()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
        if self._connection is not None:
            self._connection.close()
        self._session = self._connection = None


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA mmap_size=67108864")
    cursor.close()


def create_db_engine(url: str) -> Engine:
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 30})
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url.split("://", 1)[1]
            engine = create_engine(url, pool_pre_ping=True)
            if engine.dialect.name == "postgresql":
                postgresql_options()
    except ArgumentError as exc:
        raise ConfigError(f"database url: {exc}") from None
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"database url needs the {exc.name} driver: pip install 'nurture-mail[postgres]'"
        ) from None
    return engine


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except (OperationalError, ProgrammingError):
        return None


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def open_database(url: str, *, migrate: bool = True) -> Database:
    engine = create_db_engine(url)
    try:
        if migrate and current_revision(engine) != SCHEMA_HEAD:
            upgrade(engine)
        sessions = sessionmaker(engine, expire_on_commit=False)
        salt = _ensure_salt(sessions)
    except OperationalError as exc:
        engine.dispose()
        raise NurtureError(f"cannot open database {_safe(url)}: {exc.orig}") from None
    return Database(engine=engine, sessions=sessions, salt=salt)


def _ensure_salt(sessions: sessionmaker[Session]) -> str:
    with sessions.begin() as session:
        row = session.execute(select(Meta.value).where(Meta.key == "suppression_salt")).scalar()
        if row:
            return row
    salt = secrets.token_hex(16)
    try:
        with sessions.begin() as session:
            session.add(Meta(key="suppression_salt", value=salt))
    except Exception:  # another process won the race; read theirs
        pass
    with sessions.begin() as session:
        return session.execute(select(Meta.value).where(Meta.key == "suppression_salt")).scalar_one()


def _safe(url: str) -> str:
    from .config import mask_url

    return mask_url(url) or ""
