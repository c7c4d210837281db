"""Pure: which step of a campaign comes next for an enrollment, when, and in which variant.

Shared by the sender (`engine`) and the forecast (`planning`), so `nurture plan` shows exactly
what `nurture run` will do.

Progress is kept by step id (PRODUCT.md "Editing a live campaign"): the next step is the first
step, in the file's current order, after the last step the enrollment already has a ledger row
for, that has no row itself. New steps at the end are picked up; removed steps are never sent;
a renamed step is a new step.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from .campaigns import Campaign, Step
from .schedule import next_slot, pick_variant, step_due, zone_for


def next_step(campaign: Campaign, done: Collection[str]) -> Step | None:
    """The step to schedule after the steps in `done` (step ids with a ledger row)."""
    last = -1
    for index, step in enumerate(campaign.steps):
        if step.id in done:
            last = index
    for step in campaign.steps[last + 1 :]:
        if step.id not in done:
            return step
    return None


@dataclass(frozen=True)
class Due:
    """A step placed in time for one candidate."""

    step: Step
    variant: str | None
    due_at: datetime  # aware UTC
    zone: ZoneInfo


def schedule_step(
    campaign: Campaign,
    step: Step,
    *,
    anchor: datetime,
    candidate_key: str,
    candidate_timezone: str | None,
    default_timezone: str,
    not_before: datetime | None = None,
) -> Due:
    """When `step` is due: `wait` after the anchor (enrolment, or the previous send), moved
    into the send window in the right zone, and not before `not_before` (an out-of-office
    pause); and its sticky A/B variant."""
    due, zone = due_time(
        campaign, step, anchor=anchor, candidate_timezone=candidate_timezone,
        default_timezone=default_timezone, not_before=not_before,
    )
    return Due(step=step, variant=variant_for(step, candidate_key), due_at=due, zone=zone)


def due_time(
    campaign: Campaign,
    step: Step,
    *,
    anchor: datetime,
    candidate_timezone: str | None,
    default_timezone: str,
    not_before: datetime | None = None,
) -> tuple[datetime, ZoneInfo]:
    """The due time of `schedule_step` (aware UTC) and the zone whose window placed it: the
    same for every candidate with the same zone, anchor and pause."""
    zone = zone_for(campaign.schedule, candidate_timezone, default_timezone)
    due = step_due(anchor, step.wait, campaign.schedule, zone)
    if not_before is not None and due < not_before:
        due = next_slot(not_before, campaign.schedule, zone)
    return due, zone


class Scheduler:
    """`schedule_step` for many candidates of one campaign: the due time computed once per
    group of candidates sharing everything it depends on (step, time zone as stored, anchor,
    pause), the variant per candidate. Results are those of `schedule_step`, call for call."""

    # Distinct groups kept; a forecast over a year of sends sees many anchors, a tick a few.
    MAX_GROUPS = 100_000

    def __init__(self, campaign: Campaign, default_timezone: str):
        self.campaign = campaign
        self.default_timezone = default_timezone
        self._due: dict[tuple, tuple[datetime, ZoneInfo]] = {}

    def due(
        self, step: Step, anchor: datetime, candidate_timezone: str | None, not_before: datetime | None = None
    ) -> tuple[datetime, ZoneInfo]:
        # Aware datetimes hash by instant, and due_time depends on the instant alone.
        key = (step.id, candidate_timezone, anchor, not_before)
        hit = self._due.get(key)
        if hit is None:
            if len(self._due) >= self.MAX_GROUPS:
                self._due.clear()
            hit = self._due[key] = due_time(
                self.campaign, step, anchor=anchor, candidate_timezone=candidate_timezone,
                default_timezone=self.default_timezone, not_before=not_before,
            )
        return hit

    def schedule(
        self, step: Step, *, anchor: datetime, candidate_key: str, candidate_timezone: str | None,
        not_before: datetime | None = None,
    ) -> Due:
        due, zone = self.due(step, anchor, candidate_timezone, not_before)
        return Due(step=step, variant=variant_for(step, candidate_key), due_at=due, zone=zone)


def variant_for(step: Step, candidate_key: str) -> str | None:
    """The A/B variant a candidate (keyed by normalised address) always gets for `step`."""
    if not step.variants:
        return None
    return pick_variant(candidate_key, step.id, [(v.id, v.weight) for v in step.variants])


def subject_and_template(step: Step, variant: str | None) -> tuple[str | None, str]:
    """The subject override and template a variant uses (its own, else the step's)."""
    for v in step.variants:
        if v.id == variant:
            return (v.subject or step.subject), (v.template or step.template)
    return step.subject, step.template


def candidate_context(candidate: Mapping[str, object]) -> dict[str, object]:
    """The template's `candidate`: built-in fields that are set, then custom attributes.

    Unset fields are left out on purpose: a template that needs one fails loudly (StrictUndefined)
    instead of sending "Hi ,"; `| default(...)` covers optional values.
    """
    out = {k: v for k, v in candidate.items() if v is not None and k not in _HIDDEN_FIELDS}
    attributes = candidate.get("attributes")
    if attributes:
        for key, value in attributes.items():
            out.setdefault(key, value)
    out["tags"] = list(candidate.get("tags") or [])
    return out


_HIDDEN_FIELDS = frozenset({"attributes", "tags", "id", "token_key"})
