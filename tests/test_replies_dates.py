"""parse_return_date: the first day back, from out-of-office wording in several languages."""

from __future__ import annotations

from datetime import date

import pytest

from nurture_mail.replies import parse_return_date

# a Friday in December, so phrases without a year land in this year or the next
REF = date(2026, 12, 18)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # English: "back on X" is X, "until X" is the day after X
        ("I will be back on 3 March.", date(2027, 3, 3)),
        ("I'm returning on Monday, March 3rd.", date(2027, 3, 3)),
        ("I am out of the office until 5 January 2027.", date(2027, 1, 6)),
        ("Out of office until 2027-01-05", date(2027, 1, 6)),
        ("I will be back in the office on December 28th", date(2026, 12, 28)),
        ("Back on 12/28", date(2026, 12, 28)),  # only M/D reads as a date
        ("Back on 28/12", date(2026, 12, 28)),  # only D/M reads as a date
        ("Back on 03/01", date(2027, 1, 3)),  # both read; 3 January is sooner than 1 March
        ("I'm away 21-31 December", date(2027, 1, 1)),
        ("Returning Monday", date(2026, 12, 21)),
        ("back on Friday", date(2026, 12, 25)),  # written on a Friday: next week's
        ("I'll be back tomorrow", date(2026, 12, 19)),
        ("I will be available again from 4 January", date(2027, 1, 4)),
        ("Out until Jan 4, back on Jan 5 2027", date(2027, 1, 5)),  # "back" wins
        ("I am on leave through 10 January", date(2027, 1, 11)),
        # "not back until X" is back on X, not the day after
        ("I will not return until 01/04/2027.", date(2027, 1, 4)),
        ("I won't be back until Monday", date(2026, 12, 21)),
        # German
        ("Ich bin bis zum 3. März nicht im Büro.", date(2027, 3, 4)),
        ("Ab dem 05.01.2027 bin ich wieder erreichbar.", date(2027, 1, 5)),
        ("ab dem 05.01.2027 wieder im Haus", date(2027, 1, 5)),
        ("Ich bin bis 05.01. im Urlaub.", date(2027, 1, 6)),
        ("Ab Montag, 4. Januar bin ich wieder im Büro", date(2027, 1, 4)),
        ("Ich bin vom 21. bis 31. Dezember abwesend", date(2027, 1, 1)),
        ("Am 7. Januar bin ich zurück.", date(2027, 1, 7)),
        # French
        ("Je suis absent jusqu'au 3 mars.", date(2027, 3, 4)),
        ("Je serai de retour le 5 janvier 2027.", date(2027, 1, 5)),
        ("Absent du 21 au 31 décembre", date(2027, 1, 1)),
        ("de retour le lundi 4 janvier", date(2027, 1, 4)),
        # Spanish
        ("Estaré fuera de la oficina hasta el 5 de enero de 2027.", date(2027, 1, 6)),
        ("Estaré de vuelta el 7 de enero.", date(2027, 1, 7)),
        # Dutch
        ("Ik ben afwezig tot en met 3 januari.", date(2027, 1, 4)),
        ("Ik ben terug op 4 januari.", date(2027, 1, 4)),
        ("Vanaf 4 januari ben ik weer aanwezig.", date(2027, 1, 4)),
        # Italian
        ("Sarò fuori ufficio fino al 6 gennaio.", date(2027, 1, 7)),
        ("Rientrerò il 7 gennaio.", date(2027, 1, 7)),
    ],
)
def test_return_dates(text, expected):
    assert parse_return_date(text, REF) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Thank you for your email. I am out of the office.",
        "Your message of 3 March has been received.",  # a date, but not a return date
        "Call me on 24/7 support: +371 2 6461101",
        "I am not back on Monday, sorry",
        "Back on 31 February",  # no such day
    ],
)
def test_no_return_date(text):
    assert parse_return_date(text, REF) is None


def test_date_without_year_already_past_this_year_is_next_year():
    assert parse_return_date("back on 2 January", date(2026, 12, 18)) == date(2027, 1, 2)


def test_date_without_year_on_the_reference_day_is_that_day():
    assert parse_return_date("back on 18 December", REF) == REF


def test_29_february_waits_for_a_leap_year():
    assert parse_return_date("back on 29 February", REF) == date(2028, 2, 29)
