"""Reply sync: read the inbox, store each message once, match it to a send, and act on it.

    sources (inbox.py) -> dedupe -> classify (replies/) -> match -> effects (store/inbound.py)

Exactly once: every message gets a dedupe key (sha256 of its Message-ID, else of its bytes
with line endings normalised). The row is inserted with ON CONFLICT DO NOTHING and effects
run only when that insert created the row, in the same transaction as the insert and the
IMAP position, so a crash, a re-read, a UIDVALIDITY resync or a second daemon can never act
twice on one message.

Speed (issue 7): the work is done a batch (a few hundred messages) at a time. One query finds
the keys already stored (those are never classified again), classification runs in worker
processes for a backlog (classify_pool.py) up to LOOKAHEAD batches ahead, this process taking
back the chunks no worker has started when it needs them, and each batch is then one
transaction: one look-up of every Message-ID it names, one of every address it may be matched
by, one batch INSERT ... ON CONFLICT DO NOTHING RETURNING, and its effects applied in message
order to a snapshot and written with one statement per kind (store.inbound.Effects), so the
result equals acting on the messages one by one. The store sends these through the driver
(store/inbound.py says how), and message_identity reads two header fields with substring
searches instead of a regex over the header section. The transactions run in order on a thread
of their own (write_behind.WriteBehind) while this one reads and prepares the next batches: on
PostgreSQL that thread spends half its time waiting on the server, and psycopg lets go of the
GIL meanwhile.

Matching, strongest evidence first:
1. In-Reply-To / References name one of our Message-IDs (stored bare, without <>);
2. a delivery report or complaint quotes our original Message-ID;
3. a bounce (or complaint) names a failed address we sent to within the window;
4. the sender is a candidate we sent to within the window before the message arrived.
Mail from our own sender address, or carrying one of our own Message-IDs, is never matched.
Unmatched mail is stored with its kind and no send or candidate, and never acted on.

Effects of matched mail:
* reply: every active enrollment of the candidate whose campaign has `replied` in exit_when
  (and that began before the reply) ends with reason "replied" (PRODUCT.md: a reply stops
  every later step at once); the Inbound row keeps the time and the reply text;
* hard bounce: the failed address is suppressed ("bounced"), which ends its enrollments; a
  bounce naming only other addresses (a forward that failed) suppresses nothing;
* soft bounce: recorded (Inbound row and an event); the sequence continues. The sender
  already retried temporary SMTP failures before the message was accepted; a soft report
  after acceptance is "delayed / mailbox full" from a later hop, and re-sending the same step
  would break the ledger's one-row-per-step guarantee;
* auto-reply: the candidate's active enrollments are paused (`paused_until`) and queued sends
  due before then are postponed: to the start of the day after the return date, in the
  candidate's time zone (their first day back is for the backlog; the send window then picks
  the hour), else `[imap] away_default` after the note arrived; capped at a year;
* unsubscribe request: the candidate's address is suppressed ("unsubscribed");
  ARF complaint: suppressed ("complained").
Every effect also writes an Event row.
"""

from __future__ import annotations

import hashlib
import logging
import mailbox
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from email.utils import parseaddr
from zoneinfo import ZoneInfo

from sqlalchemy.exc import SQLAlchemyError

from .campaigns import EXIT_REASONS
from .classify_pool import Classifier, default_workers
from .config import Settings
from .database import Database
from .inbox import Batch, Fetched, Inbox, InboxError, imap_from_settings
from .replies import Classification, InboundKind
from .replies.parsing import MAX_HEAD_BYTES, head_end, header_date, message_ids
from .store import inbound as store
from .store.ledger import naive
from .write_behind import WriteBehind

log = logging.getLogger("nurture.replies")

MATCH_WINDOW = timedelta(days=30)  # rules 3 and 4: how long after a send mail may refer to it
CLOCK_SLACK = timedelta(hours=1)  # a Date header a little behind our clock
MAX_PAUSE = timedelta(days=366)
DEFAULT_EXIT_WHEN = frozenset(EXIT_REASONS)
LOOKAHEAD = 2  # batches classified ahead of the one being stored
LOOKAHEAD_BYTES = 48 * 1024 * 1024  # ... unless they hold more than this


@dataclass
class SourceReport:
    source: str
    read: int = 0
    new: int = 0
    duplicates: int = 0
    error: str | None = None


