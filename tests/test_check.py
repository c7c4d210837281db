"""`nurture check`: campaigns validated, every step and variant rendered for a candidate who has
only what the audience guarantees; errors as file:line, unused templates as warnings."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

SIGNATURE = "Best,  \n{{ sender.name }}\n"

CAMPAIGN = """\
id: alumni
name: Alumni
audience:
  status: [rejected, withdrawn]
{where}
steps:
  - id: hello
    wait: 1d
    template: hello
"""

HELLO = """\
---
subject: "Hello {{ candidate.first_name | default('there') }}"
---
Hi there,

{body}

{{% include "_signature.md" %}}
"""


def sources(campaigns: dict[str, str], templates: dict[str, str]) -> None:
    """Replace the skeleton's campaigns and templates with exactly these files."""
    for directory, files in (("campaigns", campaigns), ("templates", templates)):
        shutil.rmtree(directory)
        Path(directory).mkdir()
        for name, text in files.items():
            Path(directory, name).write_text(text, encoding="utf-8")


def one_campaign(where: str = "", body: str = "Good to hear from you.", **templates: str) -> None:
    files = {"hello.md": HELLO.format(body=body), "_signature.md": SIGNATURE}
    files.update({f"{name.replace('_', '-')}.md": text for name, text in templates.items()})
    sources({"alumni.yaml": CAMPAIGN.format(where=where)}, files)


def test_a_clean_campaign_is_ok_with_a_summary_line(workspace, run_cli):
    one_campaign()
    result = run_cli("check")
    assert result.exit_code == 0, result.stderr
    assert "ok alumni (active): 1 step" in result.stdout
    assert "all good: 1 campaign(s), 1 step(s)" in result.stdout
    assert result.stderr == ""


def test_a_bad_campaign_is_an_error_with_file_and_line(workspace, run_cli):
    one_campaign()
    Path("campaigns/broken.yaml").write_text(
        "audience:\n  status: [rejected]\nsteps:\n  - id: hello\n    wiat: 2d\n    template: hello\n"
    )
    result = run_cli("check")
    assert result.exit_code == 1
    assert (
        "campaigns/broken.yaml:5: unknown key 'wiat' in step 'hello' (did you mean 'wait'?)"
        in result.stderr
    )
    assert "problem(s) in campaigns or templates" in result.stderr
    assert "ok alumni" in result.stdout  # the good campaign is still summarised


def test_undefined_variable_the_audience_does_not_guarantee_names_file_line_and_step(
    workspace, run_cli
):
    one_campaign(body="You worked on {{ candidate.project }} with us.")
    result = run_cli("check")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith(
        "templates/hello.md:6: 'candidate.project' is undefined (needed by campaign alumni, step hello)"
    )
    assert "project: {exists: true}" in lines[0] and "| default" in lines[0]
    assert "ok alumni" not in result.stdout


def test_the_same_variable_guaranteed_by_exists_is_ok(workspace, run_cli):
    one_campaign(
        where="  where:\n    project: {exists: true}", body="You worked on {{ candidate.project }}."
    )
    result = run_cli("check")
    assert result.exit_code == 0, result.stderr


def test_a_positive_condition_guarantees_the_field_too(workspace, run_cli):
    one_campaign(
        where="  where:\n    role: {contains: engineer}",
        body="Your {{ candidate.role }} interview.",
    )
    assert run_cli("check").exit_code == 0


def test_a_negative_condition_does_not_guarantee_the_field(workspace, run_cli):
    one_campaign(
        where="  where:\n    role: {ne: intern}", body="Your {{ candidate.role }} interview."
    )
    result = run_cli("check")
    assert result.exit_code == 1
    assert "'candidate.role' is undefined" in result.stderr


def test_default_filter_is_ok(workspace, run_cli):
    one_campaign(body="Known as {{ candidate.nickname | default(candidate.email) }}.")
    assert run_cli("check").exit_code == 0


def test_only_if_guarantees_a_field_for_its_own_step(workspace, run_cli):
    campaign = CAMPAIGN.format(where="") + (
        "  - id: later\n    wait: 30d\n    template: later\n    only_if: {project: {exists: true}}\n"
    )
    later = '---\nsubject: "About {{ candidate.project }}"\n---\nHow is {{ candidate.project }}?\n'
    sources(
        {"alumni.yaml": campaign},
        {"hello.md": HELLO.format(body="Hi."), "later.md": later, "_signature.md": SIGNATURE},
    )
    result = run_cli("check")
    assert result.exit_code == 0, result.stderr
    assert "ok alumni (active): 2 steps" in result.stdout


