"""`nurture preview`: a step as a candidate would get it, built by the sender's own code."""

from __future__ import annotations

import mailbox
import re
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from nurture_mail.config import load_settings
from nurture_mail.database import open_database
from nurture_mail.store import pool
from nurture_mail.unsubscribe import read_token
from nurture_mail.workspace import load_workspace

MARIA = "maria.garcia@example.com"


@pytest.fixture
def imported(workspace, run_cli):
    result = run_cli("candidates", "import", "candidates.csv")
    assert result.exit_code == 0, result.stderr
    return workspace


def headers_and_text(stdout: str) -> tuple[dict[str, str], str]:
    head, _, text = stdout.partition("\n\n")
    headers = dict(line.split(": ", 1) for line in head.splitlines())
    return headers, text


def test_sample_candidate_shows_headers_subject_and_text(workspace, run_cli, db_url):
    result = run_cli("preview", "silver-medalists")
    assert result.exit_code == 0, result.stderr
    headers, text = headers_and_text(result.stdout)
    assert headers["From"] == "Dana Reyes <dana@talent.example>"
    assert headers["To"] == "Alex Morgan <candidate@example.com>"
    assert headers["Reply-To"] == "dana@talent.example"
    assert headers["Subject"] == "Thank you, Alex"
    assert re.fullmatch(r"<[^>]+@talent\.example>", headers["Message-ID"])
    assert headers["List-Unsubscribe"].startswith("<http://127.0.0.1:8025/u/")
    assert "<mailto:dana@talent.example?subject=unsubscribe%20" in headers["List-Unsubscribe"]
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "Content-Type" not in headers
    assert text.startswith("Hi Alex,\n")
    assert "1 Main St, Springfield" in text  # the footer is part of the text
    assert "silver-medalists, step thank-you (1 of 4)" in result.stderr
    assert "sample candidate" in result.stderr
    if db_url.startswith("sqlite"):  # a sample needs no database, and none is created
        assert not Path(db_url.removeprefix("sqlite:///")).exists()


def test_candidate_option_uses_the_real_candidates_data(imported, run_cli):
    result = run_cli("preview", "silver-medalists", "--candidate", "Maria.Garcia@Example.com")
    assert result.exit_code == 0, result.stderr
    headers, text = headers_and_text(result.stdout)
    assert headers["To"] == f"María García <{MARIA}>"
    assert headers["Subject"] == "Thank you, María"
    assert "for the Senior Backend Engineer role" in text
    assert "note:" not in result.stderr  # in the audience, nothing would stop this email
    # The real unsubscribe link: it verifies with the workspace's secret and is hers.
    token = headers["List-Unsubscribe"].split("/u/", 1)[1].split(">", 1)[0]
    settings = load_settings(None)
    db = open_database(settings.database_url)
    try:
        secret = load_workspace(settings, db).unsubscribe_secret
        with db.sessions() as session:
            assert read_token(secret, token) == pool.get_candidate(session, MARIA).token_key
    finally:
        db.dispose()


def test_withdrawn_candidate_gets_the_withdrawn_copy(imported, run_cli):
    result = run_cli("preview", "early-leavers", "--candidate", "tom.becker@example.com")
    assert result.exit_code == 0, result.stderr
    assert "The timing was not right this time" in result.stdout
    assert "not the outcome you hoped for" not in result.stdout


def test_html_writes_a_file_with_inlined_css(workspace, run_cli):
    result = run_cli("preview", "silver-medalists", "--step", "check-in", "--html")
    assert result.exit_code == 0, result.stderr
    path = Path(result.stdout.strip().splitlines()[-1].split(" to ", 1)[1])
    assert path == Path("preview-silver-medalists-check-in.html")
    html = path.read_text(encoding="utf-8")
    assert re.search(r'<div class="wrap" style="[^"]*max-width: 600px', html)
    assert "<p>Hi Alex,</p>" in html
    assert "Best,<br" in html  # the signature keeps its lines in HTML
    assert 'href="http://127.0.0.1:8025/u/' in html
    assert "Subject: Catching up, Alex?" in result.stdout


