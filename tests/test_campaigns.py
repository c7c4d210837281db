"""Campaign YAML loading: the PRODUCT.md example, and one exact `file:line: message` per error."""

from __future__ import annotations

import re
import textwrap
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest

from nurture_mail.campaigns import (
    Audience,
    Campaign,
    Condition,
    Sender,
    Step,
    Variant,
    guaranteed_fields,
    load_campaign,
    load_campaigns,
)
from nurture_mail.errors import CampaignError
from nurture_mail.rules import evaluate_audience
from nurture_mail.schedule import SchedulePolicy

PRODUCT = Path(__file__).resolve().parents[1].parent / "shared" / "PRODUCT.md"
STEPS = """\
steps:
  - id: thank-you
    wait: 2d
    template: thank-you
"""


@pytest.fixture
def campaigns_dir(tmp_path, monkeypatch):
    """An empty `campaigns/` in the current directory, so paths read `campaigns/x.yaml`."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "campaigns").mkdir()
    return Path("campaigns")


def write(directory: Path, body: str, name: str = "x.yaml") -> Path:
    path = directory / name
    path.write_text(body, encoding="utf-8")
    return path


def errors(directory: Path, body: str, **kwargs) -> list[str]:
    write(directory, textwrap.dedent(body))
    campaigns, found = load_campaigns(directory, **kwargs)
    assert not campaigns or not found
    return [str(e) for e in found]


def example_yaml() -> str:
    if PRODUCT.exists():
        match = re.search(r"## Campaign YAML\n\n```yaml\n(.*?)```", PRODUCT.read_text(), re.S)
        assert match, "PRODUCT.md lost its example campaign"
        return match.group(1)
    return EXAMPLE


def test_product_example_loads_to_the_expected_objects(campaigns_dir):
    path = write(campaigns_dir, example_yaml(), "silver-medalists.yaml")

    campaign = load_campaign(path, template_exists=lambda name: True)

    assert campaign == Campaign(
        id="silver-medalists",
        name="Silver medalists - keep warm",
        status="active",
        sender=Sender("Dana Reyes", "dana@talent.example", "dana@talent.example"),
        audience=Audience(
            statuses=("rejected", "withdrawn"),
            tags_any=("silver-medalist",),
            tags_all=(),
            tags_none=("do-not-contact",),
            where=(
                Condition("stage_reached", "in", ("onsite", "final"), 13),
                Condition("role", "contains", "engineer", 14),
                Condition("decided_at", "before", "14d", 15),
                Condition("skills", "contains", "python", 16),
                Condition("country", "eq", "DE", 17),
            ),
        ),
        schedule=SchedulePolicy(
            timezone="candidate",
            days=frozenset({0, 1, 2, 3, 4}),
            hours=(time(9), time(17)),
            skip_dates=frozenset({date(2026, 12, 24), date(2026, 12, 25)}),
            max_per_day=200,
        ),
        exit_when=frozenset({"replied", "unsubscribed", "bounced", "hired"}),
        steps=(
            Step("thank-you", 1, timedelta(days=2), "thank-you", line=29),
            Step(
                "check-in",
                2,
                timedelta(days=90),
                "check-in",
                subject="Catching up, {{ candidate.first_name }}?",
                variants=(Variant("a", 1), Variant("b", 1, "New roles at {{ company.name }}")),
                line=32,
            ),
            Step(
                "six-months",
                3,
                timedelta(days=90),
                "six-months",
                only_if=(Condition("open_to_work", "ne", False, 42),),
                line=39,
            ),
        ),
        path=path,
    )
    assert campaign.line_of["steps.check-in.template"] == 34
    assert campaign.line_of["steps.check-in.variants.b.subject"] == 38
    assert campaign.step("six-months").number == 3
    assert hash(campaign)  # frozen all the way down


def test_minimal_campaign_gets_the_documented_defaults(campaigns_dir):
    campaign = load_campaign(write(campaigns_dir, STEPS, "welcome-back.yaml"))

    assert (campaign.id, campaign.name, campaign.status) == (
        "welcome-back",
        "welcome-back",
        "active",
    )
    assert campaign.sender is None
    assert campaign.audience == Audience()
    assert campaign.schedule == SchedulePolicy()
    assert campaign.exit_when == {"replied", "unsubscribed", "bounced", "hired"}


def test_load_campaign_raises_the_first_error(campaigns_dir):
    path = write(campaigns_dir, "status: live\nschedule: {max_per_day: 0}\n" + STEPS)

    with pytest.raises(CampaignError) as caught:
        load_campaign(path)

    assert str(caught.value) == (
        "campaigns/x.yaml:1: 'status' must be active, paused or draft, got 'live'"
    )
    assert (caught.value.file, caught.value.line) == ("campaigns/x.yaml", 1)


def test_every_error_of_a_file_is_reported_in_line_order(campaigns_dir):
    body = """\
    status: actve
    schedule:
      days: [mon, funday]
      max_per_day: lots
    steps:
      - id: thank-you
        wiat: 2d
        template: thank-you
    """
    assert errors(campaigns_dir, body) == [
        "campaigns/x.yaml:1: 'status' must be active, paused or draft, got 'actve' (did you mean 'active'?)",
        "campaigns/x.yaml:3: unknown day 'funday' in 'days' (did you mean 'sunday'?)",
        "campaigns/x.yaml:4: 'max_per_day' must be a positive integer, got 'lots'",
        "campaigns/x.yaml:6: step 'thank-you' has no 'wait'",
        "campaigns/x.yaml:7: unknown key 'wiat' in step 'thank-you' (did you mean 'wait'?)",
    ]


# One case per validation rule: (YAML, the exact errors).
CASES = {
    "yaml syntax": (
        "name: 'unfinished\n" + STEPS,
        [
            "campaigns/x.yaml:1: invalid YAML: found unexpected end of stream (while scanning a quoted scalar)"
        ],
    ),
    "yaml structure": (
        "name: x\n  status: active\n" + STEPS,
        None,  # the wording differs between libyaml and pure-Python PyYAML: checked below
    ),
    "unknown top-level key": (
        "name: x\nstpes: []\n",
        [
            "campaigns/x.yaml:1: no steps: a campaign needs at least one step under 'steps:'",
            "campaigns/x.yaml:2: unknown key 'stpes' in campaign (did you mean 'steps'?)",
        ],
    ),
    "unknown key without a close match": (
        "colour: red\n" + STEPS,
        [
            "campaigns/x.yaml:1: unknown key 'colour' in campaign (expected one of: "
            "id, name, status, sender, audience, schedule, exit_when, steps)"
        ],
    ),
    "unknown step key": (
        "steps:\n  - id: thank-you\n    wait: 2d\n    wiat: 3d\n    template: thank-you\n",
        ["campaigns/x.yaml:4: unknown key 'wiat' in step 'thank-you' (did you mean 'wait'?)"],
    ),
    "unknown schedule key": (
        "schedule:\n  max_per_dya: 5\n" + STEPS,
        [
            "campaigns/x.yaml:2: unknown key 'max_per_dya' in 'schedule' (did you mean 'max_per_day'?)"
        ],
    ),
    "duplicate key": (
        "name: a\nname: b\n" + STEPS,
        ["campaigns/x.yaml:2: duplicate key 'name' (first on line 1)"],
    ),
    "max_per_day not a number": (
        "schedule:\n  max_per_day: lots\n" + STEPS,
        ["campaigns/x.yaml:2: 'max_per_day' must be a positive integer, got 'lots'"],
    ),
    "max_per_day zero": (
        "schedule:\n  max_per_day: 0\n" + STEPS,
        ["campaigns/x.yaml:2: 'max_per_day' must be a positive integer, got 0"],
    ),
    "name of the wrong type": (
        "name: [a, b]\n" + STEPS,
        ["campaigns/x.yaml:1: 'name' must be text, got a list"],
    ),
    "bad duration": (
        "steps:\n  - id: thank-you\n    wait: 2x\n    template: thank-you\n",
        [
            "campaigns/x.yaml:3: bad duration '2x': expected a number and a unit, e.g. 2d, 12h, 30m, 3w"
        ],
    ),
    "duration without unit": (
        "steps:\n  - id: thank-you\n    wait: 5\n    template: thank-you\n",
        ["campaigns/x.yaml:3: a duration needs a unit (m, h, d or w): 5"],
    ),
    "unknown operator": (
        "audience:\n  where:\n    country: {equals: DE}\n" + STEPS,
        ["campaigns/x.yaml:3: unknown operator 'equals' for 'country' (did you mean 'eq'?)"],
    ),
    "misspelt operator": (
        "audience:\n  where:\n    years: {gtee: 3}\n" + STEPS,
        ["campaigns/x.yaml:3: unknown operator 'gtee' for 'years' (did you mean 'gte'?)"],
    ),
    "condition without operator": (
        "audience:\n  where:\n    country: DE\n" + STEPS,
        [
            "campaigns/x.yaml:3: condition on 'country' must map operators to values, e.g. {eq: 'DE'}"
        ],
    ),
    "in needs a list": (
        "audience:\n  where:\n    country: {in: DE}\n" + STEPS,
        ["campaigns/x.yaml:3: 'in' on 'country' needs a non-empty list, got 'DE'"],
    ),
    "eq needs one value": (
        "audience:\n  where:\n    country: {eq: [DE, AT]}\n" + STEPS,
        [
            "campaigns/x.yaml:3: 'eq' on 'country' needs a single value "
            "(text, number or true/false), got a list"
        ],
    ),
    "eq null": (
        "audience:\n  where:\n    country: {eq: null}\n" + STEPS,
        [
            "campaigns/x.yaml:3: 'eq' on 'country' needs a single value (text, number or "
            "true/false), got nothing (use 'exists: false' for a missing value)"
        ],
    ),
    "exists needs a boolean": (
        "audience:\n  where:\n    skills: {exists: yes}\n" + STEPS,
        ["campaigns/x.yaml:3: 'exists' on 'skills' must be true or false, got 'yes'"],
    ),
    "contains needs text": (
        "audience:\n  where:\n    skills: {contains: [python]}\n" + STEPS,
        ["campaigns/x.yaml:3: 'contains' on 'skills' needs a text value, got a list"],
    ),
    "gt needs a number or date": (
        "audience:\n  where:\n    years: {gt: true}\n" + STEPS,
        ["campaigns/x.yaml:3: 'gt' on 'years' needs a number or an ISO date, got True"],
    ),
    "gt with a number on a text column": (
        "audience:\n  where:\n    role: {gt: 3}\n" + STEPS,
        ["campaigns/x.yaml:3: 'role' is text: 'gt' needs a text value such as an ISO date"],
    ),
    "bad before operand": (
        "audience:\n  where:\n    decided_at: {before: 2x}\n" + STEPS,
        [
            "campaigns/x.yaml:3: bad duration or date '2x' for 'before' on 'decided_at': "
            "expected e.g. 30d or 2026-01-31"
        ],
    ),
    "date-time column with a text operator": (
        "audience:\n  where:\n    decided_at: {eq: 2026-01-01}\n" + STEPS,
        ["campaigns/x.yaml:3: 'decided_at' is a date-time: use before, after or exists, not 'eq'"],
    ),
    "bad attribute name": (
        "audience:\n  where:\n    '1st-choice': {eq: x}\n" + STEPS,
        [
            "campaigns/x.yaml:3: bad field name '1st-choice': use letters, digits and '_', "
            "not starting with a digit, at most 64 characters"
        ],
    ),
    "sql in an attribute name": (
        'audience:\n  where:\n    "x\'); DROP TABLE candidates; --": {eq: x}\n' + STEPS,
        [
            'campaigns/x.yaml:3: bad field name "x\'); DROP TABLE candidates; --": use letters, '
            "digits and '_', not starting with a digit, at most 64 characters"
        ],
    ),
    "tags as a field": (
        "steps:\n  - id: a\n    wait: 1d\n    template: a\n    only_if: {tags: {contains: vip}}\n",
        [
            "campaigns/x.yaml:5: 'tags' is not a field here: select tags with audience "
            "'tags: {any: [...]}'"
        ],
    ),
    "hired in the audience": (
        "audience:\n  status: [rejected, hired]\n" + STEPS,
        ["campaigns/x.yaml:2: 'hired' candidates are never enrolled: remove it from 'status'"],
    ),
    "tags as a list": (
        "audience:\n  tags: [a]\n" + STEPS,
        ["campaigns/x.yaml:2: 'audience.tags' must be a mapping, got a list"],
    ),
    "unknown tag key": (
        "audience:\n  tags: {anyof: [a]}\n" + STEPS,
        ["campaigns/x.yaml:2: unknown key 'anyof' in 'audience.tags' (did you mean 'any'?)"],
    ),
    "unknown timezone": (
        "schedule:\n  timezone: Europe/Berln\n" + STEPS,
        ["campaigns/x.yaml:2: unknown timezone 'Europe/Berln' (did you mean 'Europe/Berlin'?)"],
    ),
    "unknown day": (
        "schedule:\n  days: [mon, tues]\n" + STEPS,
        ["campaigns/x.yaml:2: unknown day 'tues' in 'days' (did you mean 'tue'?)"],
    ),
    "no days": (
        "schedule:\n  days: []\n" + STEPS,
        ["campaigns/x.yaml:2: 'days' must name at least one day"],
    ),
    "hours out of range": (
        'schedule:\n  hours: "25:00-26:00"\n' + STEPS,
        ["campaigns/x.yaml:2: bad hours '25:00-26:00': times must be between 00:00 and 24:00"],
    ),
    "empty window": (
        'schedule:\n  hours: "09:00-09:00"\n' + STEPS,
        ["campaigns/x.yaml:2: bad hours '09:00-09:00': the window is empty"],
    ),
    "hours in words": (
        "schedule:\n  hours: nine to five\n" + STEPS,
        [
            'campaigns/x.yaml:2: bad hours \'nine to five\': expected "HH:MM-HH:MM", e.g. "09:00-17:00"'
        ],
    ),
    "bad skip date": (
        "schedule:\n  skip_dates: [2026-12-24, 2026-13-01]\n" + STEPS,
        ["campaigns/x.yaml:2: bad date '2026-13-01' in 'skip_dates': expected YYYY-MM-DD"],
    ),
    "skip date in words": (
        "schedule:\n  skip_dates: [christmas]\n" + STEPS,
        ["campaigns/x.yaml:2: bad date 'christmas' in 'skip_dates': expected YYYY-MM-DD"],
    ),
    "unknown status": (
        "status: live\n" + STEPS,
        ["campaigns/x.yaml:1: 'status' must be active, paused or draft, got 'live'"],
    ),
    "unknown exit reason in a block list": (
        "exit_when:\n  - replied\n  - hird\n" + STEPS,
        ["campaigns/x.yaml:3: unknown exit_when value 'hird' (did you mean 'hired'?)"],
    ),
    "unknown exit reason": (
        "exit_when: [replyed, hired]\n" + STEPS,
        ["campaigns/x.yaml:1: unknown exit_when value 'replyed' (did you mean 'replied'?)"],
    ),
    "bad sender": (
        "sender:\n  from: dana\n" + STEPS,
        [
            "campaigns/x.yaml:2: 'from' must be an address such as "
            "\"Dana Reyes <dana@talent.example>\", got 'dana'"
        ],
    ),
    "sender without from": (
        "sender:\n  reply_to: dana@talent.example\n" + STEPS,
        [
            "campaigns/x.yaml:2: 'sender' needs 'from', e.g. from: "
            '"Dana Reyes <dana@talent.example>"'
        ],
    ),
    "duplicate step ids": (
        STEPS + "  - id: thank-you\n    wait: 1d\n    template: other\n",
        ["campaigns/x.yaml:5: duplicate step id 'thank-you' (first defined on line 2)"],
    ),
    "step id not a slug": (
        "steps:\n  - id: Thank You\n    wait: 2d\n    template: thank-you\n",
        [
            "campaigns/x.yaml:2: step id 'Thank You' must be a slug "
            "(lowercase letters, digits, '-' and '_'), e.g. 'thank-you'"
        ],
    ),
    "step without id": (
        "steps:\n  - wait: 2d\n    template: thank-you\n",
        ["campaigns/x.yaml:2: step 1 has no 'id'"],
    ),
    "empty steps": (
        "name: x\nsteps: []\n",
        ["campaigns/x.yaml:2: 'steps' is empty: a campaign needs at least one step"],
    ),
    "missing steps": (
        "name: x\n",
        ["campaigns/x.yaml:1: no steps: a campaign needs at least one step under 'steps:'"],
    ),
    "steps not a list": (
        "steps: {id: a}\n",
        ["campaigns/x.yaml:1: 'steps' must be a list, got a mapping"],
    ),
    "duplicate variant ids": (
        STEPS + "    variants:\n      - {id: a, weight: 1}\n      - {id: a, weight: 2}\n",
        [
            "campaigns/x.yaml:7: duplicate variant id 'a' in step 'thank-you' "
            "(first defined on line 6)"
        ],
    ),
    "variant weight": (
        STEPS + "    variants:\n      - {id: a, weight: 0}\n",
        ["campaigns/x.yaml:6: 'weight' must be a positive integer, got 0"],
    ),
    "variant weight not a number": (
        STEPS + "    variants:\n      - {id: a, weight: half}\n",
        ["campaigns/x.yaml:6: 'weight' must be a positive integer, got 'half'"],
    ),
    "unknown variant key": (
        STEPS + "    variants:\n      - {id: a, wieght: 2}\n",
        [
            "campaigns/x.yaml:6: unknown key 'wieght' in variant 'a' of step 'thank-you' "
            "(did you mean 'weight'?)"
        ],
    ),
    "campaign id not a slug": (
        "id: Silver Medalists\n" + STEPS,
        [
            "campaigns/x.yaml:1: campaign id 'Silver Medalists' must be a slug "
            "(lowercase letters, digits, '-' and '_'), e.g. 'silver-medalists'"
        ],
    ),
    "empty file": (
        "",
        ["campaigns/x.yaml:1: empty campaign file: expected keys such as name, audience and steps"],
    ),
    "not a mapping": (
        "- a\n- b\n",
        ["campaigns/x.yaml:1: campaign must be a mapping, got a list"],
    ),
}


@pytest.mark.parametrize("body, expected", CASES.values(), ids=CASES.keys())
def test_validation_error(campaigns_dir, body, expected):
    found = errors(campaigns_dir, body)
    if expected is None:
        assert len(found) == 1 and found[0].startswith("campaigns/x.yaml:2: invalid YAML: mapping")
    else:
        assert found == expected


def test_missing_templates_are_reported_for_steps_and_variants(campaigns_dir):
    body = STEPS + "    variants:\n      - {id: a}\n      - {id: b, template: thank-you-b}\n"
    known = {"thank-you", "thank-you-b"}

    assert errors(campaigns_dir, body, template_exists=known.__contains__) == []
    assert errors(campaigns_dir, body, template_exists={"other"}.__contains__) == [
        "campaigns/x.yaml:4: template 'thank-you' not found",
        "campaigns/x.yaml:7: template 'thank-you-b' not found",
    ]


def test_file_name_that_is_no_slug_needs_an_id(campaigns_dir):
    write(campaigns_dir, STEPS, "Silver Medalists.yaml")

    campaigns, found = load_campaigns(campaigns_dir)

    assert campaigns == []
    assert [str(e) for e in found] == [
        "campaigns/Silver Medalists.yaml:1: campaign id 'Silver Medalists' (the file name) must "
        "be a slug (lowercase letters, digits, '-' and '_'): set 'id: silver-medalists' or "
        "rename the file"
    ]


def test_duplicate_campaign_ids_across_files(campaigns_dir):
    write(campaigns_dir, STEPS, "alpha.yaml")
    write(campaigns_dir, "name: Beta\nid: alpha\n" + STEPS, "beta.yaml")
    write(campaigns_dir, "status: live\n" + STEPS, "gamma.yaml")

    campaigns, found = load_campaigns(campaigns_dir)

    assert [c.path for c in campaigns] == [campaigns_dir / "alpha.yaml"]
    assert [str(e) for e in found] == [
        "campaigns/beta.yaml:2: duplicate campaign id 'alpha' (already used by campaigns/alpha.yaml)",
        "campaigns/gamma.yaml:1: 'status' must be active, paused or draft, got 'live'",
    ]


def test_overnight_window_and_whole_day(campaigns_dir):
    overnight = load_campaign(write(campaigns_dir, 'schedule: {hours: "17:00-09:00"}\n' + STEPS))
    to_midnight = load_campaign(write(campaigns_dir, 'schedule: {hours: "22:00-24:00"}\n' + STEPS))
    whole_day = load_campaign(write(campaigns_dir, 'schedule: {hours: "00:00-24:00"}\n' + STEPS))

    assert overnight.schedule.hours == (time(17), time(9))
    assert to_midnight.schedule.hours == (time(22), time(0))
    assert whole_day.schedule.hours is None


def test_yaml_1_2_scalars_no_stays_text(campaigns_dir):
    body = """\
    audience:
      where:
        country: {eq: NO}
        remote: {in: [on, yes, off]}
        postcode: {eq: 01234}
        open_to_work: {eq: true}
        years: {gte: 3}
        score: {lt: 4.5}
    schedule:
      skip_dates: [2026-12-24, "2026-12-31"]
      days: [Mon, friday]
    """
    campaign = load_campaign(write(campaigns_dir, textwrap.dedent(body) + STEPS))

    values = {c.field: c.value for c in campaign.audience.where}
    assert values == {
        "country": "NO",
        "remote": ("on", "yes", "off"),
        "postcode": "01234",
        "open_to_work": True,
        "years": 3,
        "score": 4.5,
    }
    assert campaign.schedule.skip_dates == {date(2026, 12, 24), date(2026, 12, 31)}
    assert campaign.schedule.days == {0, 4}


def test_several_operators_on_one_field_and_dates(campaigns_dir):
    body = """\
    audience:
      where:
        years: {gte: 2, lt: 10}
        decided_at: {after: 2026-01-01, before: 30d}
        joined: {before: "2026-06-01T10:00:00Z"}
    """
    campaign = load_campaign(write(campaigns_dir, textwrap.dedent(body) + STEPS))

    assert [(c.field, c.op, c.value, c.line) for c in campaign.audience.where] == [
        ("years", "gte", 2, 3),
        ("years", "lt", 10, 3),
        ("decided_at", "after", "2026-01-01", 4),
        ("decided_at", "before", "30d", 4),
        ("joined", "before", "2026-06-01T10:00:00Z", 5),
    ]


def test_builtin_text_fields_compare_as_text(campaigns_dir):
    body = "audience:\n  where:\n    owner: {eq: 42}\n    role: {in: [true, 1.5]}\n"

    campaign = load_campaign(write(campaigns_dir, textwrap.dedent(body) + STEPS))

    assert [c.value for c in campaign.audience.where] == ["42", ("true", "1.5")]


def test_merge_keys_and_anchors(campaigns_dir):
    body = """\
    steps:
      - &base {id: first, wait: 1d, template: note}
      - <<: *base
        id: second
        wait: 7d
    """
    campaign = load_campaign(write(campaigns_dir, textwrap.dedent(body)))

    assert [(s.id, s.wait, s.template) for s in campaign.steps] == [
        ("first", timedelta(days=1), "note"),
        ("second", timedelta(days=7), "note"),
    ]


def test_guaranteed_fields_cover_every_positive_rule(campaigns_dir):
    body = """\
    audience:
      status: [rejected, withdrawn]
      tags: {any: [silver-medalist, referral], all: [engineering]}
      where:
        stage_reached: {in: [onsite, final]}
        role: {contains: engineer}
        decided_at: {before: 14d}
        skills: {contains: python}
        years: {gt: 3, lte: 10}
        joined: {after: 2026-01-01}
        nickname: {exists: true}
        country: {ne: DE}
        note: {exists: false}
    steps:
      - id: thank-you
        wait: 2d
        template: thank-you
        only_if: {open_to_work: {eq: true}, level: {gte: "L3"}}
    """
    campaign = load_campaign(write(campaigns_dir, textwrap.dedent(body)))
    now = datetime(2027, 3, 1, 12, tzinfo=UTC)

    audience_fields = guaranteed_fields(campaign, now=now)
    step_fields = guaranteed_fields(campaign, campaign.steps[0], now=now)

    assert audience_fields == {
        "email": "candidate@example.com",
        "status": "rejected",
        "tags": ["engineering", "silver-medalist"],
        "stage_reached": "onsite",
        "role": "engineer",
        "decided_at": datetime(2027, 2, 14, 12, tzinfo=UTC),
        "skills": "python",
        "years": 4,
        "joined": "2026-01-02T00:00:00",
        "nickname": "example",
    }
    assert step_fields == audience_fields | {"open_to_work": True, "level": "L3"}
    member = {
        **{k: v for k, v in audience_fields.items() if k != "tags"},
        "tags": audience_fields["tags"],
        "attributes": {
            k: v
            for k, v in audience_fields.items()
            if k in ("skills", "years", "joined", "nickname")
        },
    }
    assert evaluate_audience(campaign.audience, member, now)


def test_guaranteed_fields_of_an_open_audience():
    assert guaranteed_fields(Audience()) == {
        "email": "candidate@example.com",
        "status": "new",
        "tags": [],
    }


# Used when the shared PRODUCT.md is not next to the checkout (kept identical to it).
EXAMPLE = """\
id: silver-medalists            # optional; defaults to the file name; a stable slug
name: Silver medalists - keep warm
status: active                  # active | paused | draft   (default: active)