def test_syntax_error_in_a_partial_is_reported_once_at_the_partial(workspace, run_cli):
    one_campaign()
    Path("templates/_signature.md").write_text("Best,\n{{ sender.name }\n")
    result = run_cli("check")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("templates/")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("templates/_signature.md:2: ")
    assert "1 problem(s)" in result.stderr


def test_status_dependent_copy_is_rendered_for_every_status(workspace, run_cli):
    body = '{% if candidate.status == "withdrawn" %}{{ candidate.reason }}{% else %}Hi.{% endif %}'
    one_campaign(body=body)
    result = run_cli("check")
    assert result.exit_code == 1
    assert "'candidate.reason' is undefined" in result.stderr


def test_a_step_subject_error_points_at_the_campaign_file(workspace, run_cli):
    campaign = CAMPAIGN.format(where="") + '    subject: "Hi {{ candidate.nickname }}"\n'
    sources(
        {"alumni.yaml": campaign},
        {"hello.md": HELLO.format(body="Hi."), "_signature.md": SIGNATURE},
    )
    result = run_cli("check")
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "campaigns/alumni.yaml:10: subject: 'candidate.nickname' is undefined "
        "(needed by campaign alumni, step hello)"
    )


def test_every_variant_is_rendered_and_named(workspace, run_cli):
    campaign = CAMPAIGN.format(where="") + (
        "    variants:\n      - {id: a, weight: 1}\n      - {id: b, weight: 1, template: hello-b}\n"
    )
    hello_b = '---\nsubject: "Hello again"\n---\n{{ candidate.nickname }}\n'
    sources(
        {"alumni.yaml": campaign},
        {"hello.md": HELLO.format(body="Hi."), "hello-b.md": hello_b, "_signature.md": SIGNATURE},
    )
    result = run_cli("check")
    assert result.exit_code == 1
    assert (
        "templates/hello-b.md:4: 'candidate.nickname' is undefined "
        "(needed by campaign alumni, step hello, variant b)"
    ) in result.stderr


def test_one_broken_template_used_twice_is_one_error_naming_both(workspace, run_cli):
    second = CAMPAIGN.format(where="").replace(
        "id: alumni\nname: Alumni", "id: second\nname: Second"
    )
    sources(
        {"alumni.yaml": CAMPAIGN.format(where=""), "second.yaml": second},
        {"hello.md": HELLO.format(body="{{ candidate.project }}"), "_signature.md": SIGNATURE},
    )
    result = run_cli("check")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("templates/")]
    assert len(errors) == 1
    assert "campaign alumni, step hello; campaign second, step hello" in errors[0]


def test_unused_template_is_a_warning_not_an_error(workspace, run_cli):
    one_campaign(old_news='---\nsubject: "Old"\n---\nOld news.\n')
    result = run_cli("check")
    assert result.exit_code == 0
    assert "templates/old-news.md: warning: not used by any campaign" in result.stderr


def test_missing_templates_directory(workspace, run_cli):
    shutil.rmtree("templates")
    result = run_cli("check")
    assert result.exit_code == 1
    assert "templates: no such templates directory" in result.stderr


def test_check_needs_no_database_and_creates_none(workspace, run_cli, db_url):
    one_campaign()
    result = run_cli("check")
    assert result.exit_code == 0
    assert "audience" not in result.stdout
    if db_url.startswith("sqlite"):
        assert not Path(db_url.removeprefix("sqlite:///")).exists()


def test_unreachable_database_only_drops_the_audience_size(workspace, run_cli, monkeypatch):
    one_campaign()
    monkeypatch.setenv("NURTURE_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:9/nowhere")
    result = run_cli("check")
    assert result.exit_code == 0, result.stderr
    assert "ok alumni (active): 1 step\n" in result.stdout


