"""`nurture preview`: one step of a campaign as one candidate would get it.

The message is built by `rendering.prepare_email`, the sender's own code, for a real
candidate from the database or a synthetic one with what the audience guarantees plus names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.parser import BytesParser

from .campaigns import Campaign, Step
from .config import Settings
from .errors import NotFound
from .messages import make_message_id
from .rendering import PreparedEmail, prepare_email, sample_candidate, sender_of
from .rules import evaluate, evaluate_audience
from .schedule import zone_for
from .sequencing import variant_for
from .templates import TemplateSet

# Headers a reader cares about; the MIME plumbing is left out.
_HIDDEN_HEADERS = frozenset({"mime-version", "content-type", "content-transfer-encoding"})


@dataclass(frozen=True)
class Preview:
    campaign: Campaign
    step: Step
    variant: str | None
    candidate: Mapping[str, object]
    sample: bool  # a synthetic candidate, not one from the database
    email: PreparedEmail
    notes: tuple[str, ...] = ()

    def headers(self) -> list[tuple[str, str]]:
        """(name, decoded value) of the message's headers, in order."""
        message = BytesParser(policy=policy.default).parsebytes(
            self.email.message, headersonly=True
        )
        return [
            (name, str(value).strip())
            for name, value in message.items()
            if name.lower() not in _HIDDEN_HEADERS
        ]

    def html_filename(self) -> str:
        """`preview-<campaign>-<step>[-<variant>].html`: ids are slugs, safe as file names."""
        suffix = f"-{self.variant}" if self.variant else ""
        return f"preview-{self.campaign.id}-{self.step.id}{suffix}.html"


def choose_step(campaign: Campaign, step_id: str | None) -> Step:
    if step_id is None:
        return campaign.steps[0]
    step = campaign.step(step_id)
    if step is None:
        known = ", ".join(s.id for s in campaign.steps)
        raise NotFound(f"campaign {campaign.id!r} has no step {step_id!r} (steps: {known})")
    return step


def choose_variant(step: Step, candidate_key: str, forced: str | None) -> str | None:
    """The variant the candidate would get, or the forced one (which must exist)."""
    if forced is None:
        return variant_for(step, candidate_key)
    known = [v.id for v in step.variants]
    if forced not in known:
        if not known:
            raise NotFound(f"step {step.id!r} has no variants")
        raise NotFound(f"step {step.id!r} has no variant {forced!r} (variants: {', '.join(known)})")
    return forced


def build_preview(
    templates: TemplateSet,
    settings: Settings,
    secret: str,
    campaign: Campaign,
    *,
    step_id: str | None,
    variant_id: str | None,
    candidate: Mapping[str, object] | None,
    now: datetime,
    suppressed: str | None = None,
) -> Preview:
    """Render the step; `candidate` None means a sample audience member.

    Raises NotFound for an unknown step or variant, TemplateError when the step cannot render
    for this candidate (the daemon would fail that send the same way).
    """
    step = choose_step(campaign, step_id)
    sample = candidate is None
    if candidate is None:
        candidate = sample_candidate(campaign, step, now=now, names=True)
    variant = choose_variant(step, str(candidate["email"]), variant_id)
    notes = [] if sample else _notes(campaign, step, candidate, now, suppressed)
    if campaign.status != "active":
        notes.append(f"campaign {campaign.id} is {campaign.status}: it sends nothing until active")
    zone = zone_for(campaign.schedule, candidate.get("timezone"), settings.default_timezone)  # type: ignore[arg-type]
    domain = sender_of(campaign, settings)[1].rsplit("@", 1)[-1]
    email = prepare_email(
        templates,
        settings,
        secret,
        campaign,
        step,
        variant,
        candidate,
        message_id=make_message_id(domain),
        now=now,
        zone=zone,
    )
    return Preview(campaign, step, variant, candidate, sample, email, tuple(notes))


def _notes(
    campaign: Campaign,
    step: Step,
    candidate: Mapping[str, object],
    now: datetime,
    suppressed: str | None,
) -> list[str]:
    """Why this candidate would not actually get this email."""
    email = candidate["email"]
    notes = []
    if suppressed:
        notes.append(f"{email} is suppressed ({suppressed}): nothing is ever sent to this address")
    elif str(candidate.get("status") or "").lower() == "hired":
        notes.append(f"{email} is hired: every campaign has ended for them")
    elif not evaluate_audience(campaign.audience, candidate, now):
        notes.append(f"{email} is not in the audience of {campaign.id} now")
    if step.only_if and not evaluate(step.only_if, candidate, now):
        rule = ", ".join(f"{c.field} {c.op} {c.value!r}" for c in step.only_if)
        notes.append(f"step {step.id} would be skipped for {email} (only_if: {rule})")
    return notes
