"""PostgreSQL's plans for the statements a piece of code runs, read as it runs them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import event, text


@contextmanager
def explained(engine, wanted: Callable[[str], bool]) -> Iterator[list[str]]:
    """EXPLAIN of every statement `wanted` picks (not executemany), on its own connection and
    with its own parameters, just before it runs: the plans, in order."""
    plans: list[str] = []

    def explain(conn, cursor, statement, parameters, context, executemany):
        if not executemany and wanted(statement.lstrip()):
            cursor.execute("EXPLAIN " + statement, parameters)
            plans.append("\n".join(row[0] for row in cursor.fetchall()))

    event.listen(engine, "before_cursor_execute", explain)
    try:
        yield plans
    finally:
        event.remove(engine, "before_cursor_execute", explain)


def add_candidates(engine, count: int) -> None:
    """`count` rejected candidates p1@example.com ..., then ANALYZE: statistics that say the
    other tables (enrollments, the ledger) are empty."""
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO candidates (email, first_name, status, attributes, token_key, created_at, updated_at) "
            "SELECT 'p' || i || '@example.com', 'P' || i, 'rejected', '{}', md5(i::text), "
            f"'2027-01-01', '2027-01-01' FROM generate_series(1, {int(count)}) AS i"
        ))
        conn.execute(text("ANALYZE"))