def test_audience_size_when_the_database_has_candidates(workspace, run_cli):
    assert run_cli("candidates", "import", "candidates.csv").exit_code == 0
    result = run_cli("--now", "2027-03-01T12:00:00Z", "check")
    assert result.exit_code == 0, result.stderr
    # silver-medalists: onsite/final, rejected/withdrawn, not hired, not do-not-contact.
    assert "ok silver-medalists (active): 4 steps, 2 variants, audience 11 now" in result.stdout
    assert "ok early-leavers (active): 2 steps, audience 7 now" in result.stdout


TWO_STEPS = """\
id: alumni
name: Alumni
audience:
  status: [rejected, withdrawn]
schedule: {{timezone: UTC}}
steps:
  - id: {first}
    wait: 1d
    template: hello
  - id: later
    wait: 30d
    template: hello
"""


def _hello_placed(run_cli) -> None:
    """The two-step campaign, its candidates imported and `hello` placed for them."""
    sources({"alumni.yaml": TWO_STEPS.format(first="hello")},
            {"hello.md": HELLO.format(body="Hi."), "_signature.md": SIGNATURE})
    assert run_cli("candidates", "import", "candidates.csv").exit_code == 0
    assert run_cli("--now", "2027-03-01T12:00:00Z", "tick").exit_code == 0  # hello placed


def _outbox() -> list[Path]:
    return sorted(Path("outbox/new").glob("*"))


def test_a_renamed_step_that_was_sent_is_a_warning_saying_who_gets_it_again(workspace, run_cli):
    sources({"alumni.yaml": TWO_STEPS.format(first="hello")},
            {"hello.md": HELLO.format(body="Hi."), "_signature.md": SIGNATURE})
    assert run_cli("candidates", "import", "candidates.csv").exit_code == 0
    assert run_cli("--now", "2027-03-01T12:00:00Z", "tick").exit_code == 0  # enrol, place hello
    assert run_cli("--now", "2027-03-03T12:00:00Z", "tick").exit_code == 0  # hello goes out
    had = len(_outbox())
    assert had > 0
    clean = run_cli("--now", "2027-03-03T12:00:00Z", "check")
    assert clean.exit_code == 0 and "warning" not in clean.stderr

    Path("campaigns/alumni.yaml").write_text(TWO_STEPS.format(first="hi"))
    result = run_cli("--now", "2027-03-03T12:00:00Z", "check")
    assert result.exit_code == 0, result.stderr  # a warning, not an error
    assert (f"campaigns/alumni.yaml:6: warning: step 'hello' is no longer in the file but the "
            f"ledger has it: {had} candidates had it; {had} of these candidates get step 'hi' "
            f"next.") in result.stderr
    assert "give it back its old id" in result.stderr
    # ...and that is what the daemon does: the renamed step goes to all of them again.
    assert run_cli("--now", "2027-03-05T12:00:00Z", "tick").exit_code == 0
    assert len(_outbox()) == 2 * had


def test_a_removed_step_with_sends_waiting_says_they_will_be_cancelled(workspace, run_cli):
    _hello_placed(run_cli)
    placed = run_cli("--now", "2027-03-01T12:00:00Z", "plan", "--format", "json")
    waiting = placed.stdout.count('"step": "hello"')
    assert waiting > 0
    Path("campaigns/alumni.yaml").write_text(TWO_STEPS.format(first="hello").replace(
        "  - id: hello\n    wait: 1d\n    template: hello\n", ""))
    result = run_cli("--now", "2027-03-01T12:00:00Z", "check")
    assert result.exit_code == 0, result.stderr
    assert (f"warning: step 'hello' is no longer in the file but the ledger has it: {waiting} "
            f"sends of it waiting will be cancelled at the next tick, never sent; {waiting} "
            f"of these candidates get step 'later' next.") in result.stderr
    assert run_cli("--now", "2027-03-03T12:00:00Z", "tick").exit_code == 0
    assert _outbox() == []  # nothing of the removed step left, `later` is 30 days away
    # Cancelled and everyone placed on `later`: nothing pending for 'hello', nothing said.
    quiet = run_cli("--now", "2027-03-03T12:00:00Z", "check")
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr


def _quiet_about(step: str, now: str, run_cli) -> bool:
    result = run_cli("--now", now, "check")
    assert result.exit_code == 0, result.stderr
    return f"step '{step}'" not in result.stderr


