"""The candidate pool in the database: upsert, list, show, update, suppress, forget."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

from sqlalchemy import delete, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..candidates import CandidateRecord
from ..database import Database
from ..errors import NotFound
from ..importer import ImportReport
from ..models import Candidate, CandidateTag, Enrollment, Event, Inbound, Send, Suppression
from .ledger import end_enrollments, naive

BATCH = 1000


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def import_records(
    db: Database,
    path: str,
    records: Iterable[tuple[int, CandidateRecord]],
    report: ImportReport,
    *,
    now: datetime,
    dry_run: bool = False,
) -> ImportReport:
    """Upsert by address in batches. One transaction for the whole file: all or nothing on a
    crash, and `--dry-run` simply rolls it back."""
    stamp = naive(now)
    session = db.sessions()
    try:
        with session.begin():
            _index_lookups(session)
            for batch in _batches(records, BATCH):
                _upsert_batch(db, session, path, batch, report, stamp)
            session.add(
                Event(
                    at=stamp,
                    kind="import",
                    detail={
                        "file": str(path),
                        "created": report.created,
                        "updated": report.updated,
                        "skipped": report.skipped,
                    },
                )
            )
            if dry_run:
                session.rollback()
    finally:
        session.close()
    return report


def _index_lookups(session: Session) -> None:
    """PostgreSQL: look candidates up by their indexes for the rest of the transaction.

    The file's rows are inserted in this one transaction, where the planner's statistics
    still describe the table as it was (autovacuum cannot see uncommitted rows). Planned for
    an empty table, each batch's lookup of 1,000 addresses scans every row inserted so far and
    compares it with each address: quadratic, 196 s for a first import of 100,000 candidates
    (5 s for 50,000). An index lookup stays a thousand probes a batch, however big the table.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT set_config('enable_seqscan', 'off', true)"))


def _upsert_batch(
    db: Database,
    session: Session,
    path: str,
    batch: Sequence[tuple[int, CandidateRecord]],
    report: ImportReport,
    stamp: datetime,
) -> None:
    hashes = {rec.email: db.email_hash(rec.email) for _, rec in batch}
    suppressed = dict(
        session.execute(
            select(Suppression.email_hash, Suppression.reason).where(
                Suppression.email_hash.in_(list(hashes.values()))
            )
        ).all()
    )
    existing = {
        c.email: c
        for c in session.execute(
            select(Candidate).where(Candidate.email.in_(list(hashes)))
        ).scalars()
    }
    new_rows: list[dict] = []
    new_tags: dict[str, tuple[str, ...]] = {}
    hired_ids: list[int] = []
    for line, rec in batch:
        reason = suppressed.get(hashes[rec.email])
        if reason == "forgotten":
            report.errors.append(f"{path}:{line}: {rec.email} asked to be forgotten; not imported")
            report.skipped += 1
            continue
        if reason is not None:
            report.suppressed += 1
        current = existing.get(rec.email)
        if current is None:
            row = {
                "email": rec.email,
                "status": "new",
                "attributes": rec.attributes,
                "token_key": secrets.token_hex(16),
                "created_at": stamp,
                "updated_at": stamp,
            }
            row.update(rec.fields)
            new_rows.append(row)
            new_tags[rec.email] = rec.tags
            report.created += 1
            continue
        changed = False
        for name, value in rec.fields.items():
            if getattr(current, name) != value:
                if name == "status" and value == "hired":
                    hired_ids.append(current.id)
                setattr(current, name, value)
                changed = True
        merged = {**(current.attributes or {}), **rec.attributes}
        if merged != current.attributes:
            current.attributes = merged
            changed = True
        if rec.tags and _add_tags(session, current.id, rec.tags):
            changed = True
        if changed:
            current.updated_at = stamp
            report.updated += 1
        else:
            report.unchanged += 1
    if new_rows:
        # Core executemany: far faster than ORM inserts with RETURNING for big batches.
        session.execute(insert(Candidate.__table__), _uniform(new_rows))
        created = session.execute(
            select(Candidate.id, Candidate.email).where(Candidate.email.in_(list(new_tags)))
        ).all()
        tag_rows = [
            {"candidate_id": cid, "tag": tag} for cid, email in created for tag in new_tags[email]
        ]
        if tag_rows:
            session.execute(insert(CandidateTag.__table__), tag_rows)
    session.flush()
    if hired_ids:
        end_enrollments(session, hired_ids, "hired", stamp)


def _uniform(rows: list[dict]) -> list[dict]:
    """executemany wants the same keys in every row."""
    keys = set().union(*rows)
    return [{k: r.get(k) for k in keys} for r in rows]


