"""Shared fixtures: a database URL per test (SQLite file, or an isolated PostgreSQL schema when
NURTURE_TEST_DATABASE_URL is set), a fixed clock, a workspace, and the CLI runner.

With NURTURE_REQUIRE_SERVICES=1 (set by .ci/run) a test that needs PostgreSQL or Dovecot fails
instead of skipping, so CI cannot go green with those tests silently skipped.
"""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from nurture_mail.cli import cli

PG_URL = os.environ.get("NURTURE_TEST_DATABASE_URL", "")
REQUIRE = os.environ.get("NURTURE_REQUIRE_SERVICES") == "1"
CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="Run the long variants too.")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="long variant: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def need_service(reason: str) -> None:
    """Skip for a missing server, or fail when CI demands every service."""
    if REQUIRE:
        pytest.fail(f"required service missing: {reason}")
    pytest.skip(reason)


def _pg_schema_url(base: str):
    from sqlalchemy import create_engine, text

    schema = "t_" + secrets.token_hex(6)
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in base else "?"
    return admin, schema, f"{base}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite"] + (["postgresql"] if PG_URL else []))
def db_url(request, tmp_path):
    """A fresh, empty database: a SQLite file, or (when configured) a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'nurture.db'}"
        return
    from sqlalchemy import text

    admin, schema, url = _pg_schema_url(PG_URL)
    try:
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def pg_url():
    """A PostgreSQL schema of its own, for tests that are about PostgreSQL alone."""
    if not PG_URL:
        need_service("PostgreSQL: set NURTURE_TEST_DATABASE_URL")
    from sqlalchemy import text

    admin, schema, url = _pg_schema_url(PG_URL)
    try:
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def db(db_url):
    from nurture_mail.database import open_database

    database = open_database(db_url)
    yield database
    database.dispose()


@pytest.fixture
def workspace(tmp_path, db_url, monkeypatch):
    """An initialised working directory whose database is the test's database."""
    from nurture_mail.scaffold import create_workspace

    ws = tmp_path / "ws"
    create_workspace(ws)
    monkeypatch.chdir(ws)
    for name in list(os.environ):
        if name.startswith("NURTURE_") and name not in ("NURTURE_TEST_DATABASE_URL", "NURTURE_REQUIRE_SERVICES"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NURTURE_DATABASE_URL", db_url)
    return ws


@pytest.fixture
def run_cli():
    """Invoke the real CLI in-process; returns the click Result (stdout and stderr apart)."""

    def invoke(*args: str, input: str | None = None):
        runner = CliRunner()
        return runner.invoke(cli, list(args), input=input, catch_exceptions=False)

    return invoke
