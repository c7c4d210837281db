"""`nurture check`: every campaign loaded, every step and variant rendered for a candidate
who has only what the audience guarantees.

A template that would fail for some real member of the audience (a variable they may lack,
a broken partial, a subject that renders empty) fails here, pinned to the template's
`file:line` and naming the campaign, step and variant that need it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .campaigns import Campaign, Step
from .config import Settings
from .errors import CampaignError, NurtureError, SourceError, TemplateError
from .rendering import prepare_email, sample_candidate
from .rules import evaluate
from .schedule import zone_for
from .templates import TemplateSet
from .workspace import display_path

# Rendering for check only: the links are never sent, so any secret will do.
_CHECK_SECRET = "nurture-check"
_CHECK_MESSAGE_ID = "check@nurture.invalid"
_UNDEFINED = re.compile(r"'candidate\.([A-Za-z_][A-Za-z0-9_]*)' is undefined")
_STEP_SUBJECT = " (step subject)"
_MAX_USERS = 3


@dataclass(frozen=True)
class CampaignSummary:
    """One campaign that checked clean."""

    campaign: Campaign
    steps: int
    variants: int  # A/B variants over all steps
    audience: int | None = None  # candidates matching now, when the database was reachable

    def line(self) -> str:
        c = self.campaign
        parts = [f"{self.steps} step{'s' if self.steps != 1 else ''}"]
        if self.variants:
            parts.append(f"{self.variants} variants")
        if self.audience is not None:
            parts.append(f"audience {self.audience} now")
        return f"ok {c.id} ({c.status}): {', '.join(parts)}"


@dataclass
class CheckReport:
    errors: list[SourceError] = field(default_factory=list)
    warnings: list[SourceError] = field(default_factory=list)
    campaigns: list[CampaignSummary] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def check_sources(
    templates: TemplateSet | None,
    campaigns: Sequence[Campaign],
    errors: Iterable[SourceError],
    *,
    settings: Settings,
    now: datetime,
) -> CheckReport:
    """Loading errors (from `workspace.load_sources`), plus every render that would fail."""
    report = CheckReport(errors=list(errors))
    known = {str(e) for e in report.errors}
    failures: dict[tuple[str, int | None, str], list[str]] = {}
    failed: set[str] = set()
    if templates is not None:
        for campaign in campaigns:
            for step in campaign.steps:
                for variant in [v.id for v in step.variants] or [None]:
                    error = _render_error(templates, settings, campaign, step, variant, now)
                    if error is None:
                        continue
                    failed.add(campaign.id)
                    if str(error) in known:  # already reported by loading (a broken partial)
                        continue
                    user = f"campaign {campaign.id}, step {step.id}"
                    if variant is not None:
                        user += f", variant {variant}"
                    failures.setdefault((error.file, error.line, error.message), []).append(user)
    for (file, line, message), users in failures.items():
        report.errors.append(SourceError(file, line, _explain(message, users)))
    report.errors.sort(key=lambda e: (e.file, e.line or 0))
    for campaign in campaigns:
        if campaign.id not in failed:
            variants = sum(len(s.variants) for s in campaign.steps)
            report.campaigns.append(CampaignSummary(campaign, len(campaign.steps), variants))
    has_campaign_errors = any(isinstance(e, CampaignError) for e in report.errors)
    if templates is not None and not has_campaign_errors:
        templates_dir = display_path(settings.templates_dir).as_posix()
        report.warnings.extend(unused_templates(templates, campaigns, templates_dir))
    if not campaigns and not has_campaign_errors:
        campaigns_dir = display_path(settings.campaigns_dir).as_posix()
        report.warnings.append(SourceError(campaigns_dir, None, "warning: no campaigns"))
    return report


def unused_templates(
    templates: TemplateSet, campaigns: Iterable[Campaign], templates_dir: str
) -> list[SourceError]:
    """Templates that exist but no step or variant uses: a warning, not an error."""
    used = set()
    for campaign in campaigns:
        for step in campaign.steps:
            used.add(step.template)
            used.update(v.template for v in step.variants if v.template)
    return [
        SourceError(f"{templates_dir}/{name}.md", None, "warning: not used by any campaign")
        for name in templates.names()
        if name not in used
    ]


def _render_error(
    templates: TemplateSet,
    settings: Settings,
    campaign: Campaign,
    step: Step,
    variant: str | None,
    now: datetime,
) -> SourceError | None:
    """The first problem rendering this step for each kind of audience member, if any."""
    for candidate in _samples(campaign, step, now):
        zone = zone_for(campaign.schedule, candidate.get("timezone"), settings.default_timezone)  # type: ignore[arg-type]
        try:
            prepare_email(
                templates,
                settings,
                _CHECK_SECRET,
                campaign,
                step,
                variant,
                candidate,
                message_id=_CHECK_MESSAGE_ID,
                now=now,
                zone=zone,
            )
        except TemplateError as exc:
            return _pin_step_subject(exc, campaign, step, variant)
        except (ValueError, NurtureError) as exc:
            return SourceError(
                str(campaign.path), step.line or None, f"cannot build the message: {exc}"
            )
    return None


def _samples(campaign: Campaign, step: Step, now: datetime) -> list[dict[str, object]]:
    """The guaranteed-fields candidate, once per status the audience admits, so copy that
    differs for `rejected` and `withdrawn` is rendered both ways."""
    base = sample_candidate(campaign, step, now=now)
    statuses = campaign.audience.statuses or ()
    rules = [c for c in (*campaign.audience.where, *step.only_if) if c.field == "status"]
    out = [base]
    for status in statuses:
        if status != base.get("status") and evaluate(rules, {"status": status}, now):
            out.append({**base, "status": status})
    return out


def _pin_step_subject(
    exc: TemplateError, campaign: Campaign, step: Step, variant: str | None
) -> SourceError:
    """A step's own `subject:` lives in the campaign file: point there, not at the template."""
    if not exc.file.endswith(_STEP_SUBJECT):
        return exc
    keys = [f"steps.{step.id}.subject"]
    if variant is not None:
        keys.insert(0, f"steps.{step.id}.variants.{variant}.subject")
    line = next((campaign.line_of[k] for k in keys if k in campaign.line_of), step.line or None)
    return SourceError(str(campaign.path), line, f"subject: {exc.message}")


