"""The classifier against real mail captured from real servers and clients (../shared/corpus)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from nurture_mail.replies import (
    InboundKind,
    classify,
    extract_reply_text,
    html_to_text,
)

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"

pytestmark = pytest.mark.skipif(
    not CORPUS.is_dir(), reason=f"mail corpus not found at {CORPUS} (it lives beside the checkout)"
)

# Read off each file by hand: the address the notice says failed, and whether the failure is
# permanent. None where the notice names nobody by address.
BOUNCES: dict[str, tuple[str | None, str]] = {
    # qmail notice in a multipart/mixed whose first part has no headers at all, with a stray
    # "Z" after the status code; still a plain permanent failure
    "malformed_bounce_01.eml": ("mithlesh_pm@rediffmail.com", "hard"),
    "tt_1234175799.eml": ("agris.ameriks@amerimailzzz.lv", "hard"),  # 5.4.4 no such domain
    "tt_1234177688.eml": ("aaaaagggrrriiiizz@inbox.lv", "hard"),  # 5.7.1 nonexistent user
    "tt_1234210655.eml": ("this_doesnotexistinaac@accenture.com", "hard"),
    "tt_1234211357.eml": ("agris.ameriksneexistee@gmail.com", "hard"),
    "tt_1234211929.eml": ("jekaterina@tv5.lv", "soft"),  # 5.2.3 "overdrawn diskspace quota"
    "tt_1234211931.eml": ("info.rietumuradio.lv@mail.studio7.lv", "hard"),  # mail loop
    "tt_1234211932.eml": ("dace.balode@rigasvilni.lv", "hard"),
    "tt_1234241665.eml": ("annas@sfl.lv", "hard"),
    "tt_1234285532.eml": ("doesntexistthisemaill@yahoo.com", "hard"),
    "tt_1234285668.eml": ("agrisa@one.lv", "soft"),  # 552 "does not have enough space"
    "tt_bounce_01.eml": ("thornborrow@connect4free.net", "hard"),  # Exim, X-Failed-Recipients
    "tt_bounce_02.eml": ("thornborrow@connect4free.net", "hard"),
    "tt_bounce_03.eml": ("agrisa@apollo.lv", "hard"),  # Final-Recipient: system;<>
    "tt_bounce_04.eml": ("agrisa@apollo.lv", "hard"),
    "tt_bounce_05.eml": ("evor@apollo.lv", "hard"),
    "tt_bounce_06.eml": ("info@koblenz.lv", "hard"),  # Gmail, 550 5.7.1 blocked
    "tt_bounce_07.eml": ("ilona.kalnina@citrus.lv", "hard"),
    "tt_bounce_08.eml": ("jauatkales@gmial.com", "hard"),  # Gmail "failed permanently"
    "tt_bounce_09.eml": ("gintsgrube@pop.ml.lv", "hard"),
    "tt_bounce_10.eml": ("info.rietumuradio.lv@mail.studio7.lv", "soft"),  # 4.0.0
    "tt_bounce_11.eml": (None, "hard"),  # Exchange names the recipient by display name only
    "tt_bounce_12_soft.eml": ("info@radioliepaja.lv", "soft"),  # Gmail delay warning
    "tt_bounce_13.eml": ("ilzeb@lvaei.lv", "soft"),  # 5.2.2 mailbox full
    "tt_bounce_14.eml": ("jolanta_putnina@ogreszinas.lv", "soft"),  # qmail, no storage space
    "tt_bounce_15.eml": ("info@rimibaltic.com", "hard"),  # Lotus Notes
    "tt_bounce_16.eml": ("notikums@tv5.lv", "soft"),  # Original-Recipient (an alias), quota
    "tt_bounce_17.eml": ("agris.brivers@motosports.lv", "hard"),  # qmail #5.1.1
    "tt_bounce_18.eml": ("welcome6_@one.lv", "soft"),  # Gmail delay
    "tt_bounce_19.eml": ("26461101@sms.id.lv", "soft"),  # Gmail delay
    "tt_bounce_20.eml": ("26461101@sms.id.lv", "hard"),  # the same message, given up
    "tt_bounce_21.eml": ("kasparsramins@gmail.com", "hard"),  # no Return-Path at all
    "tt_bounce_22.eml": ("flughafentransfer@loackertours.at", "hard"),
    "tt_bounce_23.eml": ("rihards_freimanis@exigengroup.com", "hard"),  # Sendmail
    "tt_bounce_24.eml": ("customer.testemail@test-receive-domain.se", "hard"),  # Exchange, Swedish
    "tt_bounce_25.eml": ("delar-med-frun@live.se", "hard"),  # qmail, 550
    "undeliverable_gmail.eml": ("undeliverable@coupa.com", "hard"),  # leading blank line
    "unknown_code_bounce_01.eml": ("sdrake@tradingpost.ch", "soft"),  # "full mailbox"
}

# Message-IDs of the returned message that each kind of report carries
ORIGINAL_IDS = {
    "tt_1234175799.eml": "20090209103639.34F80326BA4@Albanis-3.local",  # message/rfc822
    "tt_bounce_16.eml": "da9602510709122225p7ffafeb9uf34d41aa3ce5f9e2@mail.gmail.com",  # headers
    "tt_bounce_17.eml": "20080213-12430.11530.qmail@user-0c6s9jp.cable.mindspring.com",  # copy
    "unknown_code_bounce_01.eml": "4b64d9fd8f537_18e83fa070dbb1b85499c1@xenon.swom.com.tmail",
    "malformed_bounce_01.eml": "4b28496b5a963_3adb3fc543c451b0910ee@xenon.swom.com.tmail",
}


def read(folder: str, name: str) -> bytes:
    return (CORPUS / folder / name).read_bytes()


def test_every_bounce_file_has_an_expectation():
    on_disk = {p.name for p in (CORPUS / "bounces").glob("*.eml")}
    assert on_disk == set(BOUNCES)


@pytest.mark.parametrize("name", sorted(BOUNCES))
def test_bounce_is_classified_with_recipient_and_severity(name):
    recipient, severity = BOUNCES[name]
    result = classify(read("bounces", name))
    assert result.kind is InboundKind.BOUNCE, result.reason
    assert result.recipient == recipient
    assert result.bounce == severity
    assert result.reason


@pytest.mark.parametrize("name", sorted(ORIGINAL_IDS))
def test_bounce_names_the_returned_message(name):
    assert ORIGINAL_IDS[name] in classify(read("bounces", name)).original_message_ids


def test_dsn_facts_come_from_the_report():
    result = classify(read("bounces", "tt_1234211357.eml"))
    assert result.status == "5.1.1"
    assert result.reason == "RFC 3464 delivery report"
    assert result.diagnostic.startswith("550-5.1.1 The email account")
    assert "\n" not in result.diagnostic and len(result.diagnostic) <= 200
    assert result.message_id == "20090209202916.659FB328E84@Albanis-3.local"
    assert result.date == datetime(2009, 2, 9, 20, 29, 16, tzinfo=UTC)


def test_a_bounce_quoting_a_reply_is_still_a_bounce():
    # the returned message carries In-Reply-To and "Re:"; that must not make it a reply
    result = classify(read("bounces", "tt_bounce_18.eml"))
    assert result.kind is InboundKind.BOUNCE
    assert result.in_reply_to == ()


@pytest.mark.parametrize("name", sorted(p.name for p in (CORPUS / "non-bounces").glob("*.eml")))
def test_non_bounces_are_not_bounces(name):
    assert classify(read("non-bounces", name)).kind is not InboundKind.BOUNCE


def test_exchange_out_of_office_in_latvian_is_an_auto_reply_with_return_date():
    result = classify(read("non-bounces", "tt_1234210666.eml"))
    assert result.kind is InboundKind.AUTO_REPLY
    # "will be back on Tuesday 9:00", written on Monday 9 February 2009
    assert result.return_date == date(2009, 2, 10)


def test_gmail_vacation_responder_is_an_auto_reply():
    result = classify(read("non-bounces", "tt_1234211024.eml"))
    assert result.kind is InboundKind.AUTO_REPLY
    assert result.reason == "X-Autoreply header"


REPLIES = sorted(p.name for p in (CORPUS / "replies").glob("*.eml"))


@pytest.mark.parametrize("name", REPLIES)
def test_replies_are_replies_with_only_the_new_text(name):
    result = classify(read("replies", name))
    assert result.kind is InboundKind.REPLY, result.reason
    # every sample answers "Hi"/"Test" with "Hello" and quotes the original below or above
    assert result.reply_text == "Hello"


@pytest.mark.parametrize("name", ["iphone", "sparrow"])
def test_reply_text_matches_the_reference_extraction(name):
    expected = (CORPUS / "replies" / f"{name}_reply_text").read_text().strip()
    raw = read("replies", f"{name}.eml")
    # The reference files keep the signature ("Sent from my iPhone", "-- xxx"): they hold
    # the text without the quote. classify() also drops the signature.
    body = _plain_body(raw)
    assert extract_reply_text(body, strip_signature=False) == expected
    assert classify(raw).reply_text == extract_reply_text(expected)
    assert classify(raw).reply_text == "Hello"


def _plain_body(raw: bytes) -> str:
    from nurture_mail.replies.classifier import _body_text
    from nurture_mail.replies.parsing import leaves, parse_message

    return _body_text(leaves(parse_message(raw)))


HTML_REPLIES = sorted(p.name for p in (CORPUS / "replies").glob("*.html"))


@pytest.mark.parametrize("name", HTML_REPLIES)
def test_html_reply_bodies_lose_the_quoted_message(name):
    html = (CORPUS / "replies" / name).read_text(encoding="utf-8")
    text = extract_reply_text(html_to_text(html))
    assert re.sub(r"\s+", " ", text) == "Hi. I am fine. Thanks, Alex"


@pytest.mark.parametrize("name", HTML_REPLIES)
def test_html_only_reply_is_classified_from_its_html(name):
    html = (CORPUS / "replies" / name).read_bytes()
    raw = (
        b"From: Alex <alex@example.com>\r\nTo: abc@example.com\r\nSubject: Re: Test message\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n" + html
    )
    result = classify(raw)
    assert result.kind is InboundKind.REPLY
    assert "How are you" not in result.reply_text
    assert result.reply_text.startswith("Hi. I am fine.")
