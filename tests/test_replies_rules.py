"""One constructed message per classification rule, plus the cases each rule must leave alone."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from nurture_mail.replies import Classification, InboundKind, classify

RECEIVED = datetime(2026, 12, 18, 9, 30, tzinfo=UTC)
OUR_ID = "abc123@talent.example"


def build(*headers: tuple[str, str], body: str = "Hello", content_type: str | None = None) -> bytes:
    """Raw message bytes; Content-Type defaults to UTF-8 text/plain unless given."""
    lines = [f"{name}: {value}" for name, value in headers]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    elif not any(name.lower() == "content-type" for name, _ in headers):
        lines.append("Content-Type: text/plain; charset=utf-8")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("utf-8")


def person(
    *extra: tuple[str, str], subject: str = "Re: Catching up?", body: str = "Hello"
) -> bytes:
    return build(
        ("From", "Ada Lovelace <Ada@Example.org>"),
        ("To", "Dana Reyes <dana@talent.example>"),
        ("Subject", subject),
        ("Date", "Fri, 18 Dec 2026 10:15:00 +0100"),
        ("Message-ID", "<reply-1@example.org>"),
        *extra,
        body=body,
    )


def dsn(
    action: str, status: str, diagnostic: str = "", *, original: str = "", extra: str = ""
) -> bytes:
    recipient_fields = (
        f"{original}Final-Recipient: rfc822; Jane.Doe@Example.com\r\n"
        f"Action: {action}\r\nStatus: {status}\r\n"
        + (f"Diagnostic-Code: smtp; {diagnostic}\r\n" if diagnostic else "")
    )
    body = (
        "--BOUNDARY\r\nContent-Type: text/plain\r\n\r\n"
        "This is the mail system at host mx.example.com.\r\n\r\n"
        f"<jane.doe@example.com>: {diagnostic or 'see report'}\r\n\r\n"
        "--BOUNDARY\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.com\r\n\r\n"
        f"{recipient_fields}{extra}\r\n"
        "--BOUNDARY\r\nContent-Type: message/rfc822\r\n\r\n"
        f"From: dana@talent.example\r\nTo: jane.doe@example.com\r\nMessage-ID: <{OUR_ID}>\r\n"
        "Subject: Catching up?\r\n\r\nHi Jane\r\n"
        "--BOUNDARY--\r\n"
    )
    return build(
        ("Return-Path", "<>"),
        ("From", "MAILER-DAEMON@mx.example.com (Mail Delivery System)"),
        ("To", "dana@talent.example"),
        ("Subject", "Undelivered Mail Returned to Sender"),
        ("Auto-Submitted", "auto-replied"),
        ("Content-Type", 'multipart/report; report-type=delivery-status; boundary="BOUNDARY"'),
        body=body,
    )


def notice(
    body: str,
    *,
    sender: str = "MAILER-DAEMON@mx.example.com",
    subject: str = "failure notice",
    null_return_path: bool = True,
    extra: tuple[tuple[str, str], ...] = (),
) -> bytes:
    headers = [("From", sender), ("To", "dana@talent.example"), ("Subject", subject), *extra]
    if null_return_path:
        headers.insert(0, ("Return-Path", "<>"))
    return build(*headers, body=body)


def kind(raw: bytes) -> InboundKind:
    return classify(raw, received=RECEIVED).kind


# --- bounces: RFC 3464 ------------------------------------------------------------------------


def test_dsn_failed_permanent_is_hard_with_facts():
    result = classify(dsn("failed", "5.1.1", "550 5.1.1 <jane.doe@example.com>: User unknown"))
    assert result.kind is InboundKind.BOUNCE
    assert result.bounce == "hard"
    assert result.recipient == "jane.doe@example.com"
    assert result.status == "5.1.1"
    assert result.diagnostic == "550 5.1.1 <jane.doe@example.com>: User unknown"
    assert result.original_message_ids == (OUR_ID,)
    assert result.reason == "RFC 3464 delivery report"


def test_dsn_delayed_is_soft():
    result = classify(dsn("delayed", "4.4.7", "Connection timed out"))
    assert (result.kind, result.bounce) == (InboundKind.BOUNCE, "soft")
    assert "delayed" in result.reason


def test_dsn_failed_with_4xx_status_is_soft():
    assert classify(dsn("failed", "4.0.0", "temporary failure")).bounce == "soft"


@pytest.mark.parametrize(
    ("status", "diagnostic"),
    [
        ("5.2.2", "552 5.2.2 Mailbox full"),
        ("5.0.0", "550 Requested action aborted: user is over quota"),
        ("5.2.3", "maildir delivery failed: diskspace quota exceeded"),
    ],
)
def test_dsn_mailbox_full_is_soft(status, diagnostic):
    assert classify(dsn("failed", status, diagnostic)).bounce == "soft"


def test_dsn_prefers_original_recipient_the_address_we_wrote_to():
    raw = dsn(
        "failed",
        "5.1.1",
        "User unknown",
        original="Original-Recipient: rfc822;Jane@Alias.example\r\n",
    )
    assert classify(raw).recipient == "jane@alias.example"


def test_dsn_lists_every_failed_recipient():
    second = "\r\nFinal-Recipient: rfc822; bob@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    result = classify(dsn("failed", "5.1.1", "User unknown", extra=second))
    assert result.recipients == ("jane.doe@example.com", "bob@example.net")


def test_dsn_mixing_a_delay_and_a_failure_reports_the_failure():
    failure = "\r\nFinal-Recipient: rfc822; bob@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    result = classify(dsn("delayed", "4.4.7", extra=failure))
    assert (result.bounce, result.recipient, result.status) == ("hard", "bob@example.net", "5.1.1")


def test_dsn_that_reports_delivery_is_not_a_bounce():
    result = classify(dsn("delivered", "2.0.0"))
    assert result.kind is InboundKind.OTHER
    assert "delivered" in result.reason


def test_dsn_with_only_returned_headers_names_the_original():
    raw = dsn("failed", "5.1.1").replace(b"message/rfc822", b"text/rfc822-headers")
    assert classify(raw).original_message_ids == (OUR_ID,)


def test_bounce_with_bulk_precedence_stays_a_bounce():
    raw = dsn("failed", "5.1.1").replace(b"Auto-Submitted", b"Precedence: bulk\r\nAuto-Submitted")
    assert kind(raw) is InboundKind.BOUNCE


# --- bounces: vendor formats ------------------------------------------------------------------

QMAIL = """Hi. This is the qmail-send program at mx.example.com.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<jane@example.com>:
Sorry, no mailbox here by that name. (#5.1.1)

--- Below this line is a copy of the message.

Return-Path: <dana@talent.example>
Message-ID: <abc123@talent.example>
Subject: Catching up?
"""

EXCHANGE = """Delivery has failed to these recipients or groups:

Jane Doe (jane@example.com)
The e-mail address you entered couldn't be found.

Diagnostic information for administrators:
Generating server: mail.example.com
jane@example.com
#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##
"""

GMAIL = """Address not found

Your message wasn't delivered to jane@example.com because the address couldn't be found, or is
unable to receive mail.

The response from the remote server was:
550 5.1.1 The email account that you tried to reach does not exist.
"""

YAHOO = """Sorry, we were unable to deliver your message to the following address.

<jane@example.com>:
Remote host said: 550 5.1.1 <jane@example.com>... User unknown [RCPT_TO]
"""

POSTFIX = """This is the mail system at host mx.example.com.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

<jane@example.com>: host mx.example.net[192.0.2.1] said: 550 5.1.1 <jane@example.com>:
    Recipient address rejected: User unknown in virtual mailbox table
"""

SENDMAIL = """The original message was received at Thu, 17 Dec 2026 11:16:05 +0300

   ----- The following addresses had permanent fatal errors -----
<jane@example.com>
    (reason: 550 5.1.1 <jane@example.com>... User unknown)
"""

EXIM = """This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its recipients. This is a
permanent error. The following address(es) failed:

  jane@example.com
    SMTP error from remote mail server after RCPT TO:<jane@example.com>:
    550 5.1.1 User unknown
"""


@pytest.mark.parametrize(
    ("body", "sender", "subject", "vendor"),
    [
        (QMAIL, "MAILER-DAEMON@mx.example.com", "failure notice", "qmail"),
        (EXCHANGE, "postmaster@example.com", "Undeliverable: Catching up?", "Exchange"),
        (
            GMAIL,
            "Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
            "Delivery Status Notification (Failure)",
            "Gmail",
        ),
        (YAHOO, "MAILER-DAEMON@yahoo.com", "Failure Notice", "Yahoo"),
        (
            POSTFIX,
            "MAILER-DAEMON@mx.example.com (Mail Delivery System)",
            "Undelivered Mail Returned to Sender",
            "Postfix",
        ),
        (
            SENDMAIL,
            "Mail Delivery Subsystem <MAILER-DAEMON@mx.example.com>",
            "Returned mail: see transcript for details",
            "Sendmail",
        ),
        (
            EXIM,
            "Mail Delivery System <Mailer-Daemon@mx.example.com>",
            "Mail delivery failed: returning message to sender",
            "Exim",
        ),
    ],
)
def test_vendor_notice_is_a_hard_bounce_with_recipient(body, sender, subject, vendor):
    result = classify(notice(body, sender=sender, subject=subject))
    assert result.kind is InboundKind.BOUNCE
    assert result.bounce == "hard"
    assert result.recipient == "jane@example.com"
    assert result.reason.startswith(vendor)


def test_exchange_online_html_only_notice():
    html = (
        '<p><b>Your message to <a href="mailto:jane@contoso.com">jane@contoso.com</a> '
        "couldn't be delivered.</b></p><p>jane wasn't found at contoso.com.</p>"
        "<p>Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound'</p>"
    )
    raw = build(
        ("Return-Path", "<>"),
        (
            "From",
            "Microsoft Outlook <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@contoso.com>",
        ),
        ("To", "dana@talent.example"),
        ("Subject", "Undeliverable: Catching up?"),
        body=html,
        content_type="text/html; charset=utf-8",
    )
    result = classify(raw)
    assert (result.kind, result.bounce, result.recipient) == (
        InboundKind.BOUNCE,
        "hard",
        "jane@contoso.com",
    )
    assert result.status == "5.1.10"


def test_qmail_notice_names_the_quoted_original_and_status():
    result = classify(notice(QMAIL))
    assert result.original_message_ids == (OUR_ID,)
    assert result.status == "5.1.1"
    assert result.diagnostic == "Sorry, no mailbox here by that name. (#5.1.1)"


def test_x_failed_recipients_header_names_the_recipient():
    raw = notice(
        EXIM.replace("jane@example.com", "someone"),
        extra=(("X-Failed-Recipients", "Jane@Example.com"),),
    )
    assert classify(raw).recipient == "jane@example.com"


def test_gmail_delay_warning_is_soft():
    body = (
        "THIS IS A WARNING MESSAGE ONLY.\n\nYOU DO NOT NEED TO RESEND YOUR MESSAGE.\n\n"
        "Delivery to the following recipient has been delayed:\n\n     jane@example.com\n\n"
        "Message will be retried for 2 more day(s)\n"
    )
    raw = notice(
        body,
        sender="Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
        subject="Delivery Status Notification (Delay)",
    )
    result = classify(raw)
    assert (result.kind, result.bounce, result.recipient) == (
        InboundKind.BOUNCE,
        "soft",
        "jane@example.com",
    )


@pytest.mark.parametrize(
    "reason",
    [
        "552 Requested mail action aborted: exceeded storage allocation",
        "452 4.2.2 The email account that you tried to reach is over quota",
        "550 5.2.2 mailbox full",
    ],
)
def test_mailbox_full_from_postmaster_is_soft(reason):
    body = f"Delivery to the following recipient failed permanently:\n\n     jane@example.com\n\n{reason}\n"
    raw = notice(
        body, sender="postmaster@example.com", subject="Delivery Status Notification (Failure)"
    )
    assert classify(raw).bounce == "soft"


def test_null_return_path_with_bounce_content_from_any_sender():
    raw = notice(QMAIL, sender="bounce@rediffmail.com")
    assert kind(raw) is InboundKind.BOUNCE


def test_null_return_path_alone_is_not_a_bounce():
    raw = notice(
        "Thanks for your note, I'll get back to you.",
        sender="Ada <ada@example.org>",
        subject="Re: Catching up?",
    )
    assert kind(raw) is InboundKind.REPLY


def test_person_writing_about_a_failed_delivery_is_a_reply():
    body = "My colleague said your message could not be delivered to her. Her address is new."
    assert kind(person(body=body)) is InboundKind.REPLY


# --- auto-replies -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (("Auto-Submitted", "auto-replied"), "Auto-Submitted: auto-replied"),
        (("Auto-Submitted", "auto-generated"), "Auto-Submitted: auto-generated"),
        (("X-Autoreply", "yes"), "X-Autoreply header"),
        (("X-Autorespond", "Vacation"), "X-Autorespond header"),
        (("X-Autogenerated", "Reply"), "X-Autogenerated: Reply"),
        (("Precedence", "auto_reply"), "Precedence: auto_reply"),
        (("Precedence", "bulk"), "Precedence: bulk"),
        (("Precedence", "junk"), "Precedence: junk"),
        (
            ("X-MS-Exchange-Inbox-Rules-Loop", "jane@example.com"),
            "X-MS-Exchange-Inbox-Rules-Loop header",
        ),
    ],
)
def test_auto_reply_headers(header, reason):
    result = classify(person(header))
    assert result.kind is InboundKind.AUTO_REPLY
    assert result.reason == reason


def test_auto_submitted_no_is_a_person():
    assert kind(person(("Auto-Submitted", "no"))) is InboundKind.REPLY


def test_auto_response_suppress_alone_is_not_an_auto_reply():
    # Outlook sets it on ordinary mail to ask *others* not to auto-reply
    assert kind(person(("X-Auto-Response-Suppress", "All"))) is InboundKind.REPLY


@pytest.mark.parametrize(
    "subject",
    [
        "Automatic reply: Catching up?",
        "Auto: Catching up?",
        "Out of Office: Catching up?",
        "Out of the office until January",
        "Autoreply: Catching up?",
        "AutoReply",
        "Abwesenheitsnotiz: Catching up?",
        "Automatische Antwort: Catching up?",
        "Réponse automatique : Catching up?",
        "Absence: Catching up?",
        "Respuesta automática: Catching up?",
        "Fuera de la oficina: Catching up?",
        "Risposta automatica: Catching up?",
        "Automatisch antwoord: Catching up?",
        "Afwezig: Catching up?",
    ],
)
def test_auto_reply_subjects(subject):
    result = classify(person(subject=subject))
    assert result.kind is InboundKind.AUTO_REPLY
    assert result.reason == "auto-reply subject"


def test_out_of_office_wording_without_headers_is_an_auto_reply():
    raw = person(
        subject="Catching up?", body="Thank you for your email. I am currently out of the office."
    )
    assert kind(raw) is InboundKind.AUTO_REPLY


def test_person_mentioning_holiday_in_a_reply_is_a_reply():
    raw = person(body="I'm on vacation next week, but happy to talk after that!")
    assert kind(raw) is InboundKind.REPLY


def test_auto_reply_reads_the_return_date_relative_to_received():
    raw = person(
        ("Auto-Submitted", "auto-replied"),
        subject="Out of office",
        body="I am away until 5 January and will answer when I am back.",
    )
    result = classify(raw, received=RECEIVED)
    assert result.return_date == date(2027, 1, 6)


def test_auto_reply_without_received_uses_its_date_header():
    raw = person(("Auto-Submitted", "auto-replied"), body="I'm back on 3 January.")
    assert classify(raw).return_date == date(2027, 1, 3)


def test_auto_reply_is_never_an_unsubscribe():
    raw = person(
        ("Auto-Submitted", "auto-replied"),
        subject="Automatic reply: unsubscribe",
        body="Unsubscribe\nI am out of the office.",
    )
    assert kind(raw) is InboundKind.AUTO_REPLY


# --- unsubscribes -----------------------------------------------------------------------------

ARF_BODY = f"""--ARF\r
Content-Type: text/plain\r
\r
This is an email abuse report for an email message received from IP 192.0.2.1.\r
--ARF\r
Content-Type: message/feedback-report\r
\r
Feedback-Type: abuse\r
User-Agent: SomeGenerator/1.0\r
Version: 1\r
Original-Rcpt-To: <Jane@Example.com>\r
\r
--ARF\r
Content-Type: message/rfc822\r
\r
From: dana@talent.example\r
To: jane@example.com\r
Message-ID: <{OUR_ID}>\r
Subject: Catching up?\r
\r
Hi Jane\r
--ARF--\r
"""


def test_arf_complaint_is_an_unsubscribe():
    raw = build(
        ("From", "feedback@mailbox.example"),
        ("To", "abuse@talent.example"),
        ("Subject", "Abuse report"),
        ("Content-Type", 'multipart/report; report-type=feedback-report; boundary="ARF"'),
        body=ARF_BODY,
    )
    result = classify(raw)
    assert result.kind is InboundKind.UNSUBSCRIBE
    assert result.recipient == "jane@example.com"
    assert result.original_message_ids == (OUR_ID,)
    assert result.reason == "ARF feedback report (abuse)"


@pytest.mark.parametrize(
    ("subject", "body"),
    [
        ("unsubscribe", ""),
        ("Re: Unsubscribe", "Sent from my iPhone"),
        (
            "Re: Catching up?",
            "Remove me\n\nOn Fri, Dec 18, 2026 at 9:00 AM Dana <dana@talent.example> wrote:\n> Hi",
        ),
        ("Re: Catching up?", "STOP"),
        ("Re: Catching up?", "Please unsubscribe me from this list."),
        ("Re: Catching up?", "Please stop emailing me."),
        ("Re: Catching up?", "opt out"),
    ],
)
def test_short_clear_requests_are_unsubscribes(subject, body):
    result = classify(person(subject=subject, body=body))
    assert result.kind is InboundKind.UNSUBSCRIBE, result.reason


def test_mail_to_an_unsubscribe_address_is_an_unsubscribe():
    raw = build(
        ("From", "jane@example.com"),
        ("To", "unsubscribe+tok123@talent.example"),
        ("Subject", ""),
        body="",
    )
    result = classify(raw)
    assert result.kind is InboundKind.UNSUBSCRIBE
    assert result.reason == "sent to an unsubscribe address"


def test_reply_mentioning_unsubscribe_in_a_sentence_is_a_reply():
    body = "Thanks! No need to unsubscribe me, I am still interested in the staff engineer role."
    assert kind(person(body=body)) is InboundKind.REPLY


# --- other ------------------------------------------------------------------------------------


def test_bulk_newsletter_is_other():
    raw = build(
        ("From", "Weekly Digest <digest@news.example>"),
        ("To", "dana@talent.example"),
        ("Subject", "This week in hiring"),
        ("List-Id", "<digest.news.example>"),
        ("List-Unsubscribe", "<https://news.example/u/123>"),
        ("Precedence", "bulk"),
        body="Top stories this week...",
    )
    result = classify(raw)
    assert result.kind is InboundKind.OTHER
    assert "List-Id" in result.reason


def test_no_reply_sender_is_other():
    raw = build(
        ("From", "LinkedIn <no-reply@linkedin.example>"),
        ("To", "dana@talent.example"),
        ("Subject", "You appeared in 9 searches"),
        body="See who's looking",
    )
    assert kind(raw) is InboundKind.OTHER


def test_read_receipt_is_other():
    raw = build(
        ("From", "jane@example.com"),
        ("Subject", "Read: Catching up?"),
        ("Content-Type", 'multipart/report; report-type=disposition-notification; boundary="B"'),
        body="--B\r\nContent-Type: message/disposition-notification\r\n\r\n"
        "Disposition: manual-action/MDN-sent-manually; displayed\r\n--B--\r\n",
    )
    assert kind(raw) is InboundKind.OTHER


@pytest.mark.parametrize("raw", [b"", b"   \r\n\r\n ", b"\x00\x01\x02 not an email at all"])
def test_empty_or_headerless_input_is_other(raw):
    result = classify(raw)
    assert result.kind is InboundKind.OTHER
    assert result.reason


# --- replies ----------------------------------------------------------------------------------


def test_reply_facts():
    raw = person(
        ("In-Reply-To", f"<{OUR_ID}>"),
        ("References", f"<root@talent.example> <{OUR_ID}>"),
        subject="=?utf-8?q?Re=3A_Caf=C3=A9_next_week=3F?=",
        body="Sounds good, see you then!\n\nOn Thu, Dec 17, 2026 at 9:00 AM Dana Reyes <dana@talent.example> wrote:\n> Coffee?",
    )
    result = classify(raw)
    assert result == Classification(
        kind=InboundKind.REPLY,
        message_id="reply-1@example.org",
        in_reply_to=(OUR_ID, "root@talent.example"),
        from_addr="ada@example.org",
        subject="Re: Café next week?",
        date=datetime(2026, 12, 18, 9, 15, tzinfo=UTC),
        reply_text="Sounds good, see you then!",
        reason="In-Reply-To/References headers",
    )


def test_reply_subject_alone_makes_a_reply():
    result = classify(person())
    assert (result.kind, result.reason) == (InboundKind.REPLY, "reply subject")


def test_fresh_message_from_a_person_is_a_reply():
    result = classify(person(subject="Question about the role"))
    assert (result.kind, result.reason) == (InboundKind.REPLY, "message from a person")


def test_html_only_reply_uses_the_html_text():
    html = (
        '<div dir="ltr">Yes, Tuesday works.</div><div class="gmail_quote">'
        "On Thu, Dec 17, 2026 at 9:00 AM Dana wrote:<br><blockquote>Tuesday?</blockquote></div>"
    )
    raw = person(("Content-Type", "text/html; charset=utf-8"), body=html)
    assert classify(raw).reply_text == "Yes, Tuesday works."


def test_multipart_reply_prefers_the_plain_text_part():
    body = (
        "--ALT\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlain answer\r\n"
        "--ALT\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>HTML answer</p>\r\n--ALT--\r\n"
    )
    raw = person(("Content-Type", 'multipart/alternative; boundary="ALT"'), body=body)
    assert classify(raw).reply_text == "Plain answer"


# --- robustness -------------------------------------------------------------------------------


def test_unknown_charset_and_invalid_bytes():
    raw = (
        b"From: a@example.org\r\nSubject: =?x-klingon?q?qapla=27?= Re: hi\r\n"
        b"Content-Type: text/plain; charset=x-klingon\r\n\r\nHello \xff\xfe\xfa there"
    )
    result = classify(raw)
    assert result.kind is InboundKind.REPLY
    assert result.reply_text.startswith("Hello")


def test_non_text_codec_names_as_charset_are_ignored():
    raw = b"From: a@example.org\r\nSubject: Re: x\r\nContent-Type: text/plain; charset=base64\r\n\r\nHello"
    assert classify(raw).reply_text == "Hello"


def test_deeply_nested_multiparts_do_not_recurse_forever():
    depth = 500
    body = "".join(
        f'--b{i}\r\nContent-Type: multipart/mixed; boundary="b{i + 1}"\r\n\r\n'
        for i in range(depth)
    )
    raw = person(("Content-Type", 'multipart/mixed; boundary="b0"'), body=body + "Hello\r\n")
    assert kind(raw) is InboundKind.REPLY


def test_giant_header_section():
    raw = b"From: a@example.org\r\nSubject: Re: x\r\nX-Junk: " + b"A" * 2_000_000 + b"\r\n\r\nHello"
    assert isinstance(classify(raw), Classification)


def test_multipart_without_boundary_is_read_as_text():
    raw = person(("Content-Type", "multipart/mixed"), body="Hello there")
    assert classify(raw).reply_text == "Hello there"


def test_broken_base64_body():
    raw = person(("Content-Transfer-Encoding", "base64"), body="SGVsbG8gdGhlcmU=!!!@@@ SGk")
    assert kind(raw) is InboundKind.REPLY


# --- the fast paths of the parser equal the plain definitions they replace ----------------------


def test_head_end_is_the_first_blank_line_regex():
    """parsing.head_end (two substring searches) against the regex it replaces, on every short
    string of CR, LF and text, with every search limit."""
    import random
    import re

    from nurture_mail.replies.parsing import head_end

    blank_line = re.compile(rb"\r?\n\r?\n")
    rng = random.Random(11)
    for _ in range(20_000):
        raw = bytes(rng.choice(b"\r\n\r\na :") for _ in range(rng.randint(0, 14)))
        limit = rng.randint(0, 16)
        m = blank_line.search(raw, 0, limit)
        assert head_end(raw, limit) == ((m.start(), m.end()) if m else None), (raw, limit)


CASELESS_WORDS = ["Undeliverable", "RETURNED MAIL", "out of the office", "Réponse automatique",
                  "RÉPONSE AUTOMATIQUE", "nicht im Büro", "NICHT IM BURO", "Außer Haus", "AUSSER HAUS",
                  "автоматический ответ", "Mail Delivery Subsystem", "mailer-daemon", "İstanbul", "ſtatus",
                  "\u212aelvin", "i am on leave", "hello", "Re:", "  ", "\t", "é"]


@pytest.mark.parametrize("pattern", [
    r"undeliver|returned mail|mail delivery (?:subsystem|system)|mailer-daemon",
    r"out of (?:the )?office|r[ée]ponse automatique|автоматический ответ|auto[- ]?reply",
    r"\b(?:nicht im b[üu]ro|au[sß]er haus|on leave)\b",
    r"\bi am\s+(?:on leave|out of (?:the )?office)|status",
])
def test_caseless_answers_as_re_ignorecase(pattern):
    """Caseless (lower-cased ASCII text, case-sensitive pattern) finds exactly what
    re.IGNORECASE finds, on ASCII and non-ASCII text in any letter case."""
    import random
    import re

    from nurture_mail.replies.parsing import Caseless

    caseless, reference = Caseless(pattern), re.compile(pattern, re.I)
    rng = random.Random(pattern)
    found = 0
    for _ in range(3_000):
        words = (rng.choice(CASELESS_WORDS) for _ in range(rng.randint(0, 4)))
        text = " ".join("".join(c.upper() if rng.random() < 0.4 else c for c in w) for w in words)
        expected = reference.search(text) is not None
        assert caseless.found(text) == expected, text
        found += expected
    assert 100 < found < 2_900  # both answers were exercised


def test_caseless_refuses_patterns_it_cannot_lower():
    from nurture_mail.replies.parsing import Caseless

    for pattern in (r"\S+@", "Undeliverable", "ſtatus", "\u212aelvin"):
        with pytest.raises(ValueError):
            Caseless(pattern)


def test_header_date_equals_the_zone_aware_conversion():
    """header_date subtracts the offset itself; the answer is what building the datetime in
    timezone(offset) and converting to UTC gives, refusals (offsets of a day, overflow) included."""
    from datetime import timedelta, timezone

    from nurture_mail.replies.parsing import header_date

    for value, fields in [
        ("Mon, 1 Mar 2027 10:00:00 +0100", (2027, 3, 1, 10, 0, 0, 60)),
        ("1 Mar 2027 10:00 -0530", (2027, 3, 1, 10, 0, 0, -330)),
        ("Tue, 31 Dec 2024 23:59:59 -2359", (2024, 12, 31, 23, 59, 59, -1439)),
        ("1 Jan 2027 00:00:00 +0075", (2027, 1, 1, 0, 0, 0, 75)),
        ("31 Dec 9999 23:00:00 -0200", None),  # beyond datetime.max in UTC
    ]:
        if fields is None:
            assert header_date(value) is None
            continue
        *wall, minutes = fields
        expected = datetime(*wall, tzinfo=timezone(timedelta(minutes=minutes))).astimezone(UTC)
        got = header_date(value)
        assert got == expected and got.tzinfo is UTC and got.utcoffset() == timedelta(0)
    assert header_date("1 Mar 2027 10:00:00 +2400") is None  # timezone() refuses a day's offset