def test_the_removed_step_warning_goes_away_once_everyone_has_moved_on(workspace, run_cli):
    _hello_placed(run_cli)
    assert run_cli("--now", "2027-03-03T12:00:00Z", "tick").exit_code == 0  # hello goes out
    had = len(_outbox())
    assert had > 0
    Path("campaigns/alumni.yaml").write_text(TWO_STEPS.format(first="hi"))
    assert not _quiet_about("hello", "2027-03-03T12:00:00Z", run_cli)  # they get 'hi' next
    assert run_cli("--now", "2027-03-05T12:00:00Z", "tick").exit_code == 0  # 'hi' goes out
    assert len(_outbox()) == 2 * had
    # The sent rows of 'hello' stay in the ledger forever; nothing is pending for it any more.
    assert _quiet_about("hello", "2027-03-05T12:00:00Z", run_cli)
    assert run_cli("--now", "2027-03-05T13:00:00Z", "tick").exit_code == 0  # 'later' placed
    assert _quiet_about("hello", "2027-03-05T13:00:00Z", run_cli)
    # Each later send flags the enrollment for its next step again: still nothing to do with
    # 'hello', so still quiet.
    assert run_cli("--now", "2027-04-05T12:00:00Z", "tick").exit_code == 0  # 'later' goes out
    assert len(_outbox()) == 3 * had
    assert _quiet_about("hello", "2027-04-05T12:00:00Z", run_cli)


def _ledger(db_url: str, sql: str, **params) -> list[tuple]:
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql), params)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def test_claimed_sends_of_a_removed_step_are_in_flight_not_cancelled(workspace, run_cli, db_url):
    _hello_placed(run_cli)
    rows = _ledger(db_url, "SELECT id FROM sends WHERE step_id = 'hello' ORDER BY id")
    assert len(rows) > 1
    in_flight = rows[0][0]
    # Another sender holds one of them, its lease running to 13:00.
    _ledger(db_url, "UPDATE sends SET state = 'claimed', claimed_by = 'another-sender', "
            "lease_until = :lease WHERE id = :id", lease=datetime(2027, 3, 1, 13, 0), id=in_flight)
    Path("campaigns/alumni.yaml").write_text(TWO_STEPS.format(first="hello").replace(
        "  - id: hello\n    wait: 1d\n    template: hello\n", ""))
    result = run_cli("--now", "2027-03-01T12:00:00Z", "check")
    assert result.exit_code == 0, result.stderr
    waiting = len(rows) - 1
    assert (f"warning: step 'hello' is no longer in the file but the ledger has it: {waiting} "
            f"sends of it waiting will be cancelled at the next tick, never sent; 1 send of it "
            f"in flight (claimed by a sender, which sends or cancels it); {waiting} of these "
            f"candidates get step 'later' next.") in result.stderr
    # The daemon cancels the waiting ones and places `later` for them; the claimed one is left
    # to its sender.
    assert run_cli("--now", "2027-03-01T12:30:00Z", "tick").exit_code == 0
    states = dict(_ledger(db_url, "SELECT state, COUNT(*) FROM sends WHERE step_id = 'hello' "
                          "GROUP BY state"))
    assert states == {"cancelled": waiting, "claimed": 1}
    later = _ledger(db_url, "SELECT COUNT(*) FROM sends WHERE step_id = 'later'")
    assert later == [(waiting,)]
    result = run_cli("--now", "2027-03-01T12:30:00Z", "check")
    assert result.exit_code == 0, result.stderr
    assert ("warning: step 'hello' is no longer in the file but the ledger has it: 1 send of it "
            "in flight (claimed by a sender, which sends or cancels it). Progress is kept by "
            "step id") in result.stderr
    # That sender never comes back: its lease runs out, the row returns to the queue, and when
    # it falls due the daemon cancels it as a removed step's and moves its candidate on to
    # `later` as well.
    assert run_cli("--now", "2027-03-01T13:30:00Z", "tick").exit_code == 0
    assert _ledger(db_url, "SELECT state FROM sends WHERE id = :id", id=in_flight) == [("scheduled",)]
    assert run_cli("--now", "2027-03-02T13:00:00Z", "tick").exit_code == 0
    states = dict(_ledger(db_url, "SELECT state, COUNT(*) FROM sends WHERE step_id = 'hello' "
                          "GROUP BY state"))
    assert states == {"cancelled": waiting + 1}
    assert run_cli("--now", "2027-03-02T13:01:00Z", "tick").exit_code == 0
    later = _ledger(db_url, "SELECT COUNT(*) FROM sends WHERE step_id = 'later'")
    assert later == [(waiting + 1,)]
    assert _quiet_about("hello", "2027-03-02T13:01:00Z", run_cli)


