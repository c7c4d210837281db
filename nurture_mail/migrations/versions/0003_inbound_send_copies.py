"""inbound rows carry their send's step, variant and (once accepted) sent_at

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 05:30:00

`nurture report` counted what came back by joining every matched message to its ledger row;
over a big ledger that join was most of a report. The three columns are copied when a message
is matched (reply_sync), filled here for the messages stored so far, and read by the report
on PostgreSQL; `ix_inbound_unaccepted` lists the messages whose send had not been accepted
when they came (the report still reads those sends).

Safe to run again after a failure half-way (SQLite runs DDL outside the transaction): each
part checks what is already there.
"""

import sqlite3

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_UNACCEPTED = "send_id IS NOT NULL AND send_sent_at IS NULL"


def _columns() -> tuple[sa.Column, ...]:
    return (sa.Column("step_id", sa.String(length=100), nullable=True),
            sa.Column("variant", sa.String(length=50), nullable=True),
            sa.Column("send_sent_at", sa.DateTime(), nullable=True))


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    have = {c["name"] for c in inspector.get_columns("inbound")}
    for column in _columns():
        if column.name not in have:
            op.add_column("inbound", column)
    # The messages stored so far: as reply_sync copies them now (step and variant of any
    # matched send; sent_at only of an accepted one). Sends are final once accepted.
    op.execute(
        "UPDATE inbound SET "
        "step_id = (SELECT s.step_id FROM sends s WHERE s.id = inbound.send_id), "
        "variant = (SELECT s.variant FROM sends s WHERE s.id = inbound.send_id), "
        "send_sent_at = (SELECT s.sent_at FROM sends s WHERE s.id = inbound.send_id AND s.state = 'sent') "
        "WHERE send_id IS NOT NULL AND step_id IS NULL"
    )
    if "ix_inbound_unaccepted" not in {i["name"] for i in inspector.get_indexes("inbound")}:
        op.create_index("ix_inbound_unaccepted", "inbound", ["send_id"], unique=False,
                        postgresql_where=sa.text(_UNACCEPTED), sqlite_where=sa.text(_UNACCEPTED))


def downgrade() -> None:
    op.drop_index("ix_inbound_unaccepted", table_name="inbound")
    if op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        return  # no DROP COLUMN before SQLite 3.35 (see 0002): the columns stay, unused
    for column in reversed(_columns()):
        op.execute(f"ALTER TABLE inbound DROP COLUMN {column.name}")
