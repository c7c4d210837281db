"""Hand-built ledgers for report tests: candidates, enrollments, sends and inbound rows inserted
with SQLAlchemy Core, so every count in a report has a known answer."""

from __future__ import annotations

import hashlib
import itertools
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert

from nurture_mail.models import Campaign, Candidate, CandidateTag, Enrollment, Inbound, Send

T0 = datetime(2027, 1, 4, 9, 0)  # a Monday, naive UTC as stored
H = timedelta(hours=1)
D = timedelta(days=1)


def utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC)


class Ledger:
    """Insert rows one by one; ids come back so rows can refer to each other.

    Inbound rows matched to a send carry its copies as reply_sync stores them (step, variant,
    and sent_at when the send is accepted), unless `copies` is False: then they carry no
    sent_at, as a message matched while its send was still on the wire, and a report reads
    their sends from the ledger."""

    def __init__(self, db, *, copies: bool = True):
        self.db = db
        self.copies = copies
        self._n = itertools.count(1)
        self._sends: dict[int, dict] = {}  # send id -> the copies an inbound row takes

    def _insert(self, table, **values) -> int:
        with self.db.engine.begin() as conn:
            return conn.execute(insert(table).values(**values).returning(table.c.id)).scalar_one()

    def campaign(self, cid: str, steps: list[str], name: str | None = None, status: str = "active") -> None:
        with self.db.engine.begin() as conn:
            conn.execute(insert(Campaign.__table__).values(
                id=cid, name=name or cid, status=status, steps=steps, updated_at=T0))

    def candidate(self, email: str, *, owner: str | None = None, tags=(), first_name: str | None = None) -> int:
        cid = self._insert(Candidate.__table__, email=email, first_name=first_name, owner=owner,
                           status="rejected", attributes={}, token_key=secrets.token_hex(16),
                           created_at=T0 - 30 * D, updated_at=T0 - 30 * D)
        if tags:
            with self.db.engine.begin() as conn:
                conn.execute(insert(CandidateTag.__table__), [{"candidate_id": cid, "tag": t} for t in tags])
        return cid

    def enrol(self, candidate: int, campaign: str, *, at: datetime = T0 - D, state: str = "active",
              exit_reason: str | None = None, exited_at: datetime | None = None,
              last_step: str | None = None) -> int:
        return self._insert(Enrollment.__table__, candidate_id=candidate, campaign_id=campaign,
                            state=state, exit_reason=exit_reason, enrolled_at=at,
                            exited_at=exited_at, last_step_id=last_step, needs_next=False)

    def send(self, enrollment: int, candidate: int, campaign: str, step: str, *, state: str = "sent",
             at: datetime = T0, variant: str | None = None, number: int = 1) -> int:
        n = next(self._n)
        sent_at = at if state == "sent" else None
        send_id = self._insert(Send.__table__, enrollment_id=enrollment, campaign_id=campaign,
                               candidate_id=candidate, step_id=step, step_number=number, variant=variant,
                               state=state, due_at=at, message_id=f"m{n}.{secrets.token_hex(4)}@test",
                               sent_at=sent_at, attempts=1, created_at=at - D, updated_at=at)
        self._sends[send_id] = {"step_id": step, "variant": variant, "send_sent_at": sent_at}
        return send_id

    def inbound(self, kind: str, at: datetime, *, send: int | None = None, candidate: int | None = None,
                campaign: str | None = None, bounce: str | None = None, text: str | None = None,
                copies: bool | None = None) -> int:
        n = next(self._n)
        copied = self.copies if copies is None else copies
        return self._insert(Inbound.__table__, dedupe_key=hashlib.sha256(f"in{n}".encode()).hexdigest(),
                            message_id=f"in{n}@test", received_at=at, kind=kind, bounce=bounce,
                            reply_text=text, send_id=send, candidate_id=candidate, campaign_id=campaign,
                            **self._copies(send, copied))

    def _copies(self, send: int | None, accepted: bool) -> dict:
        if send is None:
            return {}
        copies = self._sends[send]
        return copies if accepted else {**copies, "send_sent_at": None}


