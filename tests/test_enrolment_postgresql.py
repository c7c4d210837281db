"""Enrolment on PostgreSQL keeps linear plans whatever the statistics say."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import event, text, true

from nurture_mail.database import open_database
from nurture_mail.store import enrolment


def test_a_first_enrolment_after_analyze_reads_each_table_once(pg_url):
    # Statistics from ANALYZE say enrollments and suppressions are empty: left to itself the
    # planner takes a nested-loop anti-join that rescans them per candidate, and also every
    # row the INSERT has just added (quadratic: 214 s for 200,000 candidates).
    db = open_database(pg_url)
    try:
        with db.engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO candidates (email, first_name, status, attributes, token_key, created_at, updated_at) "
                "SELECT 'p' || i || '@example.com', 'P' || i, 'rejected', '{}', md5(i::text), "
                "'2027-01-01', '2027-01-01' FROM generate_series(1, 2000) AS i"
            ))
            conn.execute(text("ANALYZE"))
        plans: list[str] = []

        def explain(conn, cursor, statement, parameters, context, executemany):
            if statement.lstrip().startswith("INSERT INTO enrollments"):
                cursor.execute("EXPLAIN " + statement, parameters)
                plans.append("\n".join(row[0] for row in cursor.fetchall()))

        event.listen(db.engine, "before_cursor_execute", explain)
        with db.sessions.begin() as session:
            enrolled = enrolment.enrol(session, "c1", true(), datetime(2027, 3, 1, 9))
            setting = session.execute(text("SELECT current_setting('enable_nestloop')")).scalar_one()
        event.remove(db.engine, "before_cursor_execute", explain)
    finally:
        db.dispose()
    assert enrolled == 2000
    assert len(plans) == 1
    assert "Nested Loop" not in plans[0], plans[0]
    assert "Anti Join" in plans[0]
    assert setting == "on"  # only the INSERT ran without nested loops
