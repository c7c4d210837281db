"""When is the person back? Return dates in out-of-office text.

Every date expression in the text is found first (ISO, 05.01.2027, 3/15, "3 March", "March
3rd", "3. März", "5 de enero", a weekday, "tomorrow"), then the words just before or after it
say what it means: "back on X", "ab X wieder", "de retour le X" give X itself; "until X",
"bis X", "jusqu'au X", "1-5 March" give the day after X. A "back" date wins over an "until"
date. Dates without a year take their next occurrence on or after the reference day.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

MAX_CHARS = 8000

_MONTHS: dict[str, int] = {}
for _number, _names in enumerate(
    (
        "january jan januar jänner jaenner janvier janv enero ene januari gennaio gen janeiro",
        "february feb februar feber février fevrier févr fevr fév febrero februari febbraio "
        "fevereiro",
        "march mar märz maerz mrz mars marzo maart março marco",
        "april apr avril avr abril abr aprile",
        "may mai mayo mei maggio mag maio",
        "june jun juni juin junio giugno giu junho",
        "july jul juli juillet juil julio luglio lug julho",
        "august aug août aout agosto ago augustus",
        "september sept sep septembre septiembre setiembre settembre setembro",
        "october oct oktober okt octobre octubre ottobre ott outubro",
        "november nov novembre noviembre novembro",
        "december dec dezember dez décembre decembre déc diciembre dic dicembre dezembro",
    ),
    start=1,
):
    for _name in _names.split():
        _MONTHS[_name] = _number

_WEEKDAYS: dict[str, int] = {}
for _number, _names in enumerate(
    (
        "monday montag lundi lunes maandag lunedì lunedi segunda-feira",
        "tuesday dienstag mardi martes dinsdag martedì martedi terça-feira",
        "wednesday mittwoch mercredi miércoles miercoles woensdag mercoledì mercoledi quarta-feira",
        "thursday donnerstag jeudi jueves donderdag giovedì giovedi quinta-feira",
        "friday freitag vendredi viernes vrijdag venerdì venerdi sexta-feira",
        "saturday samstag sonnabend samedi sábado sabado zaterdag sabato",
        "sunday sonntag dimanche domingo zondag domenica",
    )
):
    for _name in _names.split():
        _WEEKDAYS[_name] = _number
_WEEKDAY_ABBREVIATIONS = "mon tue tues wed thu thur thurs fri sat sun"  # only before a date
_TOMORROW = ("tomorrow", "morgen", "demain", "mañana", "manana", "domani", "amanhã")


def _alternation(words: list[str]) -> str:
    """A regex matching any of the words, factored as a trie.

    A flat alternation of ~150 month names is tried name by name at every word start; the
    trie form lets the engine reject on the first letters, about ten times faster.
    """
    trie: dict = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def pattern(node: dict) -> str:
        branches = [
            re.escape(char) + pattern(child) for char, child in sorted(node.items()) if char
        ]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return pattern(trie)


_MON = _alternation(list(_MONTHS))
_ORDINAL = r"(?:st|nd|rd|th|er|re|e|ème|eme|º|°|\.)?"
# Every alternative starts a word; the leading guards make the engine skip the middle of
# words and the spaces between them cheaply, which keeps the long name alternations fast.
_DATE = re.compile(
    r"(?<![\w./])(?=\w)(?:"
    r"(?<!-)(?P<iy>\d{4})[-/](?P<im>\d{1,2})[-/](?P<id>\d{1,2})(?![\w/-])"
    rf"|(?P<ad>\d{{1,2}}){_ORDINAL}\s*(?:of\s+|de\s+|-)?(?P<am>{_MON})\b\.?"
    r"(?:,?\s*(?:de\s+)?(?P<ay>\d{4})\b)?"
    rf"|(?P<bm>{_MON})\b\.?\s+(?:the\s+)?(?P<bd>\d{{1,2}})(?:st|nd|rd|th)?\b"
    r"(?:,?\s+(?P<by>\d{4})\b)?"
    r"|(?P<cd>\d{1,2})\.(?P<cm>\d{1,2})\.(?:(?P<cy>\d{4}|\d{2})\b)?"
    r"|(?P<sa>\d{1,2})/(?P<sb>\d{1,2})(?:/(?P<sy>\d{4}|\d{2}))?(?![\w/])"
    r"|(?<!-)(?P<da>\d{1,2})-(?P<db>\d{1,2})-(?P<dy>\d{4}|\d{2})(?![\w-])"
    rf"|(?P<wd>{_alternation(list(_WEEKDAYS) + list(_TOMORROW))})\b"
    rf"|(?P<wa>{_alternation(_WEEKDAY_ABBREVIATIONS.split())})\b"
    r")"
)
# between a weekday and the date it introduces: "Monday, the 3rd of March", "lundi 3 mars"
_WEEKDAY_JOIN = re.compile(r"[\s,.]*(?:(?:the|den|le|el|il|der)\s+)?")
MAX_DATES = 200

_FILLER = (
    r"on|by|in|the|office|at|work|to|again|from|as|of|starting|my|desk|i|will|be|and|"
    r"dem|den|am|im|büro|buero|der|le|au|bureau|à|partir|du|dès|des|el|la|oficina|"
    r"op|het|kantoor|il|in ufficio|dal|a|do|no|escritório"
)
_BACK_CUE = re.compile(
    r"(?:\bback|\breturn(?:ing|s)?|\bresum(?:e|ing)|\bwieder|\bzurück|\bzurueck|"
    r"\bde\s+retour|\bretour|\brentre(?:rai)?|\breviens|\breviendrai|\bde\s+vuelta|"
    r"\bregres\w*|\bvolver\w*|\bvuelvo|\bterug|\bweer|\brientr\w*|\britorn\w*|\bde\s+volta|"
    r"\bvolto|\bretorno|\b(?:available|reachable|erreichbar|disponible|bereikbaar|"
    r"aanwezig|disponibile|in\s+the\s+office|im\s+büro)(?:\s+again)?\s+(?:from|as\s+of|"
    r"starting|ab|à\s+partir\s+du|dès\s+le|vanaf|dal|a\s+partir\s+del?))"
    rf"(?:[\s,]+(?:{_FILLER})\b)*[\s,]*$"
)
_UNTIL_CUE = re.compile(
    r"(?:\buntil|\btill|\btil|\bthrough|\bthru|\bup\s+to\s+and\s+including|"
    r"\bbis(?:\s+(?:einschließlich|einschliesslich|einschl\.?|inkl\.?|inklusive|und\s+mit))?"
    r"(?:\s+(?:zum|zur|am|dem|den))?|\bjusqu['’]?\s*(?:au|à|a)(?:\s+(?:et\s+y\s+compris|inclus))?|"
    r"\bhasta(?:\s+el)?(?:\s+d[ií]a)?|\btot(?:\s+en\s+met)?|\bt/m|\bfino\s+al?|\baté(?:\s+(?:ao|o|dia))?)"
    r"(?:[\s,]+(?:the|le|el|il|y\s+compris|inclus|including|incl\.?|and\s+including))*[\s,]*$"
)
# "1-5 March", "from 3 to 7 June", "du 2 au 6 mai", "vom 1. bis 5. März"
_RANGE_CUE = re.compile(r"\d\S{0,12}(?:\s+[^\s\d]{3,12})?\s*(?:-|–|—|to|au|al|bis|tot|t/m|a)\s*$")
# "ab dem 05.01.2027 wieder erreichbar": the back word follows the date (German, Dutch)
_FROM_BEFORE = re.compile(r"\b(?:ab|vanaf|from|op|am|on)(?:\s+(?:dem|den|de))?\s*$")
_BACK_AFTER = re.compile(
    r"^[\s,.]*(?:[^\s.,]+\s+){0,3}?(?:wieder|weer|zurück|zurueck|terug|back)\b"
)
_NOT_BACK_UNTIL = re.compile(
    r"(?:\bnot|n't)\s+(?:be\s+)?(?:back|return(?:ing)?|in\s+(?:the\s+)?office|available)"
    r"(?:\s+(?:to|in)\s+(?:the\s+)?(?:office|work))?\s+(?:until|till|before)[\s,]*$"
)
_NEGATION = re.compile(r"\b(?:not|nicht|pas|niet|non)\b[^.]{0,25}$")


def parse_return_date(text: str, reference: date) -> date | None:
    """The first day the person is back, from out-of-office text; None when it says none."""
    text = text[:MAX_CHARS].lower()
    matches = []
    for m in _DATE.finditer(text):
        matches.append(m)
        if len(matches) >= MAX_DATES:
            break
    until: date | None = None
    context_start: int | None = None  # where a weekday introducing the next date begins
    for k, match in enumerate(matches):
        start = match.start() if context_start is None else context_start
        context_start = None
        if match["wd"] or match["wa"]:
            following = matches[k + 1] if k + 1 < len(matches) else None
            if following and _WEEKDAY_JOIN.fullmatch(text, match.end(), following.start()):
                context_start = start  # "Monday, March 3rd": the date decides, not the day
                continue
            if match["wa"] or match["wd"] is None:
                continue
        before = text[max(0, start - 70) : start]
        meaning = _meaning(before, text[match.end() : match.end() + 40])
        if meaning is None:
            continue
        when = _resolve(match, reference)
        if when is None:
            continue
        if meaning == "back":
            return when
        if until is None:
            until = when + timedelta(days=1)
    return until


def _meaning(before: str, after: str) -> str | None:
    if _NOT_BACK_UNTIL.search(before):
        return "back"  # "will not return until 4 January" means back on the 4th
    if _BACK_CUE.search(before) and not _NEGATION.search(before[-45:]):
        return "back"
    if _FROM_BEFORE.search(before) and _BACK_AFTER.search(after):
        return "back"
    if _UNTIL_CUE.search(before) or _RANGE_CUE.search(before):
        return "until"
    return None


def _resolve(m: re.Match[str], reference: date) -> date | None:
    g = m.groupdict()
    if g["iy"]:
        return _make(int(g["iy"]), int(g["im"]), int(g["id"]))
    if g["am"]:
        return _with_year(int(g["ad"]), _MONTHS[g["am"]], g["ay"], reference)
    if g["bm"]:
        return _with_year(int(g["bd"]), _MONTHS[g["bm"]], g["by"], reference)
    if g["cd"]:
        return _with_year(int(g["cd"]), int(g["cm"]), g["cy"], reference)
    if g["sa"]:
        return _slashed(int(g["sa"]), int(g["sb"]), g["sy"], reference)
    if g["da"]:
        return _slashed(int(g["da"]), int(g["db"]), g["dy"], reference)
    word = g["wd"]
    if word in _TOMORROW:
        return reference + timedelta(days=1)
    # "back on Monday" written on a Monday means next week's
    ahead = (_WEEKDAYS[word] - reference.weekday() - 1) % 7 + 1
    return reference + timedelta(days=ahead)


def _slashed(a: int, b: int, year: str | None, reference: date) -> date | None:
    """3/15 is M/D and 15/3 is D/M; when both read as dates, the sooner one is meant."""
    day_first = _with_year(a, b, year, reference)
    month_first = _with_year(b, a, year, reference)
    if day_first and month_first:
        if year:  # no "next occurrence" to compare: pick the one nearer the reference
            return min((day_first, month_first), key=lambda d: abs((d - reference).days))
        return min(day_first, month_first)
    return day_first or month_first


def _with_year(day: int, month: int, year: str | None, reference: date) -> date | None:
    if year:
        number = int(year)
        if number < 100:
            number += 2000
        return _make(number, month, day)
    for number in range(reference.year, reference.year + 9):
        when = _make(number, month, day)
        if when is not None and when >= reference:
            return when
        if when is None and not (month == 2 and day == 29):
            return None
    return None


def _make(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None
