"""Candidate import: every malformed-file case with its exact message, upsert, suppression."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from nurture_mail.errors import ImportFileError, NurtureError
from nurture_mail.importer import ImportReport, parse_mapping, read_rows, records
from nurture_mail.models import Candidate, CandidateTag
from nurture_mail.store import pool

from .conftest import NOW

HEADER = "email,first_name,last_name,status,tags,timezone,role,decided_at,open_to_work,skills\n"


def do_import(db, path, *, maps=(), tags=(), status=None, dry_run=False):
    report = ImportReport()
    rows = read_rows(path, parse_mapping(maps))
    recs = records(path, rows, extra_tags=tuple(tags), status=status, report=report)
    pool.import_records(db, str(path), recs, report, now=NOW, dry_run=dry_run)
    return report


def count(db, model=Candidate):
    with db.sessions() as s:
        return s.execute(select(func.count()).select_from(model)).scalar()


def test_import_creates_candidates_with_fields_tags_and_attributes(db, tmp_path):
    f = tmp_path / "c.csv"
    f.write_text(
        HEADER
        + "Ana@Example.COM,Ana,Lopez,rejected,silver-medalist;Backend,Europe/Madrid,Engineer,2026-10-01,true,python;go\n"
    )
    report = do_import(db, f)
    assert (report.created, report.errors) == (1, [])
    data = pool.show_candidate(db, "ana@example.com")
    assert data["email"] == "ana@example.com"
    assert data["full_name"] == "Ana Lopez"
    assert data["status"] == "rejected"
    assert data["tags"] == ["backend", "silver-medalist"]
    assert data["timezone"] == "Europe/Madrid"
    assert data["decided_at"] == "2026-10-01"
    assert data["attributes"] == {"open_to_work": True, "skills": "python;go"}


def test_bom_semicolons_and_quoted_fields(db, tmp_path):
    f = tmp_path / "c.csv"
    text = 'email;first_name;role\n"a@example.com";"Zoë";"Engineer; Backend"\nb@example.com;"Multi\nLine";x\n'
    f.write_bytes(b"\xef\xbb\xbf" + text.encode())
    report = do_import(db, f)
    assert report.errors == []
    assert report.created == 2
    assert pool.show_candidate(db, "a@example.com")["role"] == "Engineer; Backend"
    assert pool.show_candidate(db, "a@example.com")["first_name"] == "Zoë"


def test_missing_email_column(db, tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("Email Address,first_name\na@example.com,A\n")
    with pytest.raises(ImportFileError) as err:
        do_import(db, f)
    assert str(err.value) == (
        f"{f}:1: no email column (columns: email_address, first_name); "
        "rename one with --map 'COLUMN=email'"
    )
    assert count(db) == 0


def test_map_renames_a_column(db, tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("Email Address,First Name\na@example.com,A\n")
    report = do_import(db, f, maps=("Email Address=email",))
    assert report.created == 1
    assert pool.show_candidate(db, "a@example.com")["first_name"] == "A"


def test_bad_rows_are_reported_and_the_rest_import(db, tmp_path):
    f = tmp_path / "c.csv"
    f.write_text(
        "email,first_name,timezone,decided_at\n"
        "good@example.com,G,,\n"
        "not-an-address,X,,\n"
        ",Empty,,\n"
        "tz@example.com,T,Mars/Base,\n"
        "date@example.com,D,,yesterday\n"
        "short@example.com,S\n"
        "\n"
        "good2@example.com,G2,Asia/Tokyo,2026-01-02\n"
    )
    report = do_import(db, f)
    assert report.created == 2
    assert report.errors == [
        f"{f}:3: invalid email 'not-an-address': An email address must have an @-sign.",
        f"{f}:4: email is empty",
        f"{f}:5: unknown timezone 'Mars/Base' (use an IANA name such as Europe/Berlin)",
        f"{f}:6: invalid decided_at 'yesterday': use an ISO date such as 2026-09-30",
        f"{f}:7: expected 4 fields, got 2",
    ]


def test_duplicates_within_a_file_keep_the_first(db, tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("email,first_name\na@example.com,First\nA@EXAMPLE.com,Second\n")
    report = do_import(db, f)
    assert report.created == 1
    assert report.errors == [f"{f}:3: duplicate of line 2 (a@example.com); row skipped"]
    assert pool.show_candidate(db, "a@example.com")["first_name"] == "First"


def test_wrong_encoding_is_refused_before_anything_is_written(db, tmp_path):
    f = tmp_path / "c.csv"
    f.write_bytes("email,first_name\na@example.com,A\nb@example.com,Jos\xe9\n".encode("latin-1"))
    with pytest.raises(ImportFileError) as err:
        do_import(db, f)
    assert str(err.value) == (
        f"{f}:3: not UTF-8 text (invalid continuation byte at byte 0xe9); "
        "save the file as UTF-8 (CSV UTF-8 in Excel) and import again"
    )
    assert count(db) == 0


def test_huge_field(db, tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("email,first_name,notes\na@example.com,A," + "x" * 200_000 + "\nb@example.com,B,ok\n")
    report = do_import(db, f)
    assert report.created == 1
    assert report.errors == [f"{f}:2: notes is too long (200000 characters; the limit is 10000)"]


def test_empty_file_and_duplicate_header(db, tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("")
    with pytest.raises(ImportFileError, match=r":1: the file is empty"):
        do_import(db, f)
    f.write_text("email,email\na@example.com,b@example.com\n")
    with pytest.raises(ImportFileError, match=r":1: column 'email' appears twice"):
        do_import(db, f)


def test_bad_custom_column_name(db, tmp_path):
    f = tmp_path / "c.csv"
    f.write_text('email,"x; DROP TABLE candidates"\na@example.com,1\n')
    report = do_import(db, f)
    assert report.created == 0
    assert "cannot be a custom attribute" in report.errors[0]


def test_reimport_is_idempotent(db, tmp_path):
    f = tmp_path / "c.csv"
    f.write_text(HEADER + "a@example.com,A,B,rejected,x;y,UTC,Eng,2026-10-01,true,go\nb@example.com,B,,withdrawn,,,,,,\n")
    first = do_import(db, f)
    second = do_import(db, f)
    assert (first.created, first.updated) == (2, 0)
    assert (second.created, second.updated, second.unchanged) == (0, 0, 2)
    assert count(db) == 2
    assert count(db, CandidateTag) == 2


def test_reimport_updates_in_place_and_keeps_what_is_not_given(db, tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("email,first_name,role,team\na@example.com,A,Eng,core\n")
    do_import(db, f)
    f.write_text("email,role,level\nA@example.com,Staff Eng,senior\n")
    report = do_import(db, f)
    assert report.updated == 1
    data = pool.show_candidate(db, "a@example.com")
    assert data["first_name"] == "A"
    assert data["role"] == "Staff Eng"
    assert data["attributes"] == {"team": "core", "level": "senior"}


def test_tag_and_status_options(db, tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("email\na@example.com\n")
    do_import(db, f, tags=("Q4-Pipeline",), status="rejected")
    data = pool.show_candidate(db, "a@example.com")
    assert data["tags"] == ["q4-pipeline"]
    assert data["status"] == "rejected"


def test_dry_run_writes_nothing(db, tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("email\na@example.com\nb@example.com\n")
    report = do_import(db, f, dry_run=True)
    assert report.created == 2
    assert count(db) == 0


def test_unsubscribed_address_stays_suppressed_after_reimport(db, tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("email,status\na@example.com,rejected\n")
    do_import(db, f)
    pool.unsubscribe(db, "a@example.com", NOW)
    report = do_import(db, f)
    assert report.suppressed == 1
    assert pool.show_candidate(db, "a@example.com")["suppressed"] == "unsubscribed"
    with db.sessions() as s:
        assert pool.is_suppressed(s, db, "a@example.com") == "unsubscribed"


def test_forgotten_address_is_never_reimported(db, tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("email,first_name\na@example.com,A\n")
    do_import(db, f)
    assert pool.forget(db, "a@example.com", NOW) is True
    assert count(db) == 0
    report = do_import(db, f)
    assert report.created == 0
    assert report.errors == [f"{f}:2: a@example.com asked to be forgotten; not imported"]
    assert count(db) == 0


def test_jsonl_import(db, tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text(
        json.dumps({"email": "a@example.com", "first_name": "A", "skills": ["python", "go"], "years": 7})
        + "\n\nnot json\n"
        + json.dumps(["a list"])
        + "\n"
    )
    report = do_import(db, f)
    assert report.created == 1
    assert report.errors == [
        f"{f}:3: invalid JSON: Expecting value (column 1)",
        f"{f}:4: expected a JSON object per line",
    ]
    assert pool.show_candidate(db, "a@example.com")["attributes"] == {"skills": ["python", "go"], "years": 7}


def test_status_hired_via_update_is_recorded(db, tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("email,status\na@example.com,rejected\n")
    do_import(db, f)
    data = pool.update_candidate(db, "a@example.com", status="hired", add_tags=["alumni"], remove_tags=[], now=NOW)
    assert data["status"] == "hired"
    assert data["tags"] == ["alumni"]


def test_only_true_and_false_become_booleans(db, tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("email,country,open_to_work,years,score\na@example.com,NO,false,7,3.5\n")
    do_import(db, f)
    assert pool.show_candidate(db, "a@example.com")["attributes"] == {
        "country": "NO", "open_to_work": False, "years": 7, "score": 3.5,
    }


def test_reserved_column_is_refused(db, tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("email,created_at\na@example.com,2020-01-01\n")
    with pytest.raises(ImportFileError) as err:
        do_import(db, f)
    assert str(err.value) == f"{f}:1: column 'created_at' is reserved (set by nurture itself); rename it with --map"


# --- values longer than their column: a clear message, never a database error ---------------
# candidate_tags.tag is VARCHAR(100) and candidates.status VARCHAR(50): PostgreSQL refuses
# longer values (SQLite would store them). Both databases must give the same clean answer.


def tags_of(db, email):
    return pool.show_candidate(db, email)["tags"]


def test_tag_option_longer_than_the_column_stops_the_import_before_writing(db, tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("email\na@example.com\nb@example.com\n")
    with pytest.raises(NurtureError) as error:
        do_import(db, f, tags=("ok", "x" * 101))
    assert str(error.value) == (
        "--tag: tag 'xxxxxxxxxxxxxxxxxxxx'... is too long (101 characters; the limit is 100)"
    )
    with pytest.raises(NurtureError) as error:
        do_import(db, f, status="s" * 51)
    assert str(error.value).startswith("--status: invalid status 'sssssssssssssssssssss")
    assert count(db) == 0
    report = do_import(db, f, tags=(" Q4 ", "y" * 100), status="Rejected")
    assert (report.created, report.errors) == (2, [])
    assert tags_of(db, "a@example.com") == ["q4", "y" * 100]  # 100 fits the column exactly
    assert pool.show_candidate(db, "b@example.com")["status"] == "rejected"


def test_a_csv_tag_longer_than_the_column_is_reported_with_its_line(db, tmp_path):
    f = tmp_path / "c.csv"
    f.write_text(
        "email,tags\n"
        f"a@example.com,ok;{'x' * 101}\n"
        f"b@example.com,{'y' * 100}\n"
        f"c@example.com,\"z;{'s' * 300}\"\n"
    )
    report = do_import(db, f)
    assert report.errors == [
        f"{f}:2: tag 'xxxxxxxxxxxxxxxxxxxx'... is too long (101 characters; the limit is 100)",
        f"{f}:4: tag 'ssssssssssssssssssss'... is too long (300 characters; the limit is 100)",
    ]
    assert (report.created, report.skipped) == (1, 2)
    assert tags_of(db, "b@example.com") == ["y" * 100]


def test_update_refuses_tags_and_statuses_the_database_cannot_hold(workspace, run_cli, db_url):
    assert run_cli("candidates", "import", "candidates.csv").exit_code == 0
    email = "maria.garcia@example.com"
    assert email in run_cli("candidates", "list", "--format", "csv").stdout
    before = run_cli("candidates", "show", email, "--format", "json").stdout
    cases = [
        (("--tag", "x" * 101),
         "error: --tag: tag 'xxxxxxxxxxxxxxxxxxxx'... is too long (101 characters; the limit is 100)\n"),
        (("--tag", "ok", "--untag", "u" * 150),
         "error: --untag: tag 'uuuuuuuuuuuuuuuuuuuu'... is too long (150 characters; the limit is 100)\n"),
        (("--tag", "  "), "error: --tag: a tag cannot be empty\n"),
        (("--tag", "a;b"), "error: --tag: 'a;b' contains ';'; give one --tag per tag\n"),
        (("--status", "s" * 51),
         "error: --status: invalid status 'sssssssssssssssssssssssssssssssssssssssssssssssssss': "
         "use a single lower-case word such as rejected\n"),
        (("--status", "Not hired!"),
         "error: --status: invalid status 'not hired!': use a single lower-case word such as rejected\n"),
    ]
    for args, message in cases:
        result = run_cli("candidates", "update", email, *args)
        assert (result.exit_code, result.stderr) == (1, message), args
        assert "Traceback" not in result.stderr
    assert run_cli("candidates", "show", email, "--format", "json").stdout == before
    result = run_cli("candidates", "update", email, "--tag", " Alumni\t", "--tag", "t" * 100,
                     "--status", "Withdrawn")
    assert result.exit_code == 0, result.stderr
    shown = json.loads(run_cli("candidates", "show", email, "--format", "json").stdout)
    assert shown["status"] == "withdrawn"
    assert {"alumni", "t" * 100} <= set(shown["tags"])


def test_postgresql_import_looks_candidates_up_by_index_as_the_table_grows(pg_url, tmp_path):
    """One transaction holds the whole file, so the planner's statistics still describe an
    empty table while it fills: planned for that, each batch's lookup scans every row so far
    (quadratic: 196 s for 100,000 new candidates, 5 s for 50,000). Every lookup of the import
    is read here with EXPLAIN, on its own connection and parameters, as it runs."""
    from nurture_mail.database import open_database

    from .pg_plans import explained

    database = open_database(pg_url)
    f = tmp_path / "c.csv"
    size = 3 * pool.BATCH + 500
    f.write_text("email,first_name\n" + "".join(f"p{i}@example.com,P{i}\n" for i in range(size)))
    try:
        lookups = lambda sql: sql.startswith("SELECT") and "FROM candidates" in sql  # noqa: E731
        with explained(database.engine, lookups) as plans:
            report = do_import(database, f)
    finally:
        database.dispose()
    assert report.created == size
    assert len(plans) >= 8  # per batch: the addresses looked up, then the new rows' ids
    assert not [plan for plan in plans if "Seq Scan on candidates" in plan], plans
