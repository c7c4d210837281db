"""Campaign files: ``campaigns/*.yaml`` -> frozen, typed Campaign objects, or file:line errors.

The keys are exactly those of PRODUCT.md "Campaign YAML". Loading reports every problem it
can find in a file (unknown keys with a suggestion, wrong types, bad durations, windows,
zones, operators, duplicate ids, missing templates), each as ``file:line: message``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path
from types import MappingProxyType

import yaml

from nurture_mail.campaign_values import (
    SLUG,
    VARIANT_ID,
    parse_days,
    parse_hours,
    parse_max_per_day,
    parse_skip_dates,
    parse_timezone,
    parse_weight,
    slug_message,
    slugify,
)
from nurture_mail.campaign_yaml import NodeReader, compose, describe, line, peek
from nurture_mail.durations import parse_duration
from nurture_mail.errors import CampaignError
from nurture_mail.rules import (
    Audience,
    Condition,
    check_field,
    check_operator,
    normalise_operand,
    suggest,
)
from nurture_mail.samples import guaranteed_fields
from nurture_mail.schedule import SchedulePolicy

__all__ = [
    "Audience",
    "Campaign",
    "Condition",
    "Sender",
    "Step",
    "Variant",
    "guaranteed_fields",
    "load_campaign",
    "load_campaigns",
]

STATUSES = ("active", "paused", "draft")
EXIT_REASONS = ("replied", "unsubscribed", "bounced", "hired")

_TOP_KEYS = ("id", "name", "status", "sender", "audience", "schedule", "exit_when", "steps")
_SENDER_KEYS = ("from", "reply_to")
_AUDIENCE_KEYS = ("status", "tags", "where")
_TAG_KEYS = ("any", "all", "none")
_SCHEDULE_KEYS = ("timezone", "days", "hours", "skip_dates", "max_per_day")
_STEP_KEYS = ("id", "wait", "template", "subject", "variants", "only_if")
_VARIANT_KEYS = ("id", "weight", "subject", "template")


@dataclass(frozen=True)
class Sender:
    name: str
    email: str
    reply_to: str | None = None


@dataclass(frozen=True)
class Variant:
    """One arm of an A/B split; None subject/template = the step's own."""

    id: str
    weight: int = 1
    subject: str | None = None
    template: str | None = None


@dataclass(frozen=True)
class Step:
    id: str
    number: int  # 1-based position in the file
    wait: timedelta
    template: str
    subject: str | None = None
    variants: tuple[Variant, ...] = ()
    only_if: tuple[Condition, ...] = ()
    line: int = 0


@dataclass(frozen=True)
class Campaign:
    id: str
    name: str
    status: str
    sender: Sender | None
    audience: Audience
    schedule: SchedulePolicy
    exit_when: frozenset[str]
    steps: tuple[Step, ...]
    path: Path
    # Dotted key path -> line ("id", "schedule.hours", "steps.check-in.template").
    line_of: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    def step(self, step_id: str) -> Step | None:
        return next((s for s in self.steps if s.id == step_id), None)


def load_campaign(path: Path, *, template_exists: Callable[[str], bool] | None = None) -> Campaign:
    """Load one campaign file; raises the first CampaignError (by line) if it is invalid."""
    campaign, errors = _load(Path(path), template_exists)
    if errors:
        raise errors[0]
    assert campaign is not None
    return campaign


def load_campaigns(
    directory: Path, *, template_exists: Callable[[str], bool] | None = None
) -> tuple[list[Campaign], list[CampaignError]]:
    """Every ``*.yaml``/``*.yml`` file of a directory: the valid campaigns and all errors."""
    directory = Path(directory)
    if not directory.is_dir():
        return [], [CampaignError(str(directory), None, "no such campaigns directory")]
    campaigns: list[Campaign] = []
    errors: list[CampaignError] = []
    owner: dict[str, Campaign] = {}
    files = sorted(
        p
        for p in directory.iterdir()
        if p.suffix in (".yaml", ".yml") and not p.name.startswith(".") and p.is_file()
    )
    for path in files:
        campaign, file_errors = _load(path, template_exists)
        errors.extend(file_errors)
        if campaign is None:
            continue
        if campaign.id in owner:
            errors.append(
                CampaignError(
                    str(path),
                    campaign.line_of.get("id", 1),
                    f"duplicate campaign id {campaign.id!r} (already used by {owner[campaign.id].path})",
                )
            )
            continue
        owner[campaign.id] = campaign
        campaigns.append(campaign)
    return campaigns, errors