def _explain(message: str, users: list[str]) -> str:
    shown = "; ".join(users[:_MAX_USERS])
    if len(users) > _MAX_USERS:
        shown += f"; and {len(users) - _MAX_USERS} more"
    text = f"{message} (needed by {shown})"
    missing = _UNDEFINED.search(message)
    if missing:
        name = missing.group(1)
        text += (
            f": not every candidate in the audience has {name}; require it in the audience "
            f"(where: {{{name}: {{exists: true}}}}) or use `| default(...)`"
        )
    return text


# -- the optional database part ------------------------------------------------------------
@dataclass
class LedgerFacts:
    """What `check` learns from the database when there is one."""

    audience: dict[str, int]  # campaign id -> candidates its audience matches now
    warnings: list[SourceError]  # step ids the ledger knows that the files no longer have


def ledger_facts(
    database_url: str, campaigns: Sequence[Campaign], now: datetime
) -> LedgerFacts | None:
    """Audience sizes and removed-step warnings; None when there is no database to ask (a
    SQLite file that does not exist yet, a server that does not answer, a schema never
    created). Never creates, migrates or writes anything."""
    from sqlalchemy import func, select
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.orm import Session

    from .database import SCHEMA_HEAD, create_db_engine, current_revision
    from .models import Candidate
    from .segments import audience_clause

    try:
        url = make_url(database_url)
    except (SQLAlchemyError, ValueError):
        return None
    sqlite_file = url.database if url.get_backend_name() == "sqlite" else None
    if sqlite_file is not None and (
        sqlite_file in ("", ":memory:") or not Path(sqlite_file).is_file()
    ):
        return None
    try:
        engine = create_db_engine(database_url)
    except NurtureError:
        return None
    try:
        if current_revision(engine) != SCHEMA_HEAD:
            return None
        with Session(engine) as session:
            audience = {
                c.id: session.execute(
                    select(func.count())
                    .select_from(Candidate)
                    .where(audience_clause(c.audience, now))
                ).scalar_one()
                for c in campaigns
            }
            return LedgerFacts(audience, removed_step_warnings(session, campaigns))
    except SQLAlchemyError:
        return None
    finally:
        engine.dispose()


_HAD = ("sent", "unknown")  # the candidate got it (or may have: unknown is never resent)
_ID_CHUNK = 5000  # enrollment ids per IN (...): well under every driver's parameter limit
_MAX_PROGRESS_STATES = 10_000  # distinct sets of done steps cached; a handful in practice