def _add_tags(session: Session, candidate_id: int, tags: Iterable[str]) -> bool:
    have = set(
        session.execute(
            select(CandidateTag.tag).where(CandidateTag.candidate_id == candidate_id)
        ).scalars()
    )
    missing = [t for t in tags if t not in have]
    for tag in missing:
        session.add(CandidateTag(candidate_id=candidate_id, tag=tag))
    return bool(missing)


def tags_of(session: Session, candidate_ids: Sequence[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {cid: [] for cid in candidate_ids}
    for chunk in _batches(candidate_ids, 900):
        for cid, tag in session.execute(
            select(CandidateTag.candidate_id, CandidateTag.tag)
            .where(CandidateTag.candidate_id.in_(chunk))
            .order_by(CandidateTag.tag)
        ):
            out[cid].append(tag)
    return out


def candidate_dict(candidate: Candidate, tags: list[str], suppressed: str | None = None) -> dict:
    """The public shape of a candidate (`candidates list --format json`)."""
    return {
        "email": candidate.email,
        "first_name": candidate.first_name,
        "last_name": candidate.last_name,
        "full_name": candidate.full_name,
        "status": candidate.status,
        "tags": tags,
        "timezone": candidate.timezone,
        "owner": candidate.owner,
        "role": candidate.role,
        "stage_reached": candidate.stage_reached,
        "decided_at": candidate.decided_at.date().isoformat() if candidate.decided_at else None,
        "source": candidate.source,
        "suppressed": suppressed,
        "attributes": candidate.attributes or {},
    }


def list_candidates(db: Database, *, campaign: str | None = None) -> Iterator[dict]:
    """Every candidate (optionally: enrolled in a campaign), streamed in pages."""
    with db.sessions() as session:
        last_id = 0
        while True:
            query = select(Candidate).where(Candidate.id > last_id).order_by(Candidate.id).limit(BATCH)
            if campaign:
                query = query.where(
                    Candidate.id.in_(
                        select(Enrollment.candidate_id).where(Enrollment.campaign_id == campaign)
                    )
                )
            page = list(session.execute(query).scalars())
            if not page:
                return
            ids = [c.id for c in page]
            tags = tags_of(session, ids)
            supp = _suppression_reasons(session, [c.email for c in page])
            for c in page:
                yield candidate_dict(c, tags[c.id], supp.get(c.email))
            last_id = page[-1].id


def _suppression_reasons(session: Session, emails: list[str]) -> dict[str, str]:
    return dict(
        session.execute(
            select(Suppression.email, Suppression.reason).where(Suppression.email.in_(emails))
        ).all()
    )


def get_candidate(session: Session, email: str) -> Candidate:
    found = session.execute(select(Candidate).where(Candidate.email == email)).scalar_one_or_none()
    if found is None:
        raise NotFound(f"no candidate with address {email}")
    return found


def show_candidate(db: Database, email: str) -> dict:
    """Fields, enrollments with their sends, and inbound messages (`candidates show`)."""
    with db.sessions() as session:
        c = get_candidate(session, email)
        out = candidate_dict(c, tags_of(session, [c.id])[c.id], _suppression_reasons(session, [c.email]).get(c.email))
        enrollments = []
        for e in session.execute(
            select(Enrollment).where(Enrollment.candidate_id == c.id).order_by(Enrollment.id)
        ).scalars():
            sends = [
                {
                    "step": s.step_id,
                    "variant": s.variant,
                    "state": s.state,
                    "message_id": s.message_id,
                    "due_at": _iso(s.due_at),
                    "sent_at": _iso(s.sent_at),
                    "reason": s.reason,
                }
                for s in session.execute(
                    select(Send).where(Send.enrollment_id == e.id).order_by(Send.step_number)
                ).scalars()
            ]
            enrollments.append(
                {
                    "campaign": e.campaign_id,
                    "state": e.state,
                    "exit_reason": e.exit_reason,
                    "enrolled_at": _iso(e.enrolled_at),
                    "sends": sends,
                }
            )
        out["enrollments"] = enrollments
        out["replies"] = [
            {
                "kind": m.kind,
                "received_at": _iso(m.received_at),
                "subject": m.subject,
                "text": m.reply_text,
                "bounce": m.bounce,
            }
            for m in session.execute(
                select(Inbound).where(Inbound.candidate_id == c.id).order_by(Inbound.received_at)
            ).scalars()
        ]
        return out


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() + "Z" if moment else None


def update_candidate(
    db: Database,
    email: str,
    *,
    status: str | None,
    add_tags: Sequence[str],
    remove_tags: Sequence[str],
    now: datetime,
) -> dict:
    stamp = naive(now)
    with db.sessions.begin() as session:
        c = get_candidate(session, email)
        if status and status != c.status:
            session.add(
                Event(
                    at=stamp,
                    kind="status_changed",
                    candidate_id=c.id,
                    detail={"from": c.status, "to": status},
                )
            )
            c.status = status
            if status == "hired":
                end_enrollments(session, [c.id], "hired", stamp)
        _add_tags(session, c.id, [t.lower() for t in add_tags])
        if remove_tags:
            session.execute(
                delete(CandidateTag).where(
                    CandidateTag.candidate_id == c.id,
                    CandidateTag.tag.in_([t.lower() for t in remove_tags]),
                )
            )
        c.updated_at = stamp
        session.flush()
        return candidate_dict(c, tags_of(session, [c.id])[c.id])


def suppress(session: Session, db: Database, email: str, reason: str, now: datetime) -> bool:
    """Add an address to the suppression list and end its enrollments. True if it was new."""
    stamp = naive(now)
    key = db.email_hash(email)
    exists = session.get(Suppression, key)
    if exists is None:
        session.add(Suppression(email_hash=key, email=email, reason=reason, created_at=stamp))
    candidate_id = session.execute(
        select(Candidate.id).where(Candidate.email == email)
    ).scalar_one_or_none()
    if candidate_id is not None:
        exit_reason = {"bounced": "bounced", "complained": "unsubscribed"}.get(reason, reason)
        end_enrollments(session, [candidate_id], exit_reason, stamp)
        session.add(
            Event(at=stamp, kind="suppressed", candidate_id=candidate_id, detail={"reason": reason})
        )
    return exists is None


def is_suppressed(session: Session, db: Database, email: str) -> str | None:
    row = session.get(Suppression, db.email_hash(email))
    return row.reason if row else None


def unsubscribe(db: Database, email: str, now: datetime) -> bool:
    with db.sessions.begin() as session:
        return suppress(session, db, email, "unsubscribed", now)


def forget(db: Database, email: str, now: datetime) -> bool:
    """Erase the person everywhere; keep only a salted hash so no import brings them back.

    Returns whether a candidate row existed.
    """
    stamp = naive(now)
    key = db.email_hash(email)
    with db.sessions.begin() as session:
        cid = session.execute(
            select(Candidate.id).where(Candidate.email == email)
        ).scalar_one_or_none()
        if cid is not None:
            send_ids = select(Send.id).where(Send.candidate_id == cid)
            session.execute(
                delete(Inbound).where(
                    or_(Inbound.candidate_id == cid, Inbound.send_id.in_(send_ids))
                )
            )
            session.execute(delete(Send).where(Send.candidate_id == cid))
            session.execute(delete(Enrollment).where(Enrollment.candidate_id == cid))
            session.execute(delete(Event).where(Event.candidate_id == cid))
            session.execute(delete(CandidateTag).where(CandidateTag.candidate_id == cid))
            session.execute(delete(Candidate).where(Candidate.id == cid))
        # Inbound mail from or about the address that never matched a candidate.
        session.execute(
            delete(Inbound).where(or_(Inbound.from_addr == email, Inbound.recipient == email))
        )
        existing = session.get(Suppression, key)
        if existing is None:
            session.add(Suppression(email_hash=key, email=None, reason="forgotten", created_at=stamp))
        else:
            existing.email = None
            existing.reason = "forgotten"
        session.execute(update(Suppression).where(Suppression.email == email).values(email=None))
        session.add(Event(at=stamp, kind="forgotten", detail={}))
        return cid is not None


# --- unsubscribe links (`nurture serve`) ------------------------------------------------------


def token_holder(db: Database, token_key: str) -> tuple[str, str | None] | None:
    """(address, suppression reason or None) of the candidate behind an unsubscribe token key;
    None when no candidate holds it (never issued, or the person was forgotten)."""
    with db.sessions() as session:
        email = session.execute(
            select(Candidate.email).where(Candidate.token_key == token_key)
        ).scalar_one_or_none()
        return None if email is None else (email, is_suppressed(session, db, email))


def unsubscribe_token_key(db: Database, token_key: str, now: datetime) -> bool | None:
    """Unsubscribe the candidate behind a token key: True if newly suppressed, False if it
    already was (no new event; pending steps are cancelled all the same), None if no candidate
    holds the key. Safe to repeat and to race: a concurrent winner makes this one a no-op."""
    for attempt in (1, 2):
        try:
            with db.sessions.begin() as session:
                row = session.execute(
                    select(Candidate.id, Candidate.email).where(Candidate.token_key == token_key)
                ).one_or_none()
                if row is None:
                    return None
                if is_suppressed(session, db, row.email) is None:
                    return suppress(session, db, row.email, "unsubscribed", now)
                end_enrollments(session, [row.id], "unsubscribed", naive(now))
                return False
        except IntegrityError:  # another request inserted the suppression first
            if attempt == 2:
                raise
    return False
