"""Candidate import fuzzing, through the importer and `pool.import_records` on a SQLite file.

Whatever the file holds, an import either succeeds (bad rows reported, the rest written) or
fails as a whole with an ImportFileError and writes nothing: the table counts before and after
a file-level error are equal. Never another exception type, never a hang.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from hypothesis import strategies as st
from sqlalchemy import func, select

from nurture_mail.database import open_database
from nurture_mail.errors import ImportFileError, NurtureError
from nurture_mail.importer import ImportReport, read_rows, records
from nurture_mail.models import Candidate, CandidateTag, Enrollment, Event, Suppression
from nurture_mail.store import pool

from .conftest import NOW
from .fuzz_strategies import INJECTIONS, fuzz, mutated_bytes, nasty_text, structures

SKELETON_CSV = (Path(__file__).resolve().parents[1] / "nurture_mail" / "skeleton" / "candidates.csv").read_bytes()
VALID = [
    SKELETON_CSV,
    b"email,first_name,status,tags\ndana@example.com,Dana,rejected,a;b\nlee@example.com,Lee,withdrawn,\n",
    b"\xef\xbb\xbfEmail;First Name;Country\nana@example.org;Ana;DE\n\"bo@example.org\";\"B\"\"o\";NO\n",
    b'email,notes\r\n"x@example.com","line one\r\nline two, with comma"\r\n',
]
CSV_FRAGMENTS = [b",", b";", b'"', b'""', b"\n", b"\r\n", b"\r", b"\x00", b"\xef\xbb\xbf", b"\xff", b"@",
                 b"email", b"status", b"created_at", b"tags", b"decided_at", b"2026-13-01", b"hired",
                 b"timezone", b"Mars/Olympus", b"\t", b"'", b"=cmd|' /C calc'!A0"]
TABLES = (Candidate, CandidateTag, Enrollment, Event, Suppression)


@pytest.fixture
def importer(tmp_path: Path):
    """(path, run): `run(data)` imports bytes written to `path` and checks the invariants."""
    db = open_database(f"sqlite:///{tmp_path / 'fuzz.db'}")
    # One suppressed and one forgotten address, so every import meets both.
    pool.unsubscribe(db, "dana@example.com", NOW)
    pool.forget(db, "lee@example.com", NOW)

    def counts():
        with db.sessions() as session:
            return {t.__tablename__: session.execute(select(func.count()).select_from(t)).scalar() for t in TABLES}

    def run(path: Path, data: bytes) -> None:
        path.write_bytes(data)
        before = counts()
        report = ImportReport()
        try:
            recs = records(path, read_rows(path, {}), extra_tags=("fuzz",), status=None, report=report)
            pool.import_records(db, str(path), recs, report, now=NOW)
        except ImportFileError as error:
            assert error.file == str(path)
            assert counts() == before, "a file-level error left a partial write"
            return
        after = counts()
        assert after["candidates"] == before["candidates"] + report.created
        assert after["events"] == before["events"] + 1
        assert after["suppressions"] == before["suppressions"]
        assert all(line.startswith(f"{path}:") for line in report.errors)
        with db.sessions() as session:
            assert session.execute(
                select(func.count()).select_from(Candidate).where(Candidate.email == "lee@example.com")
            ).scalar() == 0, "a forgotten address came back"

    yield run
    db.dispose()


def _run(request, importer, tmp_path, strategy, name="people.csv"):
    path = tmp_path / name
    return fuzz(request, strategy, lambda data: importer(path, data))


@pytest.mark.timeout(300)
def test_random_bytes(request, importer, tmp_path):
    prefix = st.sampled_from([b"", b"email\n", b"email,first_name\n", b"email;x\n"])
    _run(request, importer, tmp_path, st.tuples(prefix, st.binary(max_size=500)).map(b"".join))


@pytest.mark.timeout(300)
def test_mutated_valid_csv(request, importer, tmp_path):
    _run(request, importer, tmp_path, mutated_bytes(VALID, CSV_FRAGMENTS))


CELL = st.one_of(
    nasty_text,
    st.sampled_from(INJECTIONS),
    st.sampled_from(["dana@example.com", "LEE@Example.COM", "new@example.com", "a@b", "x@[127.0.0.1]",
                     "rejected", "HIRED", "Europe/Berlin", "2026-10-28", "true", "NO", "1e999", "-0"]),
    st.emails().map(str),
)
HEADER = st.lists(
    st.one_of(st.sampled_from(["email", "Email Address", "first_name", "last_name", "full_name", "status", "tags",
                               "timezone", "decided_at", "skills", "id", "attributes", "x y", "é", ""]), nasty_text),
    min_size=1, max_size=6,
)


@st.composite
def written_csv(draw):
    """A table written by csv.writer with a random dialect, in a random encoding."""
    header = draw(HEADER)
    rows = draw(st.lists(st.lists(CELL, min_size=len(header), max_size=len(header) + 1), max_size=6))
    buffer = io.StringIO()
    writer = csv.writer(
        buffer,
        delimiter=draw(st.sampled_from([",", ";", "\t", "|", " "])),
        quotechar=draw(st.sampled_from(['"', "'", "`"])),
        quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC])),
        lineterminator=draw(st.sampled_from(["\n", "\r\n", "\r"])),
    )
    writer.writerow(header)
    writer.writerows(rows)
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "latin-1", "cp1252",
                                     "shift_jis", "utf-32", "ascii"]))
    return buffer.getvalue().encode(encoding, "replace")


@pytest.mark.timeout(300)
def test_random_dialects_and_encodings(request, importer, tmp_path):
    _run(request, importer, tmp_path, written_csv())


@st.composite
def giant_fields(draw):
    column = draw(st.sampled_from(["first_name", "notes", "email", "tags", "status", "timezone", "decided_at"]))
    size = draw(st.sampled_from([9_999, 10_000, 10_001, 65_536, 200_000]))
    char = draw(st.sampled_from(["a", "é", ";", '"', "\n", "\x00", "\U0001f600"]))
    value = char * size
    quoted = '"' + value.replace('"', '""') + '"'
    text = f"email,{column if column != 'email' else 'x'}\nbig@example.com,{quoted}\nok@example.com,ok\n"
    if column == "email":
        text = f"email\n{quoted}@example.com\nok@example.com\n"
    if draw(st.booleans()):
        text = f"{column},email\n" + value[:50] + "\n"  # a giant header cell, unquoted
    return text.encode("utf-8", "surrogatepass")


@pytest.mark.timeout(300)
def test_giant_fields(request, importer, tmp_path):
    _run(request, importer, tmp_path, giant_fields())


@pytest.mark.timeout(300)
def test_random_json_lines(request, importer, tmp_path):
    line = st.one_of(
        structures.map(lambda v: json.dumps(v, ensure_ascii=False)),
        st.dictionaries(st.sampled_from(["email", "first_name", "tags", "attributes", "status", "decided_at",
                                         "timezone", "skills", "token_key", "id"]),
                        st.one_of(CELL, structures), max_size=5).map(lambda v: json.dumps(v, ensure_ascii=False)),
        nasty_text,
    )
    data = st.lists(line, max_size=6).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))
    _run(request, importer, tmp_path, data, name="people.jsonl")


def test_an_encoding_error_late_in_a_big_file_writes_nothing(importer, tmp_path):
    """The error surfaces after whole batches were upserted: the transaction must undo them."""
    good = "".join(f"p{i}@example.com,P{i}\n" for i in range(2_500))
    importer(tmp_path / "late.csv", ("email,first_name\n" + good).encode() + b"bad\xff@example.com,X\n")


def test_errors_are_nurture_errors():
    assert issubclass(ImportFileError, NurtureError)
