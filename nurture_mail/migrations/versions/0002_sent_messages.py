"""messages apart from the ledger rows, packed against per-step dictionaries

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 16:10:00

Safe to run again after a failure half-way (SQLite runs DDL outside the transaction): each
part checks what is already there.
"""

import sqlite3

import sqlalchemy as sa
import zstandard
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    tables = set(sa.inspect(bind).get_table_names())
    if "message_dictionaries" not in tables:
        op.create_table(
            "message_dictionaries",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("digest", sa.String(length=64), nullable=False),
            sa.Column("content", sa.LargeBinary(), nullable=False),
            sa.Column("created_at", sa.DateTime(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("digest"),
        )
    if "sent_messages" not in tables:
        op.create_table(
            "sent_messages",
            sa.Column("send_id", sa.Integer(), nullable=False),
            sa.Column("dictionary_id", sa.Integer(), nullable=True),
            sa.Column("body", sa.LargeBinary(), nullable=False),
            sa.ForeignKeyConstraint(["dictionary_id"], ["message_dictionaries.id"]),
            sa.ForeignKeyConstraint(["send_id"], ["sends.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("send_id"),
        )
    if "body" not in {c["name"] for c in sa.inspect(bind).get_columns("sends")}:
        return
    # Messages stored so far move over as they are (no dictionary), then leave the ledger.
    op.execute(
        "INSERT INTO sent_messages (send_id, dictionary_id, body) "
        "SELECT id, NULL, body FROM sends WHERE body IS NOT NULL ON CONFLICT DO NOTHING"
    )
    if bind.dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        # No ALTER TABLE ... DROP COLUMN before SQLite 3.35 (and a batch copy of the ledger
        # would rebuild its partial indexes from reflection): the column stays, unused.
        op.execute("UPDATE sends SET body = NULL")
        return
    op.execute("ALTER TABLE sends DROP COLUMN body")


def downgrade() -> None:
    # Every message goes back into its ledger row, unpacked from its dictionary and packed
    # without one, as 0001 read them.
    bind = op.get_bind()
    op.add_column("sends", sa.Column("body", sa.LargeBinary(), nullable=True))
    dictionaries = dict(bind.execute(sa.text("SELECT id, content FROM message_dictionaries")).all())
    plain = zstandard.ZstdCompressor(level=1)
    rows = bind.execute(sa.text("SELECT send_id, dictionary_id, body FROM sent_messages")).all()
    for send_id, dictionary_id, body in rows:
        if dictionary_id is not None:
            raw = zstandard.ZstdCompressionDict(
                dictionaries[dictionary_id], dict_type=zstandard.DICT_TYPE_RAWCONTENT
            )
            body = plain.compress(zstandard.ZstdDecompressor(dict_data=raw).decompress(body))
        bind.execute(sa.text("UPDATE sends SET body = :body WHERE id = :id"),
                     {"body": body, "id": send_id})
    op.drop_table("sent_messages")
    op.drop_table("message_dictionaries")
