"""The enrollments and the send ledger: enrol, due, claim, record, cancel."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from ..models import CLAIMABLE_STATES, Enrollment, Send

ACTIVE_ENROLLMENT = ("active", "paused")


def end_enrollments(
    session: Session, candidate_ids: Sequence[int], reason: str, stamp: datetime
) -> None:
    """Stop every later step for these candidates at once: exit the enrollments and cancel
    ledger rows that have not been handed to the server."""
    if not candidate_ids:
        return
    session.execute(
        update(Enrollment)
        .where(Enrollment.candidate_id.in_(candidate_ids), Enrollment.state.in_(ACTIVE_ENROLLMENT))
        .values(state="exited", exit_reason=reason, exited_at=stamp)
    )
    session.execute(
        update(Send)
        .where(Send.candidate_id.in_(candidate_ids), Send.state.in_(CLAIMABLE_STATES))
        .values(state="cancelled", reason=reason, updated_at=stamp)
    )