def test_a_removed_last_step_says_its_candidates_complete(workspace, run_cli, db_url):
    _hello_placed(run_cli)
    assert run_cli("--now", "2027-03-03T12:00:00Z", "tick").exit_code == 0  # hello goes out
    assert run_cli("--now", "2027-03-03T13:00:00Z", "tick").exit_code == 0  # `later` placed
    waiting = _ledger(db_url, "SELECT COUNT(*) FROM sends WHERE step_id = 'later'")[0][0]
    assert waiting > 0
    Path("campaigns/alumni.yaml").write_text(TWO_STEPS.format(first="hello").replace(
        "  - id: later\n    wait: 30d\n    template: hello\n", ""))
    result = run_cli("--now", "2027-03-03T13:00:00Z", "check")
    assert result.exit_code == 0, result.stderr
    assert (f"warning: step 'later' is no longer in the file but the ledger has it: {waiting} "
            f"sends of it waiting will be cancelled at the next tick, never sent; {waiting} of "
            f"these candidates have no step left and complete.") in result.stderr
    assert run_cli("--now", "2027-03-03T14:00:00Z", "tick").exit_code == 0
    completed = _ledger(db_url, "SELECT COUNT(*) FROM enrollments WHERE state = 'completed'")
    assert completed == [(waiting,)]
    assert _quiet_about("later", "2027-03-03T14:00:00Z", run_cli)


def test_a_paused_campaign_keeps_the_warning_until_the_daemon_places_the_next_step(
    workspace, run_cli, db_url
):
    _hello_placed(run_cli)
    placed = _ledger(db_url, "SELECT COUNT(*) FROM sends WHERE step_id = 'hello'")[0][0]
    paused = TWO_STEPS.format(first="hello").replace(
        "  - id: hello\n    wait: 1d\n    template: hello\n", "").replace(
        "name: Alumni\n", "name: Alumni\nstatus: paused\n")
    Path("campaigns/alumni.yaml").write_text(paused)
    # The tick cancels the removed step's sends, but places nothing while the campaign is paused.
    assert run_cli("--now", "2027-03-01T12:30:00Z", "tick").exit_code == 0
    assert _ledger(db_url, "SELECT DISTINCT state FROM sends") == [("cancelled",)]
    result = run_cli("--now", "2027-03-01T12:30:00Z", "check")
    assert result.exit_code == 0, result.stderr
    assert (f"warning: step 'hello' is no longer in the file but the ledger has it: {placed} of "
            f"these candidates get step 'later' next.") in result.stderr
    Path("campaigns/alumni.yaml").write_text(paused.replace("status: paused\n", ""))
    assert run_cli("--now", "2027-03-01T13:00:00Z", "tick").exit_code == 0
    assert _ledger(db_url, "SELECT COUNT(*) FROM sends WHERE step_id = 'later'") == [(placed,)]
    assert _quiet_about("hello", "2027-03-01T13:00:00Z", run_cli)


def test_the_next_step_prediction_reads_in_chunks_and_asks_once_per_progress(
    workspace, run_cli, monkeypatch
):
    from nurture_mail import checking, sequencing

    _hello_placed(run_cli)
    assert run_cli("--now", "2027-03-03T12:00:00Z", "tick").exit_code == 0  # hello goes out
    had = len(_outbox())
    assert had > 3
    Path("campaigns/alumni.yaml").write_text(TWO_STEPS.format(first="hi"))
    asked: list[frozenset[str]] = []

    def next_step(campaign, done):
        asked.append(frozenset(done))
        return real(campaign, done)

    real = sequencing.next_step
    monkeypatch.setattr(sequencing, "next_step", next_step)
    monkeypatch.setattr(checking, "_ID_CHUNK", 3)  # several chunks of enrollment ids
    result = run_cli("--now", "2027-03-03T12:00:00Z", "check")
    assert result.exit_code == 0, result.stderr
    assert f"{had} of these candidates get step 'hi' next." in result.stderr
    assert asked == [frozenset({"hello"})]  # everyone has the same progress: asked once
