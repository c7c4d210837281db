"""SQL injection and path traversal.

* Segment values (`where` / `only_if` operands) and imported data full of quotes, semicolons
  and `' OR 1=1 --` select exactly what the Python reference evaluator selects, on SQLite and
  PostgreSQL, and leave every table as it was.
* Custom attribute names that are not plain identifiers are refused: at campaign load, and
  row by row at import.
* Template names never leave `templates/`: in campaign files (`template: ../../etc/passwd`,
  absolute paths) and in `{% include %}` / `{% extends %}` / `{% import %}`.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select

from nurture_mail.campaigns import load_campaign
from nurture_mail.errors import CampaignError, TemplateError
from nurture_mail.importer import ImportReport, read_rows, records
from nurture_mail.models import Candidate
from nurture_mail.rules import evaluate_audience
from nurture_mail.segments import audience_clause
from nurture_mail.store import ledger, pool
from nurture_mail.templates import TemplateSet

from .conftest import NOW
from .fuzz_strategies import INJECTIONS

VALUES = INJECTIONS + ["O'Brien", 'say "hi"', "back\\slash", "50%_off", "a'); --", "' OR '1'='1"]


def import_jsonl(db, tmp_path: Path, rows: list[dict]) -> ImportReport:
    path = tmp_path / "people.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    report = ImportReport()
    recs = records(path, read_rows(path, {}), extra_tags=(), status=None, report=report)
    pool.import_records(db, str(path), recs, report, now=NOW)
    return report


def yaml_quote(value: str) -> str:
    return json.dumps(value)  # JSON strings are YAML double-quoted scalars


def table_counts(db) -> dict[str, int]:
    names = inspect(db.engine).get_table_names()
    with db.engine.connect() as conn:
        return {n: conn.exec_driver_sql(f'SELECT count(*) FROM "{n}"').scalar() for n in names}


@pytest.mark.timeout(120)
def test_hostile_values_in_rules_and_data_select_exactly_and_harm_nothing(db, tmp_path):
    rows = [
        {"email": f"p{i}@example.com", "status": "rejected", "role": value, "first_name": value,
         "note": value, "skills": [value, "python"], "tags": value.replace(";", ",")}
        for i, value in enumerate(VALUES)
    ]
    rows.append({"email": "plain@example.com", "status": "rejected", "role": "engineer", "note": "n"})
    report = import_jsonl(db, tmp_path, rows)
    assert report.errors == [] and report.created == len(rows)
    baseline = table_counts(db)
    with db.sessions() as session:
        people = [
            ledger.candidate_fields(c, pool.tags_of(session, [c.id])[c.id])
            for c in session.execute(select(Candidate)).scalars()
        ]
    campaign_file = tmp_path / "c.yaml"
    for value in VALUES:
        q = yaml_quote(value)
        for where in (
            f"role: {{eq: {q}}}", f"role: {{ne: {q}}}", f"role: {{contains: {q}}}", f"note: {{eq: {q}}}",
            f"note: {{in: [{q}, \"x\"]}}", f"note: {{not_in: [{q}]}}", f"skills: {{contains: {q}}}",
            f"first_name: {{gte: {q}}}", f"note: {{lt: {q}}}", f"note: {{not_contains: {q}}}",
        ):
            campaign_file.write_text(textwrap.dedent(f"""\
                id: c
                audience:
                  status: [rejected]
                  tags: {{none: [{q}]}}
                  where:
                    {where}
                steps:
                  - {{id: s, wait: 1d, template: t}}
                """))
            if "\x00" in value:  # never matches imported data (cleaned); PostgreSQL refuses it
                with pytest.raises(CampaignError):
                    load_campaign(campaign_file)
                continue
            audience = load_campaign(campaign_file).audience
            with db.sessions() as session:
                chosen = set(session.execute(
                    select(Candidate.email).where(audience_clause(audience, NOW))
                ).scalars())
            expected = {p["email"] for p in people if evaluate_audience(audience, p, NOW)}
            assert chosen == expected, (value, where)
    assert table_counts(db) == baseline
    with db.sessions() as session:
        assert session.execute(select(func.count()).select_from(Candidate)).scalar() == len(rows)


@pytest.mark.parametrize("name", [
    "x' OR 1=1 --", 'x"); DROP TABLE candidates; --', "a.b", "$.x", "a b", "ä", "1abc", "x" * 65, "a-b", "'",
])
def test_attribute_names_that_are_not_identifiers_are_refused(tmp_path, name):
    path = tmp_path / "c.yaml"
    path.write_text(f"id: c\naudience:\n  where:\n    {json.dumps(name)}: {{eq: 1}}\nsteps:\n  - {{id: s, wait: 1d, template: t}}\n")
    with pytest.raises(CampaignError) as error:
        load_campaign(path)
    assert error.value.line == 4


def test_imported_columns_that_are_not_identifiers_are_refused_row_by_row(db, tmp_path):
    baseline = table_counts(db)
    report = import_jsonl(db, tmp_path, [{"email": "a@example.com", "x' OR 1=1 --": "v"},
                                         {"email": "b@example.com", "ok_name": "v"}])
    assert report.created == 1 and len(report.errors) == 1 and "cannot be a custom attribute" in report.errors[0]
    assert table_counts(db)["candidates"] == baseline["candidates"] + 1


# --- path traversal in template names ------------------------------------------------------------


@pytest.fixture
def templates_dir(tmp_path: Path) -> Path:
    (tmp_path / "secret.md").write_text("---\nsubject: stolen\n---\nTOP-SECRET-OUTSIDE\n")
    (tmp_path / "secret.txt").write_text("TOP-SECRET-OUTSIDE")
    directory = tmp_path / "templates"
    directory.mkdir()
    (directory / "ok.md").write_text("---\nsubject: s\n---\nhello\n")
    (directory / "sub").mkdir()
    return directory


NAMES = ["../secret", "../../etc/passwd", "/etc/passwd", "..\\secret", "sub/../../secret", "./ok", "ok/..",
         "C:secret", "%2e%2e/secret", "ok\x00", "", "..", "/", "\\\\server\\share\\x", "file:///etc/passwd"]


@pytest.mark.parametrize("name", NAMES)
def test_campaign_template_names_stay_inside_templates(templates_dir: Path, tmp_path: Path, name: str):
    templates = TemplateSet(templates_dir)
    assert not templates.exists(name)
    path = tmp_path / "c.yaml"
    path.write_text(f"id: c\nsteps:\n  - id: s\n    wait: 1d\n    template: {json.dumps(name)}\n")
    with pytest.raises(CampaignError):
        load_campaign(path, template_exists=templates.exists)
    with pytest.raises(TemplateError):
        templates.render(name, {"company": {"postal_address": "x"}, "unsubscribe_url": "https://u/x"})


INCLUDES = [
    '{% include "../secret.txt" %}', '{% include "../secret.md" %}', '{% include "/etc/passwd" %}',
    '{% include "sub/../../secret.txt" %}', '{% include "..\\\\secret.txt" %}', '{% extends "../secret.md" %}',
    '{% import "../secret.md" as s %}', '{% from "../secret.md" import x %}',
    '{% include ["missing", "../secret.txt"] %}', '{% include "../secret.txt" ignore missing %}',
    '{% set n = "../" ~ "secret.txt" %}{% include n %}', '{% include "%2e%2e/secret.txt" %}',
]


@pytest.mark.parametrize("body", INCLUDES)
def test_includes_stay_inside_templates(templates_dir: Path, body: str):
    (templates_dir / "t.md").write_text(f"---\nsubject: s\n---\n{body}\n")
    templates = TemplateSet(templates_dir)
    context = {"company": {"name": "A", "postal_address": "x"}, "unsubscribe_url": "https://u.example/x"}
    try:
        email = templates.render("t", context)
    except TemplateError as error:
        assert error.file.startswith("templates/")
        return
    for part in (email.subject, email.text, email.html):
        assert "TOP-SECRET-OUTSIDE" not in part and "root:" not in part
