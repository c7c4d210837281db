"""`nurture report` and `nurture report pool` through the CLI: every format, -o, the options
and their errors, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

from nurture_mail.database import open_database

from .report_ledger import build_alpha

NOW = "2027-02-03T09:00:00Z"


def seeded(db_url):
    db = open_database(db_url)
    try:
        build_alpha(db)
    finally:
        db.dispose()


def test_report_formats(run_cli, workspace, db_url, tmp_path):
    seeded(db_url)
    out = json.loads(run_cli("--now", NOW, "report", "--format", "json").stdout)
    alpha = out["campaigns"][0]
    for key in ("id", "enrolled", "sent", "replied", "reply_rate", "auto_replies", "bounced",
                "unsubscribed", "failed", "unknown", "steps"):
        assert key in alpha
    for key in ("id", "sent", "replied", "reply_rate", "variants"):
        assert key in alpha["steps"][0]
    rows = list(csv.DictReader(io.StringIO(run_cli("--now", NOW, "report", "alpha", "--format", "csv").stdout)))
    assert [(r["level"], r["step"], r["variant"]) for r in rows] == [
        ("campaign", "", ""), ("step", "s1", ""), ("variant", "s1", "a"), ("variant", "s1", "b"),
        ("step", "s2", "")]
    assert rows[1]["reply_rate"] == "0.5" and rows[0]["exits"] == "bounced=1;replied=4;unsubscribed=1"
    table = run_cli("--now", NOW, "report").stdout
    assert "alpha" in table and "50.0%" in table and "not significant yet" in table
    target = tmp_path / "r.html"
    result = run_cli("--now", NOW, "report", "--format", "html", "-o", str(target))
    assert result.exit_code == 0 and result.stdout == ""
    html = target.read_text()
    assert "Alpha &lt;campaign&gt;" in html and "<campaign>" not in html and "<svg" in html
    assert "<script" not in html


def test_report_since_and_errors(run_cli, workspace, db_url):
    seeded(db_url)
    out = json.loads(run_cli("--now", NOW, "report", "--since", "2027-01-04T11:00:00Z", "--format", "json").stdout)
    assert out["campaigns"][0]["steps"][0]["sent"] == 6
    relative = json.loads(run_cli("--now", NOW, "report", "--since", "60d", "--format", "json").stdout)
    assert relative["since"] == "2026-12-05T09:00:00Z"
    bad = run_cli("report", "--since", "yesterday")
    assert bad.exit_code == 2 and "--since" in bad.stderr
    missing = run_cli("report", "nope")
    assert missing.exit_code == 1 and "no campaign 'nope'" in missing.stderr
    assert run_cli("report", "alpha", "--owner", "dana").exit_code == 2
    assert run_cli("report", "pool", "--since", "30d").exit_code == 2
    assert run_cli("report", "pool", "--warm-days", "200").exit_code == 1


def test_report_pool(run_cli, workspace, db_url):
    seeded(db_url)
    out = json.loads(run_cli("--now", NOW, "report", "pool", "--format", "json").stdout)
    assert out["counts"] == {"warm": 6, "cooling": 6, "cold": 3}
    assert out["warm_days"] == 90 and out["cold_days"] == 180
    filtered = json.loads(run_cli("--now", NOW, "report", "pool", "--owner", "dana", "--tag", "python",
                                  "--group", "warm", "--format", "json").stdout)
    assert [c["email"] for c in filtered["candidates"]] == ["c0@example.com"]
    rows = list(csv.DictReader(io.StringIO(
        run_cli("--now", NOW, "report", "pool", "--campaign", "beta", "--sort", "email", "--format", "csv").stdout)))
    assert [(r["email"], r["group"]) for r in rows] == [("b0@example.com", "cold"), ("b1@example.com", "cold")]
    table = run_cli("--now", NOW, "report", "pool").stdout
    assert "6 warm, 6 cooling, 3 cold" in table
    html = run_cli("--now", NOW, "report", "pool", "--format", "html").stdout
    assert "Warm pool" in html and "Let&#39;s talk" in html


# Runs the command in a fresh interpreter and prints the modules it loaded.
LOADED = """
import json, sys
from nurture_mail.cli import cli
try:
    cli(sys.argv[1:], prog_name="nurture")
except SystemExit as exit:
    assert not exit.code, exit.code
print(json.dumps(sorted(sys.modules)))
"""


def loaded_by(*args: str) -> set[str]:
    run = subprocess.run([sys.executable, "-c", LOADED, *args], capture_output=True, text=True, check=True)
    return set(json.loads(run.stdout.splitlines()[-1]))


def test_report_loads_only_what_its_format_needs(workspace, db_url, tmp_path):
    # Start-up is most of what a report costs: json and csv need neither rich (the table) nor
    # Jinja2 (html), nor email_validator (candidates); no command's start loads them.
    seeded(db_url)
    for fmt in ("json", "csv"):
        loaded = loaded_by("--now", NOW, "report", "--format", fmt, "-o", str(tmp_path / f"r.{fmt}"))
        assert "nurture_mail.reports" in loaded
        assert not {"rich", "jinja2", "email_validator"} & loaded, fmt
    table = loaded_by("--now", NOW, "report", "-o", str(tmp_path / "r.txt"))
    assert "rich" in table and not {"jinja2", "email_validator"} & table