def build_alpha(db, *, copies: bool = True) -> dict:
    """The known-answer ledger the report tests assert against (see test_reports.py).

    alpha: steps s1 (variants a and b) and s2; ten candidates c0..c9.
    beta: two enrolled, nothing sent. gamma: three sent, all hard-bounced.
    """
    led = Ledger(db, copies=copies)
    led.campaign("alpha", ["s1", "s2"], name="Alpha <campaign>")
    led.campaign("beta", ["only"])
    led.campaign("gamma", ["g1"])
    c = [led.candidate(f"c{i}@example.com", owner="dana" if i % 2 == 0 else "lee",
                       tags=("python",) if i < 5 else ()) for i in range(10)]
    exits = {0: ("replied", "s1"), 1: ("replied", "s1"), 3: ("bounced", "s1"),
             4: ("unsubscribed", "s1"), 5: ("replied", "s1"), 6: ("replied", "s2")}
    e = []
    for i in range(10):
        reason, last = exits.get(i, (None, "s1"))
        e.append(led.enrol(c[i], "alpha", state="exited" if reason else "active", exit_reason=reason,
                           exited_at=T0 + 2 * D if reason else None, last_step=last))
    states = ["sent"] * 8 + ["failed", "unknown"]
    s1 = [led.send(e[i], c[i], "alpha", "s1", state=states[i], at=T0 + i * H,
                   variant="a" if i % 2 == 0 else "b") for i in range(10)]
    led.inbound("reply", T0 + 1 * H, send=s1[0], candidate=c[0], campaign="alpha", text="Sounds good!\nDana")
    led.inbound("reply", T0 + 5 * H, send=s1[0], candidate=c[0], campaign="alpha", text="Also...")
    led.inbound("reply", T0 + 1 * H + 3 * H, send=s1[1], candidate=c[1], campaign="alpha", text="> quoted\nYes")
    led.inbound("auto_reply", T0 + 2 * H + 10 * 60 * timedelta(seconds=1), send=s1[2], candidate=c[2], campaign="alpha")
    led.inbound("bounce", T0 + 3 * H, send=s1[3], candidate=c[3], campaign="alpha", bounce="hard")
    led.inbound("bounce", T0 + 4 * H, send=s1[4], candidate=c[4], campaign="alpha", bounce="soft")
    led.inbound("bounce", T0 + 5 * H, send=s1[5], candidate=c[5], campaign="alpha", bounce="soft")
    led.inbound("reply", T0 + 5 * H + 2 * H, send=s1[5], candidate=c[5], campaign="alpha", text="Hi")
    led.inbound("reply", T0 + 10 * H, send=s1[9], candidate=c[9], campaign="alpha", text="Got it")  # unknown send
    led.inbound("reply", T0 + 3 * D, candidate=c[7], campaign="alpha", text="unmatched to a send")
    led.inbound("reply", T0 + 3 * D, text="from a stranger")
    led.inbound("other", T0 + 3 * D, send=s1[6], candidate=c[6])
    s2 = led.send(e[6], c[6], "alpha", "s2", at=T0 + 7 * D, number=2)
    led.send(e[7], c[7], "alpha", "s2", state="scheduled", at=T0 + 8 * D, number=2)
    led.send(e[2], c[2], "alpha", "s2", state="deferred", at=T0 + 8 * D, number=2)
    led.inbound("reply", T0 + 9 * D, send=s2, candidate=c[6], campaign="alpha", text="Let's talk")

    b = [led.candidate(f"b{i}@example.com", owner="dana") for i in range(2)]
    for cand in b:
        led.enrol(cand, "beta")
    g = [led.candidate(f"g{i}@example.com") for i in range(3)]
    for cand in g:
        enrollment = led.enrol(cand, "gamma", state="exited", exit_reason="bounced",
                               exited_at=T0 + 6 * D, last_step="g1")
        # Sunday late evening: the week of Monday T0.
        send = led.send(enrollment, cand, "gamma", "g1", at=T0 + 6 * D + 14 * H + 30 * 60 * timedelta(seconds=1))
        led.inbound("bounce", T0 + 7 * D, send=send, candidate=cand, campaign="gamma", bounce="hard")
    return {"c": c, "b": b, "g": g, "ledger": led}
