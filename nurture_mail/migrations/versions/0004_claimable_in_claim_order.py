"""ix_sends_claimable in claim order: (due_at, id)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 17:35:00

A claim takes the earliest due rows in (due_at, id) order. PostgreSQL keeps an index's entries
of one due_at in heap order, so with the index on `due_at` alone every claim read and sorted
every due row: a first step due at once for 200,000 candidates cost 85 ms a claim of 256 rows,
and a backlog of N rows cost N²/256 row reads to drain. With `id` in the index a claim reads
its rows in order and stops.

Safe to run again after a failure half-way (SQLite runs DDL outside the transaction): the
index is rebuilt only when it is not already the new one.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_CLAIMABLE = "state IN ('scheduled', 'deferred')"


def _rebuild(columns: list[str]) -> None:
    found = {i["name"]: i["column_names"] for i in sa.inspect(op.get_bind()).get_indexes("sends")}
    if found.get("ix_sends_claimable") == columns:
        return
    if "ix_sends_claimable" in found:
        op.drop_index("ix_sends_claimable", table_name="sends")
    op.create_index("ix_sends_claimable", "sends", columns, unique=False,
                    postgresql_where=sa.text(_CLAIMABLE), sqlite_where=sa.text(_CLAIMABLE))


def upgrade() -> None:
    _rebuild(["due_at", "id"])


def downgrade() -> None:
    _rebuild(["due_at"])