def removed_step_warnings(session, campaigns: Sequence[Campaign]) -> list[SourceError]:
    """A warning for each step id the ledger has rows for that its campaign file no longer
    has, while the daemon still has something to do about it: sends of it waiting (cancelled
    at the next tick, never sent), sends of it in flight (claimed by a sender), or candidates
    whose next step the daemon places without it (`_replaced_after`). Progress is kept by
    step id, so a renamed step is a new step, sent again to everyone who had the old one and
    is not past it. The warning says how many had it and which step they get next
    (`sequencing.next_step`, as the daemon decides). Once nothing is pending, the step's rows
    are history (sent rows stay in the ledger forever) and nothing is said."""
    from sqlalchemy import func, select

    from .models import CLAIMABLE_STATES, Send

    by_id = {c.id: c for c in campaigns}
    if not by_id:
        return []
    states: dict[tuple[str, str], dict[str, int]] = {}
    # Grouped in the order of `ix_sends_report` (variant included) so the index streams.
    for campaign_id, step_id, _variant, state, count in session.execute(
        select(Send.campaign_id, Send.step_id, Send.variant, Send.state, func.count())
        .where(Send.campaign_id.in_(list(by_id)))
        .group_by(Send.campaign_id, Send.step_id, Send.variant, Send.state)
    ):
        if by_id[campaign_id].step(step_id) is None:
            counts = states.setdefault((campaign_id, step_id), {})
            counts[state] = counts.get(state, 0) + count
    warnings = []
    for (campaign_id, step_id), counts in sorted(states.items()):
        campaign = by_id[campaign_id]
        had = sum(counts.get(s, 0) for s in _HAD)
        waiting = sum(counts.get(s, 0) for s in CLAIMABLE_STATES)
        in_flight = counts.get("claimed", 0)
        replaced = _replaced_after(session, campaign_id, step_id, with_waiting=waiting > 0)
        if not waiting and not in_flight and not replaced:
            continue  # everyone who had it has moved on: the rows are history
        parts = []
        if had:
            parts.append(f"{had} candidate{'s' if had != 1 else ''} had it")
        if waiting:
            parts.append(f"{waiting} send{'s' if waiting != 1 else ''} of it waiting will be "
                         "cancelled at the next tick, never sent")
        if in_flight:
            parts.append(f"{in_flight} send{'s' if in_flight != 1 else ''} of it in flight "
                         "(claimed by a sender, which sends or cancels it)")
        nexts = _next_steps_of(session, campaign, replaced)
        for next_id, count in sorted(nexts.items()):
            parts.append(f"{count} of these candidates get step '{next_id}' next")
        if ended := len(replaced) - sum(nexts.values()):
            parts.append(f"{ended} of these candidates have no step left and complete")
        message = (
            f"warning: step '{step_id}' is no longer in the file but the ledger has it: "
            + "; ".join(parts)
            + ". Progress is kept by step id: if you renamed a step, give it back its old id,"
            " or everyone who had it gets the renamed one too"
        )
        file = display_path(campaign.path).as_posix()
        warnings.append(SourceError(file, campaign.line_of.get("steps"), message))
    return warnings


def _replaced_after(session, campaign_id: str, step_id: str, *, with_waiting: bool) -> list[int]:
    """The active enrollments whose next step the daemon will place without `step_id`: those
    holding a waiting (claimable) row of it, which the next tick cancels and flags
    `needs_next`; and those already flagged `needs_next` whose latest ledger row is of it (it
    just ended, sent or otherwise, or was cancelled and not yet replaced). `needs_next` is set
    again after every later send, so an enrollment that went on to a later step is past the
    removed one and is not counted. Claimed rows are left to their sender."""
    from sqlalchemy import exists, literal_column, select
    from sqlalchemy.orm import aliased

    from .models import CLAIMABLE_STATES, Enrollment, Send

    later = aliased(Send)
    # Driven from the flagged enrollments (written as the partial index
    # `ix_enrollments_needs_next` states it, so SQLite uses it: a handful between two ticks),
    # each probing `uq_send_step`; not from the removed step's rows, which may be everyone who
    # ever had it. `state` is tested here rather than in SQL, where SQLite would prefer
    # `ix_enrollments_campaign_state` and read every active enrollment of the campaign.
    flagged = (
        select(Enrollment.id, Enrollment.state)
        .join(Send, (Send.enrollment_id == Enrollment.id) & (Send.step_id == step_id))
        .where(
            Enrollment.campaign_id == campaign_id,
            literal_column("enrollments.needs_next"),
            ~exists().where(later.enrollment_id == Enrollment.id, later.id > Send.id),
        )
    )
    ids = {eid for eid, state in session.execute(flagged) if state == "active"}
    if with_waiting:  # the ledger counts said so; skip reading the step's rows otherwise
        ids.update(session.execute(
            select(Send.enrollment_id)
            .join(Enrollment, Enrollment.id == Send.enrollment_id)
            .where(
                Send.campaign_id == campaign_id,
                Send.step_id == step_id,
                Send.state.in_(CLAIMABLE_STATES),
                Enrollment.state == "active",
            )
        ).scalars())
    return sorted(ids)


def _next_steps_of(session, campaign: Campaign, enrollment_ids: Sequence[int]) -> dict[str, int]:
    """How many of these enrollments get each step next, as the daemon places it
    (`scheduling`: `sequencing.next_step` over every step the enrollment has a ledger row for,
    whatever its state). Read in chunks of ids; `next_step` is called once per distinct set of
    done steps. Enrollments with no step left (they complete) are not counted."""
    from sqlalchemy import select

    from .models import Send
    from .sequencing import next_step

    steps: dict[frozenset[str], Step | None] = {}
    counts: dict[str, int] = {}
    for start in range(0, len(enrollment_ids), _ID_CHUNK):
        chunk = enrollment_ids[start : start + _ID_CHUNK]
        done: dict[int, set[str]] = {}
        for enrollment_id, sid in session.execute(
            select(Send.enrollment_id, Send.step_id).where(Send.enrollment_id.in_(chunk))
        ):
            done.setdefault(enrollment_id, set()).add(sid)
        for progress in done.values():
            key = frozenset(progress)
            if key not in steps:
                if len(steps) >= _MAX_PROGRESS_STATES:
                    steps.clear()
                steps[key] = next_step(campaign, key)
            step = steps[key]
            if step is not None:
                counts[step.id] = counts.get(step.id, 0) + 1
    return counts
