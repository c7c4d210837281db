"""One step of one campaign for one candidate -> the render context, the envelope, the bytes.

Shared by the sender (`engine`), `nurture preview` and `nurture check`, so a preview is the
message the daemon would send and a check renders exactly what the daemon would render.
The candidate is the plain mapping `store.ledger.candidate_fields` returns (built-in fields,
`attributes`, `tags`, `token_key`); `sample_candidate` builds a synthetic one of that shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import NamedTuple
from zoneinfo import ZoneInfo

from .campaigns import Campaign, Step
from .config import Settings
from .messages import Envelope, build_message
from .rules import BUILTIN_FIELDS
from .samples import guaranteed_fields
from .sequencing import candidate_context, subject_and_template
from .templates import RenderedEmail, TemplateSet
from .unsubscribe import make_token, unsubscribe_links

# A synthetic candidate's unsubscribe key: any hex works; its links lead nowhere real.
SAMPLE_TOKEN_KEY = "00" * 16
# What `nurture preview` adds to a synthetic candidate so the sample reads naturally.
SAMPLE_NAMES = {"first_name": "Alex", "last_name": "Morgan"}


class PreparedEmail(NamedTuple):
    """A message ready to send: the rendered parts, the envelope and the RFC 5322 bytes."""

    to_addr: str
    rendered: RenderedEmail
    envelope: Envelope
    message: bytes


def sender_of(campaign: Campaign, settings: Settings) -> tuple[str, str, str | None]:
    """(display name, address, reply-to) of a campaign: its own sender, else nurture.toml's."""
    if campaign.sender is not None:
        s = campaign.sender
        return s.name, s.email, s.reply_to
    return settings.sender_name, settings.sender_email, settings.reply_to


class StepEmails:
    """The emails of one step (in one variant): what they all share is worked out once (the
    sender, the unsubscribe mailto, the subject and template, the context's constant parts);
    `prepare` builds one candidate's. The sender keeps one per step for a whole beat."""

    def __init__(
        self, templates: TemplateSet, settings: Settings, secret: str, campaign: Campaign,
        step: Step, variant: str | None,
    ):
        self.templates, self.secret = templates, secret
        self.name, self.from_addr, self.reply_to = sender_of(campaign, settings)
        self.base_url = settings.unsubscribe_base_url
        self.mailto_addr = settings.unsubscribe_mailto or self.reply_to or self.from_addr
        self.subject, self.template = subject_and_template(step, variant)
        # Read-only for templates (they see views), so every email's context can share them.
        self.shared = {
            "sender": {"name": self.name, "email": self.from_addr},
            "company": {"name": settings.company_name, "postal_address": settings.postal_address},
            "campaign": {"id": campaign.id, "name": campaign.name},
            "step": {"id": step.id, "number": step.number},
        }

    def prepare(
        self, candidate: Mapping[str, object], *, message_id: str, now: datetime, zone: ZoneInfo,
        boundary: str | None = None,
    ) -> PreparedEmail:
        """Render the step for `candidate` and build the message.

        Raises TemplateError for a template that cannot render, ValueError for an address, id
        or URL the message cannot carry.
        """
        token = make_token(self.secret, candidate["token_key"])  # type: ignore[arg-type]
        https, mailto = unsubscribe_links(self.base_url, self.mailto_addr, token)
        context = {
            "candidate": candidate_context(candidate),
            **self.shared,
            "unsubscribe_url": https,
            "today": now.astimezone(zone).date(),
        }
        rendered = self.templates.render(self.template, context, subject=self.subject)
        to_name = candidate.get("full_name")
        if not to_name:
            first, last = candidate.get("first_name"), candidate.get("last_name")
            to_name = f"{first} {last}" if first and last else first or last or ""
        envelope = Envelope(
            self.name, self.from_addr, str(to_name), str(candidate["email"]), self.reply_to,
            message_id, now, https, mailto,
        )
        return PreparedEmail(envelope.to_addr, rendered, envelope, build_message(envelope, rendered, boundary))


