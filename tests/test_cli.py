"""Guard rails for the command line: help text everywhere, README coverage, clean errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from nurture_mail.cli import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def all_commands(group: click.Group, prefix: str = "nurture"):
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        yield path, command
        if isinstance(command, click.Group):
            yield from all_commands(command, path)


COMMANDS = list(all_commands(cli))


@pytest.mark.parametrize("path,command", COMMANDS, ids=[p for p, _ in COMMANDS])
def test_every_command_has_help_text(path, command):
    assert command.help and command.help.strip(), f"{path} has no help text"
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{path} option {param.opts} has no help text"


def test_every_product_command_exists():
    names = {p for p, _ in COMMANDS}
    for expected in [
        "nurture init", "nurture check", "nurture candidates import", "nurture candidates list",
        "nurture candidates show", "nurture candidates update", "nurture preview", "nurture plan",
        "nurture tick", "nurture run", "nurture replies sync", "nurture replies classify",
        "nurture report", "nurture unsubscribe", "nurture forget", "nurture serve",
        "nurture db upgrade", "nurture demo",
    ]:
        assert expected in names


def test_every_leaf_command_appears_in_the_readme():
    text = README.read_text()
    for path, command in COMMANDS:
        if isinstance(command, click.Group):
            continue
        assert re.search(re.escape(path) + r"\b", text), f"README does not mention `{path}`"


def test_help_starts_without_the_database_layer():
    # Every command's module is imported to list it: their imports stay in the commands.
    code = ("import json, sys\nfrom nurture_mail.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(json.dumps(sorted(sys.modules)))")
    run = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True, check=True)
    loaded = set(json.loads(run.stdout.splitlines()[-1]))
    assert not {"sqlalchemy", "rich", "jinja2", "email_validator", "nurture_mail.models"} & loaded


def test_the_sender_loads_no_address_validator():
    # The daemon and its engine validate no addresses: email_validator's import stays with
    # the commands that do (import, suppress), off the startup of `nurture run`.
    code = "import json, sys\nimport nurture_mail.daemon, nurture_mail.engine\nprint(json.dumps(sorted(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(run.stdout.splitlines()[-1]))
    assert "nurture_mail.candidates" in loaded  # reached through the store ...
    assert "email_validator" not in loaded  # ... without the validator


def test_import_list_show_through_the_cli(workspace, run_cli):
    result = run_cli("candidates", "import", "candidates.csv")
    assert result.exit_code == 0, result.stderr
    assert "imported 20 candidates" in result.stdout
    listed = json.loads(run_cli("candidates", "list", "--format", "json").stdout)
    assert len(listed) == 20
    assert {"email", "first_name", "last_name", "status", "tags", "timezone", "attributes"} <= set(listed[0])
    csv_out = run_cli("candidates", "list", "--format", "csv").stdout.splitlines()
    assert csv_out[0].startswith("email,first_name,last_name,status,tags")
    assert len(csv_out) == 21
    shown = json.loads(run_cli("candidates", "show", "Maria.Garcia@example.com", "--format", "json").stdout)
    assert shown["first_name"] == "María"
    assert shown["enrollments"] == []


def test_unknown_candidate_is_one_clean_line(workspace, run_cli):
    result = run_cli("candidates", "show", "nobody@example.com")
    assert result.exit_code == 1
    assert result.stderr == "error: no candidate with address nobody@example.com\n"


def test_bad_csv_rows_go_to_stderr_and_exit_zero(workspace, run_cli):
    Path("bad.csv").write_text("email\nok@example.com\nnope\n")
    result = run_cli("candidates", "import", "bad.csv")
    assert result.exit_code == 0
    assert "bad.csv:3: invalid email 'nope'" in result.stderr


def test_unreadable_file_exits_one_without_traceback(workspace, run_cli):
    Path("latin.csv").write_bytes("email\nJos\xe9@example.com\n".encode("latin-1"))
    result = run_cli("candidates", "import", "latin.csv")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: latin.csv:2: not UTF-8 text")
    assert "Traceback" not in result.stderr


def test_usage_error_exits_two(workspace, run_cli):
    result = run_cli("candidates", "update", "a@example.com")
    assert result.exit_code == 2


def test_bad_now_flag(workspace, run_cli):
    result = run_cli("--now", "tomorrow", "candidates", "list")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: --now: bad time 'tomorrow'")


def test_unsubscribe_and_forget(workspace, run_cli):
    run_cli("candidates", "import", "candidates.csv")
    assert run_cli("unsubscribe", "emma.wilson@example.com").stdout == "emma.wilson@example.com unsubscribed\n"
    assert "already suppressed" in run_cli("unsubscribe", "emma.wilson@example.com").stdout
    result = run_cli("forget", "--yes", "emma.wilson@example.com")
    assert result.stdout == "emma.wilson@example.com forgotten\n"
    assert run_cli("candidates", "show", "emma.wilson@example.com").exit_code == 1


def test_db_upgrade_is_idempotent(workspace, run_cli):
    first = run_cli("db", "upgrade")
    assert first.exit_code == 0
    second = run_cli("db", "upgrade")
    assert "up to date" in second.stdout


def test_init_creates_the_workspace(tmp_path, run_cli):
    result = run_cli("init", str(tmp_path / "new"))
    assert result.exit_code == 0
    for rel in ("nurture.toml", "campaigns/silver-medalists.yaml", "templates/_layout.html",
                "templates/thank-you.md", "candidates.csv"):
        assert (tmp_path / "new" / rel).is_file()
    again = run_cli("init", str(tmp_path / "new"))
    assert "kept" in again.stdout


def test_demo_runs_end_to_end_through_smtp(run_cli, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    result = run_cli("demo")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "imported 20 candidates" in out
    received = int(re.search(r"the SMTP server received (\d+) messages", out).group(1))
    assert received > 20
    assert "duplicates at the server: 0" in out