@dataclass
class SyncReport:
    """What one sync did. `new` counts messages stored by this sync; `duplicates` those
    already stored (re-reads, resyncs, the same message in two folders)."""

    read: int = 0
    new: int = 0
    duplicates: int = 0
    matched: int = 0
    unmatched: int = 0
    kinds: Counter = field(default_factory=Counter)  # new messages by kind (and "bounce_hard"...)
    actions: Counter = field(default_factory=Counter)  # exited, postponed, suppressed, recorded
    held: int = 0  # sends kept behind an earlier out-of-office
    sources: list[SourceReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        kinds = ", ".join(
            f"{self.kinds[k]} {k}" for k in ("reply", "auto_reply", "bounce", "unsubscribe", "other")
            if self.kinds[k]
        )
        parts = [f"{self.read} read", f"{self.new} new" + (f" ({kinds})" if kinds else "")]
        parts.append(f"{self.duplicates} already stored")
        parts.append(f"{self.matched} matched, {self.unmatched} unmatched")
        acted = [f"{n} {name}" for name, n in sorted(self.actions.items()) if n]
        if acted:
            parts.append("; ".join(acted))
        return ", ".join(parts)


@dataclass(frozen=True)
class _Context:
    settings: Settings
    db: Database
    now: datetime
    exit_when: Mapping[str, frozenset[str]]
    own_addresses: frozenset[str]


def sync_replies(
    settings: Settings,
    db: Database,
    *,
    now: datetime,
    exit_when: Mapping[str, frozenset[str]],
    sources: Sequence[Inbox] | None = None,
    workers: int | None = None,
) -> SyncReport:
    """Read every source, store new messages once, match and act on them.

    `sources=None` reads the configured IMAP account ([imap] url and folders), and nothing
    when none is configured. `exit_when` maps campaign ids to their exit_when sets; a campaign
    not in it gets the default (all four). A source that cannot be read is reported in
    `errors` and the others still run; database errors propagate.

    `workers`: processes that classify a backlog (a batch with at least classify_pool.PARALLEL_MIN new
    messages) while this one stores and acts; default one per CPU but one (none on a single
    CPU), 0 to classify here only. A few new messages never start a process.
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    report = SyncReport()
    if sources is None:
        imap = imap_from_settings(settings)
        sources = [imap] if imap is not None else []
    own = {settings.sender_email.lower()}
    if settings.reply_to:
        own.add(parseaddr(settings.reply_to)[1].lower())
    ctx = _Context(settings, db, now, exit_when, frozenset(a for a in own if a))

    def position(key: str):
        with db.sessions() as session:
            return store.load_position(session, key)

    classifier = Classifier(default_workers() if workers is None else workers)
    seen: set[str] = set()  # keys taken by an earlier batch of this sync
    try:
        for source in sources:
            sr = SourceReport(source.label)
            report.sources.append(sr)
            # Classification runs up to LOOKAHEAD batches ahead of the database work, in the
            # worker processes when there are any; what was read before a source failed is
            # stored all the same.
            with WriteBehind(lambda prepared, sr=sr: _apply(ctx, prepared, sr, report),
                             depth=LOOKAHEAD, max_bytes=LOOKAHEAD_BYTES, name="nurture-reply-store",
                             threaded=db.shared_across_threads) as store_behind:
                for batch in _read(source, position, sr, report):
                    prepared = _prepare(ctx, batch, seen, classifier, sr, report)
                    store_behind.put(prepared, prepared.size)
    finally:
        classifier.close()
        if classifier.in_workers:
            log.debug("reply sync: classified %d messages here, %d in worker processes",
                      classifier.here, classifier.in_workers)
    with db.sessions.begin() as session:
        report.held = store.hold_paused(session, now)
    return report


def _read(source: Inbox, position, sr: SourceReport, report: SyncReport) -> Iterator[Batch]:
    """The source's batches, then the source closed; a source that fails is reported (in
    `sr` and `report.errors`) and simply ends."""
    try:
        yield from source.batches(position)
    except (InboxError, OSError, mailbox.Error) as exc:
        sr.error = str(exc) if isinstance(exc, InboxError) else f"{source.label}: {exc}"
        report.errors.append(sr.error)
        log.warning("reply sync: %s", sr.error)
    finally:
        source.close()


# --- identity and classification --------------------------------------------------------------

def message_identity(raw: bytes) -> tuple[str, str | None, datetime | None]:
    """(dedupe key, Message-ID, Date) from the header section alone: the first Message-ID
    field that holds an id, and the first Date field, found the way parse_headers finds every
    field (a name at the start of a line, its continuation lines) without splitting the whole
    header section: substring searches in its lower-cased bytes."""
    stripped = raw.lstrip(b" \t\r\n")
    found = head_end(stripped, MAX_HEAD_BYTES + 4)
    head = (stripped[: found[0]] if found is not None else stripped)[:MAX_HEAD_BYTES]
    lower = head.lower()  # ASCII letters only, as header names are matched
    codec = "ascii" if head.isascii() else _head_codec(head)
    mid = None
    for value in _field_values(head, lower, b"message-id"):
        ids = message_ids(_unfold(value, codec))
        if ids:
            mid = ids[0]
            break
    date = None
    for value in _field_values(head, lower, b"date"):
        date = header_date(_unfold(value, codec))
        break  # the first Date field decides, readable or not
    if mid:
        key = hashlib.sha256(mid.encode("utf-8", "surrogateescape")).hexdigest()
    else:  # the same bytes, whether read over IMAP (CRLF) or from a file (LF)
        key = hashlib.sha256(raw.replace(b"\r\n", b"\n")).hexdigest()
    return key, mid, date


def _head_codec(head: bytes) -> str:
    """parse_headers' choice: UTF-8 when the whole header section is valid UTF-8, else Latin-1."""
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "latin-1"
    return "utf-8"


