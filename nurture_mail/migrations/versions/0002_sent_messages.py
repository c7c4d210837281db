"""messages apart from the ledger rows, packed against per-step dictionaries

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 16:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "message_dictionaries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("digest"),
    )
    op.create_table(
        "sent_messages",
        sa.Column("send_id", sa.Integer(), nullable=False),
        sa.Column("dictionary_id", sa.Integer(), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["dictionary_id"], ["message_dictionaries.id"]),
        sa.ForeignKeyConstraint(["send_id"], ["sends.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("send_id"),
    )
    # Messages stored so far move over as they are (no dictionary), then leave the ledger.
    op.execute(
        "INSERT INTO sent_messages (send_id, dictionary_id, body) "
        "SELECT id, NULL, body FROM sends WHERE body IS NOT NULL"
    )
    # A plain ALTER TABLE ... DROP COLUMN on both (SQLite >= 3.35): a batch copy of `sends`
    # would rebuild a table that may hold millions of rows and its partial indexes.
    op.execute("ALTER TABLE sends DROP COLUMN body")


def downgrade() -> None:
    # Messages packed against a dictionary cannot go back into `sends.body` unpacked here:
    # only those packed without one return; the others are dropped with the table.
    op.add_column("sends", sa.Column("body", sa.LargeBinary(), nullable=True))
    op.execute(
        "UPDATE sends SET body = (SELECT body FROM sent_messages "
        "WHERE sent_messages.send_id = sends.id AND sent_messages.dictionary_id IS NULL)"
    )
    op.drop_table("sent_messages")
    op.drop_table("message_dictionaries")
