"""extract_reply_text and html_to_text: the new text of a reply, in many clients' layouts."""

from __future__ import annotations

import pytest

from nurture_mail.replies import extract_reply_text, html_to_text

ANSWER = "Yes, Tuesday at 10 works for me."


@pytest.mark.parametrize(
    "quoted",
    [
        "> Would Tuesday work?\n> Dana",
        "On Thu, Dec 17, 2026 at 9:00 AM Dana Reyes <dana@talent.example> wrote:\n\n> Would Tuesday work?",
        # Gmail wraps a long attribution over two lines
        "On Thu, Dec 17, 2026 at 9:00 AM Dana Reyes <\ndana@talent.example> wrote:\n> Would Tuesday work?",
        "Am 17.12.2026 um 09:00 schrieb Dana Reyes <dana@talent.example>:\n> Passt Dienstag?",
        "Le jeu. 17 déc. 2026 à 09:00, Dana Reyes <dana@talent.example> a écrit :\n> Mardi ?",
        "El jue, 17 dic 2026 a las 9:00, Dana Reyes (<dana@talent.example>) escribió:\n> ¿Martes?",
        "-----Original Message-----\nFrom: Dana Reyes\nSent: Thursday, December 17, 2026 9:00 AM\n"
        "To: Ada\nSubject: Catching up?\n\nWould Tuesday work?",
        "________________________________\nFrom: Dana Reyes <dana@talent.example>\n"
        "Sent: Thursday, December 17, 2026 9:00 AM\nTo: Ada\nSubject: Catching up?\n\nTuesday?",
        "From: Dana Reyes [mailto:dana@talent.example]\nSent: Thursday, December 17, 2026 9:00 AM\n"
        "To: Ada\nSubject: Catching up?\n\nWould Tuesday work?",
        "Von: Dana Reyes <dana@talent.example>\nGesendet: Donnerstag, 17. Dezember 2026 09:00\n"
        "An: Ada\nBetreff: Catching up?\n\nPasst Dienstag?",
        "De : Dana Reyes <dana@talent.example>\nEnvoyé : jeudi 17 décembre 2026 09:00\n"
        "À : Ada\nObjet : Catching up?\n\nMardi ?",
        "----- Original Message -----\nFrom: dana@talent.example\nTo: ada@example.org\n\nTuesday?",
        "---------- Forwarded message ---------\nFrom: Dana <dana@talent.example>\n\nTuesday?",
    ],
)
def test_quoted_original_is_removed(quoted):
    assert extract_reply_text(f"{ANSWER}\n\n{quoted}\n") == ANSWER


@pytest.mark.parametrize(
    "signature",
    [
        "-- \nAda Lovelace\nAnalyst",
        "--\nAda",
        "Sent from my iPhone",
        "Sent from my iPad",
        "Sent from my Samsung Galaxy smartphone.",
        "Sent from my Android device",
        "Get Outlook for iOS<https://aka.ms/o0ukef>",
        "Von meinem iPhone gesendet",
        "Envoyé de mon iPhone",
        "Enviado desde mi iPhone",
    ],
)
def test_signature_is_removed(signature):
    text = f"{ANSWER}\n\n{signature}\n\nOn Thu, Dec 17, 2026 at 9:00 AM Dana wrote:\n> Tuesday?"
    assert extract_reply_text(text) == ANSWER
    assert extract_reply_text(text, strip_signature=False).startswith(
        f"{ANSWER}\n\n{signature.split()[0]}"
    )


def test_bottom_posted_reply():
    text = "On 17/12/2026 09:00, Dana Reyes wrote:\n> Would Tuesday work?\n> Dana\n\nYes it does.\n"
    assert extract_reply_text(text) == "Yes it does."


def test_interleaved_answers_are_kept():
    text = "Dana wrote:\n> Tuesday?\nYes.\n> 10 or 11?\n11 please.\n"
    assert extract_reply_text(text) == "Yes.\n11 please."


def test_text_without_quote_is_unchanged():
    text = "Hello Dana,\n\nI'd love to hear more.\nFrom: my phone, so short.\n\nAda"
    assert extract_reply_text(text) == text


def test_a_colon_line_in_the_answer_is_kept():
    text = "Here are my answers:\n1. yes\n2. no"
    assert extract_reply_text(text) == text


def test_forward_without_comment_has_no_new_text():
    text = "---------- Forwarded message ---------\nFrom: Dana <dana@talent.example>\n\nHi"
    assert extract_reply_text(text) == ""


@pytest.mark.parametrize(
    "html",
    [
        # Gmail
        '<div dir="ltr">Yes, Tuesday works.</div><br><div class="gmail_quote"><div dir="ltr">'
        "On Thu, Dec 17, 2026 at 9:00 AM Dana &lt;dana@talent.example&gt; wrote:<br></div>"
        '<blockquote class="gmail_quote">Tuesday?</blockquote></div>',
        # Outlook (new): reply header in divRplyFwdMsg
        '<div>Yes, Tuesday works.</div><hr><div id="divRplyFwdMsg"><b>From:</b> Dana<br>'
        "<b>Sent:</b> Thursday<br><b>Subject:</b> Catching up?</div><div>Tuesday?</div>",
        # Outlook (desktop): border-top above the header block
        "<p>Yes, Tuesday works.</p><div style='border:none;border-top:solid #E1E1E1 1.0pt;"
        "padding:3.0pt 0cm 0cm 0cm'><p><b>From:</b> Dana</p></div><p>Tuesday?</p>",
        # Apple Mail / Thunderbird
        "Yes, Tuesday works.<br><div>On 17 Dec 2026, at 09:00, Dana wrote:</div>"
        '<blockquote type="cite"><div>Tuesday?</div></blockquote>',
    ],
)
def test_html_quotes_are_removed(html):
    assert extract_reply_text(html_to_text(html)) == "Yes, Tuesday works."


def test_html_signature_container_is_removed():
    html = (
        '<div>Yes, Tuesday works.</div><div class="gmail_signature">Ada Lovelace<br>Analyst</div>'
    )
    assert extract_reply_text(html_to_text(html)) == "Yes, Tuesday works."


def test_html_to_text_skips_style_and_decodes_entities():
    html = "<html><head><style>p {color: red}</style><title>x</title></head><body><p>Caf&eacute; &amp; tea</p></body></html>"
    assert html_to_text(html) == "Café & tea"
