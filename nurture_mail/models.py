"""SQLAlchemy tables, and nothing else: every query lives in the store modules.

Times are stored as naive UTC datetimes (SQLite has no time zones); the store converts at the
edge. Indexes are chosen for the hot queries: due sends (partial index on claimable rows),
replies by Message-ID, candidates by address and tag, and a covering index for reports.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class Base(DeclarativeBase):
    pass


# Partial indexes carry their WHERE for both dialects. SQLite's is given when the index is
# declared; PostgreSQL's by `postgresql_options` (called when an engine for it is created,
# `database.create_db_engine`): a `postgresql_where` keyword here would make SQLAlchemy import
# its PostgreSQL dialect in every process, SQLite's too, to validate the keyword.
_PARTIAL: dict[Index, str] = {}


def partial_index(name: str, *columns: str, where: str) -> Index:
    index = Index(name, *columns, sqlite_where=text(where))
    _PARTIAL[index] = where
    return index


def postgresql_options() -> None:
    """Give the partial indexes their WHERE on PostgreSQL (idempotent); call before creating,
    comparing or using the schema there."""
    for index, where in _PARTIAL.items():
        options = index.dialect_options["postgresql"]
        if options["where"] is None:
            options["where"] = text(where)


class JSONType(TypeDecorator):
    """JSON everywhere, JSONB on PostgreSQL so segments can use its operators and indexes.

    Chosen when a dialect asks: importing SQLAlchemy's PostgreSQL dialect costs every command
    ~150 million instructions (a tenth of the daemon's imports), for nothing on SQLite."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())

# Ledger states that a sender may claim. Kept here because the partial index names them.
CLAIMABLE_STATES = ("scheduled", "deferred")
_CLAIMABLE_SQL = "state IN ('scheduled', 'deferred')"


class Candidate(Base):
    __tablename__ = "candidates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    full_name: Mapped[str | None] = mapped_column(String(400))
    status: Mapped[str] = mapped_column(String(50), default="new", index=True)
    timezone: Mapped[str | None] = mapped_column(String(64))
    owner: Mapped[str | None] = mapped_column(String(200))
    role: Mapped[str | None] = mapped_column(String(200))
    stage_reached: Mapped[str | None] = mapped_column(String(100))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime)
    source: Mapped[str | None] = mapped_column(String(200))
    attributes: Mapped[dict] = mapped_column(JSONType, default=dict)
    # Random key behind unsubscribe tokens: opaque, not a database id.
    token_key: Mapped[str] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class CandidateTag(Base):
    __tablename__ = "candidate_tags"

    candidate_id: Mapped[int] = mapped_column(
        ForeignKey("candidates.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(100), primary_key=True)

    __table_args__ = (Index("ix_candidate_tags_tag", "tag", "candidate_id"),)


class Campaign(Base):
    """What the engine last saw of a campaign file: its id, status and step order."""

    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(20))
    steps: Mapped[list] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class Enrollment(Base):
    __tablename__ = "enrollments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id", ondelete="CASCADE"))
    campaign_id: Mapped[str] = mapped_column(String(100))
    # active | paused (out of office) | completed | exited
    state: Mapped[str] = mapped_column(String(20), default="active")
    exit_reason: Mapped[str | None] = mapped_column(String(50))
    enrolled_at: Mapped[datetime] = mapped_column(DateTime)
    # When the last step was sent (or enrolment time before the first); waits count from it.
    last_sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_step_id: Mapped[str | None] = mapped_column(String(100))
    paused_until: Mapped[datetime | None] = mapped_column(DateTime)
    exited_at: Mapped[datetime | None] = mapped_column(DateTime)
    # True while the enrollment has no pending ledger row and its next step must be scheduled:
    # set on enrolment and whenever a send becomes final, so a tick never scans them all.
    needs_next: Mapped[bool] = mapped_column(Boolean, default=True)

    __table_args__ = (
        UniqueConstraint("candidate_id", "campaign_id", name="uq_enrollment"),
        Index("ix_enrollments_campaign_state", "campaign_id", "state"),
        partial_index(
            "ix_enrollments_needs_next",
            "campaign_id",
            where="needs_next",
        ),
        # Exits as `nurture report` counts them, read in group order from this index alone;
        # only ended enrollments are in it, so sends and schedules never touch it.
        partial_index(
            "ix_enrollments_exits",
            "campaign_id", "exit_reason", "last_step_id", "exited_at",
            where="exit_reason IS NOT NULL",
        ),
    )


