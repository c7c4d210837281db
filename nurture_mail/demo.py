"""`nurture demo`: a self-contained tour on the embedded defaults."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from .config import load_settings
from .database import open_database
from .importer import ImportReport, read_rows, records
from .scaffold import create_workspace
from .store import pool

DEMO_START = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def run_demo(*, keep: Path | None, echo: Callable[[str], None]) -> None:
    if keep is not None:
        _tour(keep, echo)
        return
    with tempfile.TemporaryDirectory(prefix="nurture-demo-") as tmp:
        _tour(Path(tmp), echo)


def _tour(workdir: Path, echo: Callable[[str], None]) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    echo(f"1. a fresh workspace in {workdir}")
    create_workspace(workdir)
    settings = load_settings(workdir / "nurture.toml", env={}, cwd=workdir)
    db = open_database(settings.database_url)
    try:
        report = ImportReport()
        csv_path = workdir / "candidates.csv"
        recs = records(csv_path, read_rows(csv_path, {}), extra_tags=(), status=None, report=report)
        pool.import_records(db, "candidates.csv", recs, report, now=DEMO_START)
        echo(f"2. imported {report.imported} candidates from the sample pool")
        statuses: dict[str, int] = {}
        for cand in pool.list_candidates(db):
            statuses[cand["status"]] = statuses.get(cand["status"], 0) + 1
        echo("   by status: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
    finally:
        db.dispose()