def _field_values(head: bytes, lower: bytes, name: bytes) -> Iterator[bytes]:
    """The raw values of the fields called `name` (lower-case), in order: after the name,
    optional blanks and a colon, up to the end of the line and its continuation lines."""
    size = len(head)
    needle = b"\n" + name
    if lower.startswith(name):
        at = 0
    else:
        at = lower.find(needle) + 1
        if at == 0:
            return  # no such field
    while True:  # each turn moves `at` forward to a later line
        colon = at + len(name)
        while colon < size and head[colon] in (32, 9):  # " ", "\t"
            colon += 1
        line_end = colon
        if colon < size and head[colon] == 58:  # ":"
            line_end = head.find(b"\n", colon)
            while 0 <= line_end < size - 1 and head[line_end + 1] in (32, 9):  # folded
                line_end = head.find(b"\n", line_end + 1)
            if line_end < 0:
                line_end = size
            yield head[colon + 1 : line_end]
        at = lower.find(needle, line_end) + 1
        if at == 0:
            return


def _unfold(value: bytes, codec: str) -> str:
    text = value.decode(codec)
    if "\n" in text:
        text = text.replace("\r", "").replace("\n", "")
    return text.strip()


# --- one batch --------------------------------------------------------------------------------


@dataclass
class _Item:
    fetched: Fetched
    key: str
    received: datetime
    verdict: Classification | None = None


@dataclass
class _Prepared:
    """A batch read, deduplicated against the database, and handed to the classifier."""

    batch: Batch
    read: int
    fresh: list[_Item]
    verdicts: Callable[[], list[Classification]]
    size: int


def _prepare(ctx: _Context, batch: Batch, seen: set[str], classifier: Classifier,
             sr: SourceReport, report: SyncReport) -> _Prepared:
    items: list[_Item] = []
    for fetched in batch.messages:
        key, _mid, date = message_identity(fetched.raw)
        received = fetched.received or date or ctx.now
        items.append(_Item(fetched, key, min(received, ctx.now)))
    sr.read += len(items)
    report.read += len(items)
    with ctx.db.sessions() as session:
        known = store.known_keys(session, [i.key for i in items if i.key not in seen])
    fresh: list[_Item] = []
    for item in items:
        if item.key in known or item.key in seen:
            continue
        seen.add(item.key)
        fresh.append(item)
    verdicts = classifier.submit([(i.fetched.raw, i.received) for i in fresh])
    return _Prepared(batch, len(items), fresh, verdicts, sum(len(i.fetched.raw) for i in items))


def _apply(ctx: _Context, prepared: _Prepared, sr: SourceReport, report: SyncReport) -> None:
    """Match, store and act on one batch in one transaction (with the IMAP position)."""
    fresh = prepared.fresh
    for item, verdict in zip(fresh, prepared.verdicts(), strict=True):
        item.verdict = verdict
    new = 0
    try:
        with ctx.db.sessions.begin() as session:
            refs = _match_batch(ctx, session, fresh)
            rows = [_row(item, ref) for item, (ref, _how) in zip(fresh, refs, strict=True)]
            created = store.insert_inbound_many(session, rows)
            acted = []
            for item, (ref, how) in zip(fresh, refs, strict=True):
                inbound_id = created.get(item.key)
                if inbound_id is None:
                    continue  # stored meanwhile (another daemon): its effects are that one's
                new += 1
                report.new += 1
                report.kinds[str(item.verdict.kind)] += 1
                if ref is None:
                    report.unmatched += 1
                else:
                    report.matched += 1
                    acted.append((item, ref, how, inbound_id))
            _act_all(ctx, session, acted, report)
            if prepared.batch.position is not None:
                p = prepared.batch.position
                store.save_position(session, p.mailbox, p.uidvalidity, p.last_uid)
    except SQLAlchemyError:
        log.exception("reply sync: a batch from %s failed; it will be read again", sr.source)
        raise
    sr.new += new
    sr.duplicates += prepared.read - new
    report.duplicates += prepared.read - new


