"""The example campaigns and templates `nurture init` ships: they check clean, and every
template renders for a sample candidate and for every real candidate of the sample CSV."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nurture_mail.config import load_settings
from nurture_mail.database import open_database
from nurture_mail.previewing import build_preview
from nurture_mail.rendering import sample_candidate
from nurture_mail.rules import evaluate_audience
from nurture_mail.scaffold import skeleton_files
from nurture_mail.sequencing import candidate_context, subject_and_template
from nurture_mail.store import ledger, pool
from nurture_mail.workspace import load_sources, load_workspace

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
SKELETON = dict(skeleton_files())
TEMPLATES = sorted(
    name.removeprefix("templates/").removesuffix(".md")
    for name in SKELETON
    if name.startswith("templates/") and name.endswith(".md") and not name.startswith("templates/_")
)


def test_the_skeleton_ships_the_documented_examples():
    assert {"campaigns/silver-medalists.yaml", "campaigns/early-leavers.yaml"} <= set(SKELETON)
    assert TEMPLATES == ["check-in", "new-roles", "referral", "thank-you"]


def test_check_passes_on_a_fresh_workspace(workspace, run_cli):
    result = run_cli("check")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""  # no errors, and no unused template either
    assert "ok early-leavers (active): 2 steps" in result.stdout
    assert "ok silver-medalists (active): 4 steps, 2 variants" in result.stdout


def test_check_fails_when_a_shipped_template_cannot_render(workspace, run_cli):
    """The guard works: the early leavers are only sure to have a first name because the
    campaign asks for one; without that, thank-you cannot render for all of them."""
    path = Path("campaigns/early-leavers.yaml")
    text = path.read_text()
    assert "first_name: {exists: true}" in text
    path.write_text(re.sub(r"\n\s*first_name: \{exists: true\}[^\n]*", "", text))
    result = run_cli("check")
    assert result.exit_code == 1
    assert "templates/thank-you.md:2: 'candidate.first_name' is undefined" in result.stderr
    assert "campaign early-leavers, step thank-you" in result.stderr


def _every_step(campaigns):
    for campaign in campaigns:
        for step in campaign.steps:
            for variant in [v.id for v in step.variants] or [None]:
                yield campaign, step, variant


def test_every_step_renders_for_a_sample_candidate(workspace):
    settings = load_settings(None)
    templates, campaigns, errors = load_sources(settings)
    assert errors == []
    seen = set()
    for campaign, step, variant in _every_step(campaigns):
        shown = build_preview(
            templates,
            settings,
            "secret",
            campaign,
            step_id=step.id,
            variant_id=variant,
            candidate=None,
            now=NOW,
        )
        email = shown.email.rendered
        seen.add(subject_and_template(step, variant)[1])
        assert email.subject and "{{" not in email.subject
        assert email.text.startswith("Hi Alex,\n"), email.text
        assert "Best,  \nDana Reyes  \nTalent Co" in email.text
        assert (
            "1 Main St, Springfield" in email.text and settings.unsubscribe_base_url in email.text
        )
        assert "<p>Hi Alex,</p>" in email.html and 'style="' in email.html
        body = email.text.split("\n-- \n", 1)[0]
        assert len(body.split()) < 120, f"{step.template} is not short: {len(body.split())} words"
    assert seen == set(TEMPLATES)


@pytest.mark.parametrize("name", TEMPLATES)
@pytest.mark.parametrize("status", ["rejected", "withdrawn"])
def test_every_template_renders_with_only_a_first_name(workspace, name, status):
    """What the shipped audiences guarantee (status, first name) is all a template needs."""
    settings = load_settings(None)
    templates, campaigns, _ = load_sources(settings)
    candidate = sample_candidate(campaigns[0], None, now=NOW)
    candidate.update({"status": status, "first_name": "Sam"})
    context = {
        "candidate": candidate_context(candidate),
        "sender": {"name": "Dana Reyes", "email": "dana@talent.example"},
        "company": {"name": "Talent Co", "postal_address": "1 Main St"},
        "campaign": {"id": "x", "name": "X"},
        "step": {"id": "s", "number": 1},
        "unsubscribe_url": "https://talent.example/u/t",
        "today": NOW.date(),
    }
    email = templates.render(name, context)
    assert "Sam" in email.subject + email.text


def test_every_step_renders_for_every_sample_candidate_in_its_audience(workspace, run_cli):
    assert run_cli("candidates", "import", "candidates.csv").exit_code == 0
    settings = load_settings(None)
    db = open_database(settings.database_url)
    try:
        ws = load_workspace(settings, db)
        with db.sessions() as session:
            people = []
            for row in pool.list_candidates(db):
                c = pool.get_candidate(session, row["email"])
                people.append(
                    ledger.candidate_fields(c, pool.tags_of(session, [c.id]).get(c.id, []))
                )
        rendered = 0
        for campaign, step, variant in _every_step(ws.campaigns):
            for person in people:
                if not evaluate_audience(campaign.audience, person, NOW):
                    continue
                shown = build_preview(
                    ws.templates,
                    settings,
                    ws.unsubscribe_secret,
                    campaign,
                    step_id=step.id,
                    variant_id=variant,
                    candidate=person,
                    now=NOW,
                )
                assert shown.email.rendered.text.startswith(f"Hi {person['first_name']},\n")
                rendered += 1
        assert rendered > 30
    finally:
        db.dispose()