class Send(Base):
    """The ledger: one row per (enrollment, step), whatever happens."""

    __tablename__ = "sends"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    enrollment_id: Mapped[int] = mapped_column(ForeignKey("enrollments.id", ondelete="CASCADE"))
    campaign_id: Mapped[str] = mapped_column(String(100))
    candidate_id: Mapped[int] = mapped_column(Integer)
    step_id: Mapped[str] = mapped_column(String(100))
    step_number: Mapped[int] = mapped_column(Integer)
    variant: Mapped[str | None] = mapped_column(String(50))
    # scheduled | claimed | sent | deferred | failed | skipped | cancelled | unknown
    state: Mapped[str] = mapped_column(String(20), default="scheduled")
    due_at: Mapped[datetime] = mapped_column(DateTime)
    message_id: Mapped[str] = mapped_column(String(250), unique=True)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime)
    # True once the message data may have reached the server: an expired lease is then unknown.
    data_started: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    smtp_response: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    to_addr: Mapped[str | None] = mapped_column(String(320))
    subject: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)

    __table_args__ = (
        UniqueConstraint("enrollment_id", "step_id", name="uq_send_step"),
        # In claim order, (due_at, id): PostgreSQL keeps the entries of one due_at in heap
        # order, so on `due_at` alone every claim sorted every due row (a first step due at
        # once for 200,000 candidates: 85 ms a claim of 256). SQLite's entries carry the rowid
        # (`id`) in that order anyway.
        partial_index(
            "ix_sends_claimable",
            "due_at", "id",
            where=_CLAIMABLE_SQL,
        ),
        partial_index(
            "ix_sends_claimed_lease",
            "lease_until",
            where="state = 'claimed'",
        ),
        # Covers `nurture report` (the ledger counted from this index alone, in group order) and
        # the per-campaign/step lookups of the engine; one index, since each costs every write.
        Index(
            "ix_sends_report",
            "campaign_id", "step_id", "variant", "state", "step_number", "sent_at", "updated_at",
        ),
        Index("ix_sends_candidate", "candidate_id"),
        # Each candidate's last contact for the warm pool, one probe each; a send enters it once,
        # when accepted. `state` is a column too, so that SQLite reads this index alone.
        partial_index(
            "ix_sends_contact",
            "candidate_id", "state", "sent_at",
            where="state = 'sent'",
        ),
    )


class SentMessage(Base):
    """The message a send carried (or was about to carry), as the ledger keeps it.

    Apart from `sends` so that the ledger's rows stay small: a send row is updated three
    times (claimed, data started, outcome) and each update rewrites the whole row; the
    message is written once, appended. Deleted with its send (`forget`).
    """

    __tablename__ = "sent_messages"

    send_id: Mapped[int] = mapped_column(
        ForeignKey("sends.id", ondelete="CASCADE"), primary_key=True
    )
    # The Zstandard dictionary the body was packed with (None: packed without one).
    dictionary_id: Mapped[int | None] = mapped_column(ForeignKey("message_dictionaries.id"))
    body: Mapped[bytes] = mapped_column(LargeBinary)