def _load(
    path: Path, template_exists: Callable[[str], bool] | None
) -> tuple[Campaign | None, list[CampaignError]]:
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        return None, [CampaignError(file, None, "cannot read: not UTF-8 text")]
    except OSError as exc:
        return None, [CampaignError(file, None, f"cannot read: {exc.strerror or exc}")]
    root, reader, syntax_error = compose(text, file)
    if syntax_error is not None:
        return None, [syntax_error]
    assert reader is not None
    campaign = _CampaignParser(reader, path, template_exists).parse(root)
    errors = sorted(reader.errors, key=lambda e: e.line or 0)
    return (None if errors else campaign), errors


class _CampaignParser:
    """One file's parse: each section is read independently so all errors are found."""

    def __init__(
        self, reader: NodeReader, path: Path, template_exists: Callable[[str], bool] | None
    ):
        self.r = reader
        self.path = path
        self.template_exists = template_exists

    def parse(self, root: yaml.Node | None) -> Campaign | None:
        r = self.r
        if root is None:
            r.fail(1, "empty campaign file: expected keys such as name, audience and steps")
            return None
        keys = r.mapping(root, "campaign", _TOP_KEYS, "")
        if keys is None:
            return None
        campaign_id = self._id(keys.get("id"))
        name = r.text(keys["name"][1], "name") if "name" in keys else campaign_id
        status = self._status(keys["status"][1]) if "status" in keys else "active"
        sender = self._sender(keys["sender"][1]) if "sender" in keys else None
        audience = self._audience(keys["audience"][1]) if "audience" in keys else Audience()
        schedule = self._schedule(keys["schedule"][1]) if "schedule" in keys else SchedulePolicy()
        exit_when = (
            self._exit_when(keys["exit_when"][1])
            if "exit_when" in keys
            else frozenset(EXIT_REASONS)
        )
        steps = self._steps(keys.get("steps"))
        if r.errors:
            return None
        return Campaign(
            id=campaign_id or "",
            name=name or "",
            status=status or "active",
            sender=sender,
            audience=audience or Audience(),
            schedule=schedule or SchedulePolicy(),
            exit_when=exit_when if exit_when is not None else frozenset(EXIT_REASONS),
            steps=steps or (),
            path=self.path,
            line_of=MappingProxyType(dict(r.lines)),
        )

    # --- top-level values -------------------------------------------------------------------

    def _id(self, entry: tuple[yaml.Node, yaml.Node] | None) -> str | None:
        if entry is None:
            stem = self.path.stem
            if not SLUG.fullmatch(stem):
                self.r.fail(
                    1,
                    f"campaign id {stem!r} (the file name) must be a slug (lowercase letters, "
                    f"digits, '-' and '_'): set 'id: {slugify(stem)}' or rename the file",
                )
                return None
            return stem
        value = self.r.text(entry[1], "id")
        if value is not None and not SLUG.fullmatch(value):
            self.r.fail(entry[1], slug_message("campaign id", value))
            return None
        return value

    def _status(self, node: yaml.Node) -> str | None:
        value = self.r.value(node)
        if value not in STATUSES:
            hint = suggest(value, STATUSES) if isinstance(value, str) else ""
            self.r.fail(
                node, f"'status' must be active, paused or draft, got {describe(value)}{hint}"
            )
            return None
        return value  # type: ignore[return-value]

    def _sender(self, node: yaml.Node) -> Sender | None:
        keys = self.r.mapping(node, "'sender'", _SENDER_KEYS, "sender.")
        if keys is None:
            return None
        if "from" not in keys:
            self.r.fail(
                node, "'sender' needs 'from', e.g. from: \"Dana Reyes <dana@talent.example>\""
            )
            return None
        name, email = self._address(keys["from"][1], "from")
        reply_to = None
        if "reply_to" in keys:
            reply_to = self.r.text(keys["reply_to"][1], "reply_to")
            if reply_to is not None:
                self._address(keys["reply_to"][1], "reply_to")
        if email is None:
            return None
        return Sender(name=name or "", email=email, reply_to=reply_to)

    def _address(self, node: yaml.Node, key: str) -> tuple[str | None, str | None]:
        text = self.r.text(node, key)
        if text is None:
            return None, None
        name, email = parseaddr(text)
        if "@" not in email or " " in email:
            self.r.fail(
                node,
                f'{key!r} must be an address such as "Dana Reyes <dana@talent.example>", got {text!r}',
            )
            return None, None
        return name, email

    def _exit_when(self, node: yaml.Node) -> frozenset[str] | None:
        values = self.r.texts(node, "exit_when") if not _is_empty_list(node) else ()
        if values is None:
            return None
        item_nodes = node.value if isinstance(node, yaml.SequenceNode) else [node]
        bad = [(v, n) for v, n in zip(values, item_nodes, strict=True) if v not in EXIT_REASONS]
        for value, item_node in bad:
            hint = suggest(value, EXIT_REASONS) or f" (expected {', '.join(EXIT_REASONS)})"
            self.r.fail(item_node, f"unknown exit_when value {value!r}{hint}")
        return None if bad else frozenset(values)

    # --- audience ---------------------------------------------------------------------------

    def _audience(self, node: yaml.Node) -> Audience | None:
        r = self.r
        keys = r.mapping(node, "'audience'", _AUDIENCE_KEYS, "audience.")
        if keys is None:
            return None
        statuses = None
        if "status" in keys:
            status_node = keys["status"][1]
            statuses = r.texts(status_node, "status")
            if statuses is not None and any(s.lower() == "hired" for s in statuses):
                r.fail(
                    status_node, "'hired' candidates are never enrolled: remove it from 'status'"
                )
        tags: dict[str, tuple[str, ...]] = {}
        if "tags" in keys:
            tag_keys = r.mapping(keys["tags"][1], "'audience.tags'", _TAG_KEYS, "audience.tags.")
            for kind, (_, value_node) in (tag_keys or {}).items():
                tags[kind] = r.texts(value_node, kind) or ()
        where = (
            self._conditions(keys["where"][1], "'where'", "audience.where.")
            if "where" in keys
            else ()
        )
        return Audience(
            statuses=statuses,
            tags_any=tags.get("any", ()),
            tags_all=tags.get("all", ()),
            tags_none=tags.get("none", ()),
            where=where or (),
        )

    def _conditions(self, node: yaml.Node, what: str, path: str) -> tuple[Condition, ...] | None:
        r = self.r
        fields = r.mapping(node, what, None, path)
        if fields is None:
            return None
        conditions: list[Condition] = []
        for name, (key_node, ops_node) in fields.items():
            try:
                check_field(name)
            except ValueError as exc:
                r.fail(key_node, str(exc))
                continue
            if not isinstance(ops_node, yaml.MappingNode) or not ops_node.value:
                example = (
                    describe(r.value(ops_node)) if isinstance(ops_node, yaml.ScalarNode) else "..."
                )
                r.fail(
                    ops_node,
                    f"condition on {name!r} must map operators to values, e.g. {{eq: {example}}}",
                )
                continue
            for op, (op_node, operand_node) in (
                r.mapping(ops_node, f"{name!r}", None) or {}
            ).items():
                try:
                    check_operator(name, op)
                except ValueError as exc:
                    r.fail(op_node, str(exc))
                    continue
                operand = r.checked(
                    operand_node, lambda v, n=name, o=op: normalise_operand(n, o, v)
                )
                if operand is not None:
                    conditions.append(Condition(name, op, operand, line(op_node)))
        return tuple(conditions)

    # --- schedule ---------------------------------------------------------------------------

    def _schedule(self, node: yaml.Node) -> SchedulePolicy | None:
        r = self.r
        keys = r.mapping(node, "'schedule'", _SCHEDULE_KEYS, "schedule.")
        if keys is None:
            return None
        before = len(r.errors)
        policy: dict[str, object] = {}
        parsers = {
            "timezone": parse_timezone,
            "days": parse_days,
            "hours": parse_hours,
            "skip_dates": parse_skip_dates,
            "max_per_day": parse_max_per_day,
        }
        for key, (_, value_node) in keys.items():
            policy[key] = r.checked(value_node, parsers[key])
        if len(r.errors) > before:
            return None
        return SchedulePolicy(**policy)  # type: ignore[arg-type]

    # --- steps ------------------------------------------------------------------------------

    def _steps(self, entry: tuple[yaml.Node, yaml.Node] | None) -> tuple[Step, ...] | None:
        r = self.r
        if entry is None:
            r.fail(1, "no steps: a campaign needs at least one step under 'steps:'")
            return None
        key_node, node = entry
        items = r.items(node, "steps") if not _is_null(node) else []
        if items is None:
            return None
        if not items:
            r.fail(key_node, "'steps' is empty: a campaign needs at least one step")
            return None
        steps: list[Step] = []
        first_line: dict[str, int] = {}
        for number, item in enumerate(items, start=1):
            step = self._step(item, number)
            if step is None:
                continue
            id_line = line(peek(item, "id"))  # type: ignore[arg-type]
            if step.id in first_line:
                r.fail(
                    id_line,
                    f"duplicate step id {step.id!r} (first defined on line {first_line[step.id]})",
                )
                continue
            first_line[step.id] = id_line
            steps.append(step)
        return tuple(steps)

    def _step(self, node: yaml.Node, number: int) -> Step | None:
        r = self.r
        raw_id = r.value(peek(node, "id")) if peek(node, "id") is not None else None
        if isinstance(raw_id, list | dict):
            raw_id = None  # only ever an error; and an alias chain could be huge to print
        label = f"step {raw_id!r}" if isinstance(raw_id, str) and raw_id else f"step {number}"
        keys = r.mapping(node, label, _STEP_KEYS, f"steps.{raw_id or number}.")
        if keys is None:
            return None
        before = len(r.errors)
        for required in ("id", "wait", "template"):
            if required not in keys:
                r.fail(node, f"{label} has no {required!r}")
        step_id = None
        if "id" in keys:
            step_id = r.text(keys["id"][1], "id")
            if step_id is not None and not SLUG.fullmatch(step_id):
                r.fail(keys["id"][1], slug_message("step id", step_id))
        wait = r.checked(keys["wait"][1], parse_duration) if "wait" in keys else None
        template = self._template(keys["template"][1]) if "template" in keys else None
        subject = r.text(keys["subject"][1], "subject") if "subject" in keys else None
        path = f"steps.{raw_id or number}."
        variants = self._variants(keys["variants"][1], label, path) if "variants" in keys else ()
        only_if = ()
        if "only_if" in keys:
            only_if = self._conditions(keys["only_if"][1], "'only_if'", path + "only_if.") or ()
        if len(r.errors) > before:
            return None
        return Step(
            id=step_id,  # type: ignore[arg-type]
            number=number,
            wait=wait,  # type: ignore[arg-type]
            template=template,  # type: ignore[arg-type]
            subject=subject,
            variants=variants or (),
            only_if=only_if,
            line=line(node),
        )

    def _template(self, node: yaml.Node) -> str | None:
        name = self.r.text(node, "template")
        if name is not None and self.template_exists is not None and not self.template_exists(name):
            self.r.fail(node, f"template {name!r} not found")
            return None
        return name

    def _variants(
        self, node: yaml.Node, step_label: str, step_path: str
    ) -> tuple[Variant, ...] | None:
        r = self.r
        items = r.items(node, "variants")
        if items is None:
            return None
        before = len(r.errors)
        variants: list[Variant] = []
        first_line: dict[str, int] = {}
        for number, item in enumerate(items, start=1):
            raw_id = r.value(peek(item, "id")) if peek(item, "id") is not None else None
            if isinstance(raw_id, list | dict):
                raw_id = None  # as in _step
            label = f"variant {raw_id!r}" if isinstance(raw_id, str) else f"variant {number}"
            path = f"{step_path}variants.{raw_id or number}."
            keys = r.mapping(item, f"{label} of {step_label}", _VARIANT_KEYS, path)
            if keys is None:
                continue
            if "id" not in keys:
                r.fail(item, f"{label} of {step_label} has no 'id'")
                continue
            id_node = keys["id"][1]
            variant_id = r.value(id_node)
            if not isinstance(variant_id, str) or not VARIANT_ID.fullmatch(variant_id):
                r.fail(
                    id_node,
                    f"variant id {describe(variant_id)} must be letters, digits, '-' or '_'",
                )
                continue
            if variant_id in first_line:
                r.fail(
                    id_node,
                    f"duplicate variant id {variant_id!r} in {step_label} "
                    f"(first defined on line {first_line[variant_id]})",
                )
                continue
            first_line[variant_id] = line(id_node)
            weight = r.checked(keys["weight"][1], parse_weight) if "weight" in keys else 1
            subject = r.text(keys["subject"][1], "subject") if "subject" in keys else None
            template = self._template(keys["template"][1]) if "template" in keys else None
            variants.append(Variant(variant_id, weight, subject, template))  # type: ignore[arg-type]
        return None if len(r.errors) > before else tuple(variants)


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _is_empty_list(node: yaml.Node) -> bool:
    return isinstance(node, yaml.SequenceNode) and not node.value