def _match_batch(ctx: _Context, session, items: list[_Item]) -> list[tuple[store.SendRef | None, str | None]]:
    """match() for every message of a batch, with one query for all the Message-IDs they name
    and one for all the addresses the rest may be matched by."""
    wanted: set[str] = set()
    for item in items:
        v = item.verdict
        wanted.update(v.in_reply_to)
        wanted.update(v.original_message_ids)
        if v.message_id:
            wanted.add(v.message_id)
    ours = store.sends_by_message_id(session, wanted)
    addresses: dict[str, list[datetime]] = {}
    for item in items:
        for address in _match_addresses(item.verdict, ours, ctx.own_addresses):
            addresses.setdefault(address, []).append(item.received)
    recent = store.RecentSends.load(session, addresses, MATCH_WINDOW, CLOCK_SLACK)
    return [match(item.verdict, ours, recent, item.received, ctx.own_addresses) for item in items]


def _match_addresses(v: Classification, ours, own_addresses: frozenset[str]) -> list[str]:
    """The addresses match() will look up for this message (rules 3 and 4), if it gets there."""
    if (v.from_addr and v.from_addr.lower() in own_addresses) or (
        v.message_id and v.message_id in ours
    ):
        return []
    if any(m in ours for m in v.in_reply_to) or any(m in ours for m in v.original_message_ids):
        return []
    complaint = v.kind == InboundKind.UNSUBSCRIBE and v.reason.startswith("ARF")
    if v.kind == InboundKind.BOUNCE or complaint:
        return _named(v)
    return [v.from_addr.lower()] if v.from_addr else []


def _named(v: Classification) -> list[str]:
    return [a.lower() for a in (v.recipients or ((v.recipient,) if v.recipient else ()))]


def match(
    v: Classification, ours: Mapping[str, store.SendRef], recent: store.RecentSends,
    received: datetime, own_addresses: frozenset[str] = frozenset(),
) -> tuple[store.SendRef | None, str | None]:
    """The send a message is about, and the rule that found it (see the module docstring).
    `ours`: our sends by Message-ID; `recent`: recent sends by address (store.RecentSends)."""
    if (v.from_addr and v.from_addr.lower() in own_addresses) or (
        v.message_id and v.message_id in ours
    ):
        return None, None  # our own mail (a copy in the inbox, the recruiter in the thread)
    for mid in v.in_reply_to:
        if mid in ours:
            return ours[mid], "thread"
    for mid in v.original_message_ids:
        if mid in ours:
            return ours[mid], "original message"
    complaint = v.kind == InboundKind.UNSUBSCRIBE and v.reason.startswith("ARF")
    if v.kind == InboundKind.BOUNCE or complaint:
        ref = recent.latest(_named(v), received)
        return (ref, "failed recipient") if ref else (None, None)
    if v.from_addr:
        ref = recent.latest([v.from_addr.lower()], received)
        if ref is not None:
            return ref, "sender"
    return None, None


def _row(item: _Item, ref: store.SendRef | None) -> dict:
    v = item.verdict
    reason = v.reason + (f": {v.diagnostic}" if v.diagnostic else "")
    return {
        "dedupe_key": item.key,
        "message_id": _clean(v.message_id, 250),
        "source": _clean(f"{item.fetched.source}#{item.fetched.uid}", 300),
        "received_at": store.naive_utc(item.received),
        "from_addr": _clean(v.from_addr, 320),
        "subject": _clean(v.subject, 2000),
        "kind": str(v.kind),
        "bounce": v.bounce if v.kind == InboundKind.BOUNCE else None,
        "recipient": _clean(v.recipient, 320),
        "status_code": _clean(v.status, 20),
        "reason": _clean(reason, 2000),
        "reply_text": _clean(v.reply_text, 20000),
        "send_id": ref.send_id if ref else None,
        "candidate_id": ref.candidate_id if ref else None,
        "campaign_id": ref.campaign_id if ref else None,
        # Copies of the send for the report (models.Inbound): sends never change them later.
        "step_id": ref.step_id if ref else None,
        "variant": ref.variant if ref else None,
        "send_sent_at": ref.accepted_at if ref else None,
        "return_date": datetime.combine(v.return_date, time()) if v.return_date else None,
    }