class MessageDictionary(Base):
    """A Zstandard raw-content dictionary: one step's email rendered for a synthetic
    candidate (never a real person, so `forget` has nothing to erase here). Messages of that
    step packed against it take a fifth of the room and a third less CPU."""

    __tablename__ = "message_dictionaries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of content
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Inbound(Base):
    """A message read from the inbox, classified and (maybe) matched to a send."""

    __tablename__ = "inbound"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # sha256 of the raw bytes, or of the Message-ID when it has one: the same message once.
    dedupe_key: Mapped[str] = mapped_column(String(64), unique=True)
    message_id: Mapped[str | None] = mapped_column(String(250), index=True)
    source: Mapped[str | None] = mapped_column(String(300))
    received_at: Mapped[datetime] = mapped_column(DateTime)
    from_addr: Mapped[str | None] = mapped_column(String(320))
    subject: Mapped[str | None] = mapped_column(Text)
    # reply | auto_reply | bounce | unsubscribe | other
    kind: Mapped[str] = mapped_column(String(20))
    bounce: Mapped[str | None] = mapped_column(String(10))
    recipient: Mapped[str | None] = mapped_column(String(320))
    status_code: Mapped[str | None] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    reply_text: Mapped[str | None] = mapped_column(Text)
    # Indexed by `ix_inbound_report` (send_id first), which also serves the foreign key.
    send_id: Mapped[int | None] = mapped_column(ForeignKey("sends.id", ondelete="SET NULL"))
    candidate_id: Mapped[int | None] = mapped_column(
        ForeignKey("candidates.id", ondelete="SET NULL"), index=True
    )
    campaign_id: Mapped[str | None] = mapped_column(String(100))
    return_date: Mapped[datetime | None] = mapped_column(DateTime)
    # The matched send's step and variant (fixed when the send is made), and its sent_at when
    # it had already been accepted (state `sent`, final) as the message was matched: the
    # report counts the message from these alone on PostgreSQL; with send_sent_at NULL it
    # reads the send (SQLite always does: a rowid lookup costs it no more).
    step_id: Mapped[str | None] = mapped_column(String(100))
    variant: Mapped[str | None] = mapped_column(String(50))
    send_sent_at: Mapped[datetime | None] = mapped_column(DateTime)

    __table_args__ = (
        # What came back about each send, read by `nurture report` on SQLite from this index
        # alone in send order (no table rows); inbound is written once per message, so it
        # costs little. PostgreSQL reads the table's copies in one parallel pass instead.
        Index("ix_inbound_report", "send_id", "kind", "bounce", "received_at"),
        # Messages matched to a send not yet accepted when they came: the few a report looks
        # up in the ledger.
        partial_index(
            "ix_inbound_unaccepted",
            "send_id",
            where="send_id IS NOT NULL AND send_sent_at IS NULL",
        ),
        # Each candidate's last reply for the warm pool, one probe each.
        partial_index(
            "ix_inbound_replies",
            "candidate_id", "kind", "received_at",
            where="kind = 'reply'",
        ),
    )


class MailboxState(Base):
    """Incremental IMAP sync position per folder."""

    __tablename__ = "mailbox_state"

    mailbox: Mapped[str] = mapped_column(String(500), primary_key=True)
    # IMAP UIDVALIDITY and UIDs are unsigned 32-bit: beyond PostgreSQL's INTEGER.
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)


class Suppression(Base):
    """Addresses never to be mailed again. Looked up by a salted hash; forgotten ones keep only it."""

    __tablename__ = "suppressions"

    email_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    # unsubscribed | bounced | complained | forgotten
    reason: Mapped[str] = mapped_column(String(30))
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Event(Base):
    """Audit log: what happened to whom, when and why."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, index=True)
    kind: Mapped[str] = mapped_column(String(50))
    candidate_id: Mapped[int | None] = mapped_column(
        ForeignKey("candidates.id", ondelete="CASCADE"), index=True
    )
    campaign_id: Mapped[str | None] = mapped_column(String(100))
    detail: Mapped[dict] = mapped_column(JSONType, default=dict)


class Meta(Base):
    """Install-wide values: the suppression salt, the SQLite daemon lock."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