def prepare_email(
    templates: TemplateSet,
    settings: Settings,
    secret: str,
    campaign: Campaign,
    step: Step,
    variant: str | None,
    candidate: Mapping[str, object],
    *,
    message_id: str,
    now: datetime,
    zone: ZoneInfo,
    boundary: str | None = None,
) -> PreparedEmail:
    """Render `step` (in `variant`) for `candidate` and build the message (`StepEmails` for
    one email). Raises what `StepEmails.prepare` raises."""
    return StepEmails(templates, settings, secret, campaign, step, variant).prepare(
        candidate, message_id=message_id, now=now, zone=zone, boundary=boundary
    )


# The synthetic email a step's messages are packed against: the same every time it is built
# (a fixed candidate, moment, Message-ID and MIME boundary), so one stored copy serves all.
_SAMPLE_MOMENT = datetime(2000, 1, 3, 10, 0, tzinfo=UTC)
_SAMPLE_MESSAGE_ID = "dictionary@nurture-mail.invalid"
_SAMPLE_BOUNDARY = "=_" + "0" * 32


# Who the dictionary's email is to: audience rules can name a real person (`email: {in: [...]}`,
# `last_name: {eq: ...}`), and the dictionary outlives any `forget`. So the sample never
# carries an address or a name from the rules, whatever they say.
_ANONYMOUS = {**SAMPLE_NAMES, "email": "someone@example.invalid",
              "full_name": " ".join(SAMPLE_NAMES.values())}


def _anonymous(candidate: dict[str, object]) -> dict[str, object]:
    def scrub(value: object) -> object:
        if isinstance(value, str) and "@" in value:
            return _ANONYMOUS["email"]
        if isinstance(value, list | tuple):
            return [scrub(item) for item in value]
        return value

    out = {key: scrub(value) for key, value in candidate.items() if key != "attributes"}
    out["attributes"] = {key: scrub(value) for key, value in candidate["attributes"].items()}  # type: ignore[union-attr]
    out.update(_ANONYMOUS)
    return out


def dictionary_sample(
    templates: TemplateSet, settings: Settings, secret: str, campaign: Campaign, step: Step,
    variant: str | None,
) -> bytes:
    """`step`'s email for a synthetic candidate (`sample_candidate`): what the step's real
    emails are packed against. Raises what `prepare_email` raises."""
    candidate = _anonymous(sample_candidate(campaign, step, now=_SAMPLE_MOMENT, names=True))
    return prepare_email(
        templates, settings, secret, campaign, step, variant, candidate,
        message_id=_SAMPLE_MESSAGE_ID, now=_SAMPLE_MOMENT, zone=ZoneInfo("UTC"),
        boundary=_SAMPLE_BOUNDARY,
    ).message


def sample_candidate(
    campaign: Campaign,
    step: Step | None = None,
    *,
    now: datetime | None = None,
    names: bool = False,
) -> dict[str, object]:
    """A synthetic audience member with exactly the fields the audience (and `step.only_if`)
    guarantees, shaped like `ledger.candidate_fields`; `names` adds plausible names."""
    fields = guaranteed_fields(campaign, step, now=now)
    if names:
        for key, value in SAMPLE_NAMES.items():
            fields.setdefault(key, value)
        if "full_name" not in fields:
            fields["full_name"] = f"{fields['first_name']} {fields.get('last_name', '')}".strip()
    tags = fields.pop("tags", [])
    candidate: dict[str, object] = {
        "id": 0,
        "token_key": SAMPLE_TOKEN_KEY,
        "tags": list(tags) if isinstance(tags, list | tuple) else [],
        "attributes": {},
    }
    for key, value in fields.items():
        if key in BUILTIN_FIELDS:
            candidate[key] = value
        else:
            candidate["attributes"][key] = value  # type: ignore[index]
    return candidate