# --- effects ----------------------------------------------------------------------------------


def _needs_state(v: Classification) -> bool:
    return v.kind in (InboundKind.REPLY, InboundKind.AUTO_REPLY, InboundKind.UNSUBSCRIBE) or (
        v.kind == InboundKind.BOUNCE and v.bounce == "hard"
    )


def _act_all(ctx: _Context, session, acted: list[tuple[_Item, store.SendRef, str, int]],
             report: SyncReport) -> None:
    """The effects of a batch's newly stored, matched messages, in message order, written in
    one go (store.Effects), with their audit events."""
    touched = [ref for item, ref, _how, _id in acted if _needs_state(item.verdict)]
    effects = store.Effects(
        session, ctx.db, {ref.candidate_id for ref in touched}, {ref.email for ref in touched},
        naive(ctx.now),
    )
    events: list[dict] = []
    for item, ref, how, inbound_id in acted:
        event = _act(ctx, effects, item.verdict, ref, how, inbound_id, item.received, report)
        if event is not None:
            events.append(event)
    effects.flush(events)


def _act(ctx: _Context, effects: store.Effects, v, ref: store.SendRef, how: str, inbound_id: int,
         received: datetime, report: SyncReport) -> dict | None:
    """Apply the effect of one newly stored, matched message; returns its audit event."""
    stamp = effects.stamp
    detail: dict = {"inbound_id": inbound_id, "send_id": ref.send_id, "step": ref.step_id,
                    "matched_by": how}
    kind = str(v.kind)
    if v.kind == InboundKind.REPLY:
        ended = effects.end_on_reply(ref.candidate_id, ctx.exit_when, DEFAULT_EXIT_WHEN, received)
        detail["ended"] = [c for _, c in ended]
        detail["action"] = "enrollments ended" if ended else "recorded"
        report.actions["enrollments exited"] += len(ended)
    elif v.kind == InboundKind.AUTO_REPLY:
        resume = resume_at(v, received, ref.timezone or ctx.settings.default_timezone,
                           ctx.settings.imap.away_default_days)
        held = effects.postpone(ref.candidate_id, resume, received)
        moved = [s for _, _, ids in held for s in ids]
        detail.update(
            action="paused", paused_until=resume.isoformat(), return_date=_iso(v.return_date),
            postponed_sends=moved,
        )
        report.actions["sends postponed"] += len(moved)
    elif v.kind == InboundKind.BOUNCE and v.bounce == "hard":
        kind = "bounce_hard"
        named = set(_named(v))
        if not named or ref.email in named:
            effects.suppress(ref.candidate_id, ref.email, "bounced")
            detail["action"] = "suppressed"
            report.actions["addresses suppressed"] += 1
        else:
            detail["action"] = "recorded: the report names other addresses"
            detail["recipients"] = sorted(named)
    elif v.kind == InboundKind.BOUNCE:
        kind = "bounce_soft"
        detail["action"] = "recorded: delivery delayed; the sequence continues"
        detail["status"] = v.status
        report.actions["soft bounces recorded"] += 1
    elif v.kind == InboundKind.UNSUBSCRIBE:
        complaint = v.reason.startswith("ARF")
        kind = "complaint" if complaint else "unsubscribe_request"
        effects.suppress(ref.candidate_id, ref.email, "complained" if complaint else "unsubscribed")
        detail["action"] = "suppressed"
        report.actions["addresses suppressed"] += 1
    else:
        return None  # other: matched for the record, never acted on
    detail["reason"] = v.reason
    return store.event_row(kind, stamp, candidate_id=ref.candidate_id,
                           campaign_id=ref.campaign_id, detail=detail)


def resume_at(v: Classification, received: datetime, zone_name: str, away_days: int) -> datetime:
    """When an out-of-office enrollment may be mailed again (aware UTC)."""
    if v.return_date is not None:
        try:
            zone = ZoneInfo(zone_name)
        except (KeyError, ValueError):
            zone = UTC
        day_after = v.return_date + timedelta(days=1)
        when = datetime.combine(day_after, time(), tzinfo=zone).astimezone(UTC)
    else:
        when = received + timedelta(days=away_days)
    return min(when, received + MAX_PAUSE)


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def _clean(value: str | None, limit: int) -> str | None:
    """Storable text: no NUL (PostgreSQL refuses it), no lone surrogates, bounded length."""
    if value is None:
        return None
    value = value.replace("\x00", "")
    if not value.isascii():  # ASCII holds no lone surrogate: most values skip the round trip
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value[:limit]