sender:                         # optional; defaults from nurture.toml [sender]
  from: "Dana Reyes <dana@talent.example>"
  reply_to: dana@talent.example

audience:                       # who is enrolled; evaluated in the database
  status: [rejected, withdrawn]         # candidate.status is one of these
  tags: {any: [silver-medalist], none: [do-not-contact]}
  where:                                # every condition must hold
    stage_reached: {in: [onsite, final]}
    role: {contains: engineer}          # case-insensitive substring
    decided_at: {before: 14d}           # more than 14 days before now
    skills: {contains: python}          # custom attribute (list or string)
    country: {eq: DE}

schedule:
  timezone: candidate           # the candidate's own timezone, else [defaults] timezone; or an IANA name
  days: [mon, tue, wed, thu, fri]
  hours: "09:00-17:00"          # local send window
  skip_dates: [2026-12-24, 2026-12-25]
  max_per_day: 200              # sends per calendar day for this campaign

exit_when: [replied, unsubscribed, bounced, hired]   # the default

steps:
  - id: thank-you               # stable; renaming a step of a live campaign is a new step
    wait: 2d                    # after enrolment for the first step, after the previous send for the rest
    template: thank-you         # templates/thank-you.md
  - id: check-in
    wait: 90d
    template: check-in
    subject: "Catching up, {{ candidate.first_name }}?"   # overrides the template's subject
    variants:                   # optional A/B split; a candidate always gets the same variant
      - {id: a, weight: 1}
      - {id: b, weight: 1, subject: "New roles at {{ company.name }}"}
  - id: six-months
    wait: 90d
    template: six-months
    only_if: {open_to_work: {ne: false}}   # skipped (not sent, sequence continues) when false
"""
