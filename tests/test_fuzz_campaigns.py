"""Campaign YAML fuzzing: whatever a file holds, loading gives a Campaign or a CampaignError
pinned to the file (never another exception, never a hang).

Four input kinds: mutated valid campaigns, random structures, random scalars in every key of
a valid campaign, and broken YAML text.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import strategies as st

from nurture_mail.campaigns import Campaign, load_campaign, load_campaigns
from nurture_mail.errors import CampaignError

from .fuzz_strategies import INJECTIONS, fuzz, mutated_bytes, nasty_text, scalars, structures

SKELETON = Path(__file__).resolve().parents[1] / "nurture_mail" / "skeleton" / "campaigns"
FULL = """\
id: silver-medalists
name: Silver medalists - keep warm
status: active
sender:
  from: "Dana Reyes <dana@talent.example>"
  reply_to: dana@talent.example
audience:
  status: [rejected, withdrawn]
  tags: {any: [silver-medalist], none: [do-not-contact]}
  where:
    stage_reached: {in: [onsite, final]}
    role: {contains: engineer}
    decided_at: {before: 14d}
    skills: {contains: python}
    country: {eq: DE}
schedule:
  timezone: candidate
  days: [mon, tue, wed, thu, fri]
  hours: "09:00-17:00"
  skip_dates: [2026-12-24, 2026-12-25]
  max_per_day: 200
exit_when: [replied, unsubscribed, bounced, hired]
steps:
  - id: thank-you
    wait: 2d
    template: thank-you
  - id: check-in
    wait: 90d
    template: check-in
    subject: "Catching up, {{ candidate.first_name }}?"
    variants:
      - {id: a, weight: 1}
      - {id: b, weight: 1, subject: "New roles at {{ company.name }}"}
  - id: six-months
    wait: 90d
    template: six-months
    only_if: {open_to_work: {ne: false}}
"""
SEEDS = [FULL.encode()] + [p.read_bytes() for p in sorted(SKELETON.glob("*.yaml"))]
TEMPLATES = {"thank-you", "check-in", "six-months", "new-roles", "referral"}
YAML_FRAGMENTS = [
    b"\n", b": ", b"- ", b"  ", b"\t", b"{", b"}", b"[", b"]", b"&a ", b"*a", b"<<: *a\n", b"!!python/object:os.system ",
    b"!!binary ", b"? ", b"|\n", b">-\n", b"'", b'"', b"%YAML 1.1\n", b"---\n", b"...\n", b"#", b"\xef\xbb\xbf",
    b"\xff", b"\x00", b"wait: ", b"template: ", b"id: ", b"{eq: ", b"2026-13-45", b"99999999999d", b"~",
]


def check_file(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        campaign = load_campaign(path, template_exists=TEMPLATES.__contains__)
    except CampaignError as error:
        assert error.file == str(path)
        assert error.line is None or error.line >= 1
        assert str(error).startswith(str(path))
        return
    assert isinstance(campaign, Campaign)
    assert campaign.steps and all(step.template in TEMPLATES for step in campaign.steps)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "fuzzed.yaml"


@pytest.mark.timeout(300)
def test_mutated_valid_campaigns(request, path):
    fuzz(request, mutated_bytes(SEEDS, YAML_FRAGMENTS), lambda raw: check_file(path, raw))


@pytest.mark.timeout(300)
def test_random_structures(request, path):
    def check(value):
        check_file(path, yaml.safe_dump(value, allow_unicode=True).encode("utf-8", "surrogatepass"))

    fuzz(request, structures, check)


# Every key path of the full campaign, to put a random value in.
def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


BASE = yaml.safe_load(FULL)
PATHS = [p for p in _paths(BASE) if p]


@st.composite
def scalar_in_a_key(draw):
    document = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        key_path = draw(st.sampled_from(PATHS))
        target = document
        try:
            for key in key_path[:-1]:
                target = target[key]
            target[key_path[-1]] = draw(st.one_of(scalars, structures))
        except (KeyError, IndexError, TypeError):
            continue  # an earlier replacement removed this path
    return document


@pytest.mark.timeout(300)
def test_random_scalars_in_every_key(request, path):
    def check(document):
        check_file(path, yaml.safe_dump(document, allow_unicode=True).encode("utf-8", "surrogatepass"))

    fuzz(request, scalar_in_a_key(), check)


@pytest.mark.timeout(300)
def test_broken_yaml(request, path):
    text = st.lists(
        st.one_of(st.sampled_from([f.decode("latin-1") for f in YAML_FRAGMENTS]), nasty_text,
                  st.sampled_from(INJECTIONS)),
        max_size=40,
    ).map("".join)
    raw = st.one_of(text.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=400))
    fuzz(request, raw, lambda data: check_file(path, data))


# "Billion laughs": *m stands for 9 * 7**12 (about 125 billion) scalars.
ANCHORS = "x-anchors:\n  a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  {chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 7)}]\n" for i in range(12)
)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("key_path", PATHS, ids=lambda p: ".".join(map(str, p)))
def test_alias_bombs_in_every_key_are_refused_quickly(path, key_path):
    document = copy.deepcopy(BASE)
    target = document
    for key in key_path[:-1]:
        target = target[key]
    target[key_path[-1]] = "BOMB_HERE"
    text = ANCHORS + yaml.safe_dump(document, sort_keys=False).replace("BOMB_HERE", "*m")
    with pytest.raises(CampaignError) as error:
        load_campaign(_write(path, text))
    assert len(str(error.value)) < 2_000


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.timeout(60)
def test_a_directory_of_broken_files_never_raises(tmp_path: Path):
    """load_campaigns collects errors per file and keeps the good ones."""
    directory = tmp_path / "campaigns"
    directory.mkdir()
    (directory / "good.yaml").write_text(FULL)
    (directory / "bad.yaml").write_bytes(b"steps: [\n")
    (directory / "binary.yaml").write_bytes(b"\xff\xfe\x00")
    (directory / "deep.yaml").write_text("a: " + "[" * 10_000)
    (directory / "bomb.yaml").write_text(ANCHORS + "steps: *m\n")
    campaigns, errors = load_campaigns(directory, template_exists=TEMPLATES.__contains__)
    assert [c.id for c in campaigns] == ["silver-medalists"]
    assert {Path(e.file).name for e in errors} == {"bad.yaml", "binary.yaml", "bomb.yaml", "deep.yaml"}