def test_variant_is_the_candidates_own_and_can_be_forced(imported, run_cli):
    from nurture_mail.campaigns import load_campaign
    from nurture_mail.sequencing import variant_for

    step = load_campaign(Path("campaigns/silver-medalists.yaml")).step("new-roles")
    subjects = {"a": "New roles at Talent Co", "b": "We're hiring again, María"}
    own = variant_for(step, MARIA)
    result = run_cli("preview", "silver-medalists", "--step", "new-roles", "--candidate", MARIA)
    assert result.exit_code == 0, result.stderr
    assert f"variant {own}," in result.stderr
    assert headers_and_text(result.stdout)[0]["Subject"] == subjects[own]
    for forced, subject in subjects.items():
        result = run_cli(
            "preview",
            "silver-medalists",
            "--step",
            "new-roles",
            "--candidate",
            MARIA,
            "--variant",
            forced,
        )
        assert headers_and_text(result.stdout)[0]["Subject"] == subject


def test_notes_say_why_a_candidate_would_not_get_it(imported, run_cli):
    # Wei Li has open_to_work=false: the step's only_if skips it.
    result = run_cli(
        "preview", "silver-medalists", "--step", "new-roles", "--candidate", "li.wei@example.com"
    )
    assert result.exit_code == 0, result.stderr
    assert (
        "note: step new-roles would be skipped for li.wei@example.com (only_if: open_to_work ne False)"
        in result.stderr
    )
    # Noah was hired.
    result = run_cli("preview", "silver-medalists", "--candidate", "noah.brown@example.com")
    assert "note: noah.brown@example.com is hired" in result.stderr
    # Tom only reached the screen: not a silver medalist.
    result = run_cli("preview", "silver-medalists", "--candidate", "tom.becker@example.com")
    assert (
        "note: tom.becker@example.com is not in the audience of silver-medalists now"
        in result.stderr
    )
    assert run_cli("unsubscribe", "tom.becker@example.com").exit_code == 0
    result = run_cli("preview", "early-leavers", "--candidate", "tom.becker@example.com")
    assert "note: tom.becker@example.com is suppressed (unsubscribed)" in result.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["nope"], "error: no campaign 'nope' (campaigns: early-leavers, silver-medalists)\n"),
        (
            ["silver-medalists", "--step", "nope"],
            "error: campaign 'silver-medalists' has no step 'nope' "
            "(steps: thank-you, check-in, new-roles, referral)\n",
        ),
        (
            ["silver-medalists", "--candidate", "nobody@example.com"],
            "error: no candidate with address nobody@example.com\n",
        ),
        (
            ["silver-medalists", "--step", "new-roles", "--variant", "c"],
            "error: step 'new-roles' has no variant 'c' (variants: a, b)\n",
        ),
        (["silver-medalists", "--variant", "a"], "error: step 'thank-you' has no variants\n"),
    ],
)
def test_unknown_campaign_step_candidate_or_variant_is_one_clean_line(
    imported, run_cli, args, message
):
    result = run_cli("preview", *args)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == message


def test_preview_refuses_a_workspace_with_errors(workspace, run_cli):
    Path("templates/thank-you.md").write_text(
        '---\nsubject: "Hi {{ candidate.first_name }"\n---\nHi.\n'
    )
    result = run_cli("preview", "silver-medalists")
    assert result.exit_code == 1
    assert "templates/thank-you.md:2:" in result.stderr
    assert "nurture check" in result.stderr


def test_preview_is_what_the_sender_sends(imported, run_cli):
    """Tom (early-leavers, Europe/Berlin) gets thank-you on Tuesday; preview at that moment
    shows the same headers and text part as the message written to the outbox."""
    assert run_cli("--now", "2027-03-01T12:00:00Z", "tick").exit_code == 0  # Monday: enrol
    assert run_cli("--now", "2027-03-02T12:30:00Z", "tick").exit_code == 0  # Tuesday: send
    box = mailbox.Maildir("outbox", create=False)
    sent = [BytesParser(policy=policy.default).parsebytes(m.as_bytes()) for m in box]
    tom = next(m for m in sent if "tom.becker@example.com" in str(m["To"]))
    result = run_cli(
        "--now",
        "2027-03-02T12:30:00Z",
        "preview",
        "early-leavers",
        "--candidate",
        "tom.becker@example.com",
    )
    assert result.exit_code == 0, result.stderr
    headers, text = headers_and_text(result.stdout)
    for name in (
        "From",
        "To",
        "Reply-To",
        "Subject",
        "Date",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
    ):
        assert headers[name] == str(tom[name]).strip(), name
    assert text == tom.get_body(("plain",)).get_content().replace("\r\n", "\n")
