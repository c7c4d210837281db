"""Reading candidate files: CSV (UTF-8, with or without BOM, `;` or `,`) and JSON lines.

Files are streamed row by row so memory stays flat whatever their size. Each row comes out
with its line number; problems with one row are reported as `file:line: reason` and the rest
still import. Problems with the whole file (encoding, no email column) stop the import before
anything is written.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .candidates import (
    BUILTIN_FIELDS,
    RESERVED,
    CandidateRecord,
    RowError,
    column_key,
    option_status,
    option_tags,
    record_from_row,
)
from .errors import ImportFileError

csv.field_size_limit(64 * 1024 * 1024)  # our own per-field limit gives the clearer message


@dataclass(frozen=True)
class Row:
    line: int
    values: dict[str, object] | None
    error: str | None = None


@dataclass
class ImportReport:
    """What an import did, for the CLI to print."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    suppressed: int = 0  # imported, but the address stays suppressed
    skipped: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def imported(self) -> int:
        return self.created + self.updated + self.unchanged


def parse_mapping(items: tuple[str, ...]) -> dict[str, str]:
    """`--map "Email Address=email"` pairs -> {source column key: field}."""
    mapping: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ImportFileError("--map", None, f"expected SOURCE=FIELD, got {item!r}")
        src, dst = item.split("=", 1)
        if not src.strip() or not dst.strip():
            raise ImportFileError("--map", None, f"expected SOURCE=FIELD, got {item!r}")
        mapping[column_key(src)] = column_key(dst)
    return mapping


class _LineCounter:
    """Decodes a byte stream line by line so an encoding error can name its physical line.

    Splitting on b"\n" is safe in UTF-8: that byte never occurs inside a multi-byte character.
    """

    def __init__(self, path: Path, raw: io.BufferedReader, progress: Callable[[int], None] | None):
        self.path = path
        self.raw = raw
        self.lines_read = 0
        self.progress = progress

    def __iter__(self):
        return self

    def __next__(self) -> str:
        data = self.raw.readline()
        if not data:
            raise StopIteration
        if self.lines_read == 0 and data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        self.lines_read += 1
        if self.progress is not None:
            self.progress(len(data))
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ImportFileError(
                str(self.path),
                self.lines_read,
                f"not UTF-8 text ({exc.reason} at byte 0x{exc.object[exc.start]:02x}); "
                "save the file as UTF-8 (CSV UTF-8 in Excel) and import again",
            ) from None


def read_csv(
    path: Path, mapping: Mapping[str, str], progress: Callable[[int], None] | None = None
) -> Iterator[Row]:
    with path.open("rb") as raw:
        stream = _LineCounter(path, raw, progress)
        first = next(stream, None)
        if first is None or not first.strip():
            raise ImportFileError(str(path), 1, "the file is empty: expected a header row with an email column")
        delimiter = ";" if first.count(";") > first.count(",") else ","
        try:
            header = next(csv.reader([first], delimiter=delimiter))
        except csv.Error as exc:  # e.g. a bare CR inside the line (old Mac line ends, UTF-16)
            raise ImportFileError(
                str(path), 1, f"unreadable header row: {exc}; save the file as CSV UTF-8"
            ) from None
        columns = [mapping.get(column_key(h), column_key(h)) for h in header]
        _check_header(path, columns)
        reader = csv.reader(_chain(first, stream), delimiter=delimiter)
        next(reader)  # the header again
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield Row(reader.line_num, None, f"unreadable CSV row: {exc}")
                continue
            line = reader.line_num  # the row's last physical line; quoted newlines span lines
            if not cells or all(not c.strip() for c in cells):
                continue  # blank line
            if len(cells) != len(columns):
                yield Row(line, None, f"expected {len(columns)} fields, got {len(cells)}")
                continue
            yield Row(line, dict(zip(columns, cells, strict=True)))


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


def _check_header(path: Path, columns: list[str]) -> None:
    seen: set[str] = set()
    for name in columns:
        if not name:
            raise ImportFileError(str(path), 1, "a column has an empty name")
        if name in seen:
            raise ImportFileError(str(path), 1, f"column {name!r} appears twice")
        if name in RESERVED:
            raise ImportFileError(
                str(path), 1, f"column {name!r} is reserved (set by nurture itself); rename it with --map"
            )
        seen.add(name)
    if "email" not in seen:
        shown = ", ".join(columns[:8])
        raise ImportFileError(
            str(path),
            1,
            f"no email column (columns: {shown}); rename one with --map 'COLUMN=email'",
        )


def read_jsonl(
    path: Path, mapping: Mapping[str, str], progress: Callable[[int], None] | None = None
) -> Iterator[Row]:
    with path.open("rb") as raw:
        stream = _LineCounter(path, raw, progress)
        for number, text in enumerate(stream, start=1):
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                yield Row(number, None, f"invalid JSON: {exc.msg} (column {exc.colno})")
                continue
            if not isinstance(value, dict):
                yield Row(number, None, "expected a JSON object per line")
                continue
            row = {mapping.get(column_key(k), column_key(k)): v for k, v in value.items()}
            attrs = row.pop("attributes", None)
            if isinstance(attrs, dict):
                for k, v in attrs.items():
                    row.setdefault(column_key(k), v)
            yield Row(number, row)


def read_rows(path: Path, mapping: Mapping[str, str], progress=None) -> Iterator[Row]:
    if not path.is_file():
        raise ImportFileError(str(path), None, "no such file")
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return read_jsonl(path, mapping, progress)
    return read_csv(path, mapping, progress)


def records(
    path: Path,
    rows: Iterator[Row],
    *,
    extra_tags: tuple[str, ...],
    status: str | None,
    report: ImportReport,
) -> Iterator[tuple[int, CandidateRecord]]:
    """Validated records with their line; errors and in-file duplicates go to the report.

    `extra_tags` and `status` (`--tag`, `--status`) are checked now, before any row is read:
    a bad one is one NurtureError naming the option, not the same error on every row.
    """
    extra_tags = option_tags("--tag", extra_tags)
    status = option_status("--status", status)
    return _records(path, rows, extra_tags, status, report)


def _records(
    path: Path, rows: Iterator[Row], extra_tags: tuple[str, ...], status: str | None,
    report: ImportReport,
) -> Iterator[tuple[int, CandidateRecord]]:
    first_line: dict[str, int] = {}
    for row in rows:
        if row.error is not None:
            report.errors.append(f"{path}:{row.line}: {row.error}")
            report.skipped += 1
            continue
        try:
            record = record_from_row(row.values or {}, extra_tags=extra_tags, status=status)
        except RowError as exc:
            report.errors.append(f"{path}:{row.line}: {exc}")
            report.skipped += 1
            continue
        if record.email in first_line:
            report.errors.append(
                f"{path}:{row.line}: duplicate of line {first_line[record.email]} "
                f"({record.email}); row skipped"
            )
            report.skipped += 1
            continue
        first_line[record.email] = row.line
        yield row.line, record


__all__ = ["BUILTIN_FIELDS", "ImportReport", "parse_mapping", "read_rows", "records"]
