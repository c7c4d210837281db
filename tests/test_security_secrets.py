"""Secrets never reach the terminal: SMTP/IMAP/database passwords and the unsubscribe secret
are absent from stdout and stderr of failing commands, also with -v (tracebacks included)."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from nurture_mail.cli import cli
from nurture_mail.testing import free_port

PASSWORD = "Pw-7c1e9a"
ENCODED = "Pw%2D7c1e9a%40x"  # percent-encoded in the URL: "Pw-7c1e9a@x" once decoded
SECRET = "unsub-secret-51b0d3"
PEOPLE = "email,first_name,status,stage_reached,decided_at\nana@example.com,Ana,rejected,final,2026-01-01\n"


def run(args, env):
    result = CliRunner().invoke(cli, args, env=env, catch_exceptions=True)
    output = (result.stdout or "") + (result.stderr or "")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        output += repr(result.exception)
    return result, output


def assert_clean(output: str) -> None:
    assert "internal error" not in output, output
    for secret in (PASSWORD, "Pw-7c1e9a@x", ENCODED, SECRET):
        assert secret not in output, output


def smtp_urls(port: int) -> list[str]:
    return [
        f"smtp://dana:{PASSWORD}@127.0.0.1:{port}",  # nobody listens: connection refused
        f"smtp://dana:{ENCODED}@127.0.0.1:{port}",
        f"smtps://dana:{PASSWORD}@127.0.0.1:{port}",
        f"smtp://dana:{PASSWORD}@[127.0.0.1:{port}",  # malformed
        f"smtp://dana:{PASSWORD}@127.0.0.1:port",  # bad port
        f"ftp://dana:{PASSWORD}@127.0.0.1:{port}",  # wrong scheme
        f"smtp://dana:{PASSWORD}@",  # no host
        f"smtp://dana:{PASSWORD}@no-such-host.invalid:25",
    ]


def imap_urls(port: int) -> list[str]:
    return [
        f"imap://dana:{PASSWORD}@127.0.0.1:{port}/INBOX",
        f"imaps://dana:{ENCODED}@127.0.0.1:{port}/INBOX",
        f"imaps://dana:{PASSWORD}@[127.0.0.1:{port}/INBOX",
        f"imaps://dana:{PASSWORD}@127.0.0.1:port/INBOX",
        f"pop3://dana:{PASSWORD}@127.0.0.1:{port}/INBOX",
        f"imaps://:{PASSWORD}@127.0.0.1:{port}/INBOX",
    ]


@pytest.fixture
def ready(workspace, run_cli):
    (workspace / "people.csv").write_text(PEOPLE)
    assert run_cli("candidates", "import", "people.csv").exit_code == 0
    return workspace


@pytest.mark.timeout(120)
@pytest.mark.parametrize("verbose", [[], ["-v"]], ids=["quiet", "verbose"])
def test_smtp_password_and_unsubscribe_secret_never_printed(ready, verbose):
    port = free_port()
    attempted = []
    for url in smtp_urls(port):
        env = {"NURTURE_SMTP_URL": url, "NURTURE_SMTP_STARTTLS": "off", "NURTURE_UNSUBSCRIBE_SECRET": SECRET,
               "NURTURE_SMTP_TIMEOUT_SECONDS": "2", "NURTURE_SMTP_MAX_ATTEMPTS": "1"}
        # Enrol on Monday; the first step is due on Wednesday in New York's send window.
        for now in ("2027-03-01T15:00:00Z", "2027-03-03T15:00:00Z", "2027-03-10T15:00:00Z"):
            result, output = run([*verbose, "--now", now, "tick"], env)
            assert result.exit_code in (0, 1), (url, output)
            assert_clean(output)
            attempted.append(output)
        for command in (["preview", "silver-medalists"], ["plan"], ["check"], ["tick", "--dry-run"]):
            result, output = run([*verbose, "--now", "2027-03-09T10:00:00Z", *command], env)
            assert_clean(output)
    # The send really was tried (and failed) with the password in play.
    assert re.search(r"[1-9]\d* (deferred|failed)", "".join(attempted)), attempted


@pytest.mark.timeout(120)
@pytest.mark.parametrize("verbose", [[], ["-v"]], ids=["quiet", "verbose"])
def test_imap_password_never_printed(ready, verbose):
    port = free_port()
    for url in imap_urls(port):
        for args, env in (
            ([*verbose, "replies", "sync", "--imap", url], {"NURTURE_IMAP_STARTTLS": "off"}),
            ([*verbose, "replies", "sync"], {"NURTURE_IMAP_URL": url, "NURTURE_IMAP_STARTTLS": "off"}),
            ([*verbose, "tick"], {"NURTURE_IMAP_URL": url, "NURTURE_IMAP_STARTTLS": "off"}),
        ):
            result, output = run(args, env)
            assert result.exit_code in (0, 1), (url, output)
            assert_clean(output)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("verbose", [[], ["-v"]], ids=["quiet", "verbose"])
def test_database_password_never_printed(workspace, verbose):
    port = free_port()
    for url in (
        f"postgresql+psycopg://dana:{PASSWORD}@127.0.0.1:{port}/nurture",
        f"postgresql://dana:{ENCODED}@127.0.0.1:{port}/nurture",
        f"postgresql+psycopg://dana:{PASSWORD}@[127.0.0.1:{port}/nurture",
        f"nosuchdb://dana:{PASSWORD}@127.0.0.1:{port}/nurture",
    ):
        for args in ([*verbose, "--database", url, "candidates", "list"], [*verbose, "--database", url, "db", "upgrade"]):
            result, output = run(args, {})
            assert result.exit_code == 1, (url, output)
            assert_clean(output)
