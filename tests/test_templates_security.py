"""Hostile templates: sandbox escapes are refused, huge work is refused before it happens.

No timing assertions: each case must fail fast by design (budgets checked before the work);
the timeout marker only keeps a regression from hanging the suite.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nurture_mail.errors import TemplateError
from nurture_mail.templates import TemplateSet

SECRET = "s3cr3t-api-key"

ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ candidate.__class__ }}",
    "{{ candidate._data }}",
    "{{ '{0.__class__}'.format(candidate) }}",
    "{{ '{0._data}'.format_map(candidate) }}",
    "{{ ('{0.__class__}' | attr('format'))(candidate) }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__.os }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ range.__globals__ }}",
    "{{ self.__init__.__globals__ }}",
    "{{ lipsum.__globals__ }}",
    "{{ config }}",
    "{{ request }}",
    "{{ candidate.first_name | safe }}",
    "{% autoescape false %}{{ candidate.first_name }}{% endautoescape %}",
    "{{ candidate.tags.append(1) }}",
]

HUGE = [
    "{{ 'a' * 10**9 }}",
    "{{ 9**(9**9) }}",
    "{{ 2 ** (10 ** 8) }}",
    "{{ (10**4000) * (10**4000) }}",
    "{{ range(10**9) | list }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}",
    "{% set ns = namespace(s='x') %}{% for i in range(80) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}{{ ns.s | length }}",
    "{% set ns = namespace(s=[1]) %}{% for i in range(80) %}{% set ns.s = [ns.s, ns.s] %}"
    "{% endfor %}{{ ns.s }}",
    "{% set ns = namespace(s=[1]) %}{% for i in range(80) %}{% set ns.s = ns.s + ns.s %}"
    "{% endfor %}{{ ns.s | length }}",
    "{{ 'a'.ljust(10**9) }}",
    "{{ 'a' | center(10**9) }}",
    "{{ 'x' | indent(10**9) }}",
    "{{ '%999999999s' | format(1) }}",
    "{{ '%999999999s' % 1 }}",
    "{{ ('\t' * 100000).expandtabs(100000) }}",
    "{{ ('x' * 100000).replace('', 'y' * 100000) }}",
    "{{ ('x' * 100000) | replace('', 'y' * 100000) }}",
    "{{ range(100000) | join('x' * 100000) }}",
    "{{ ('a ' * 100000) | wordwrap(2, wrapstring='x' * 1000) }}",
    "{{ [1] | batch(10**9, 0) | list }}",
    "{{ [1] | slice(10**9) | list }}",
    "{{ lipsum(10**9) }}",
    "{% macro m(n) %}{{ m(n) }}{{ m(n) }}{% endmacro %}{{ m(1) }}",
    "{% macro m(n) %}{% for i in range(1000) %}{{ caller() if caller }}{% endfor %}{% endmacro %}"
    "{% call m(1) %}{% call m(1) %}{% call m(1) %}x{% endcall %}{% endcall %}{% endcall %}",
    "{% for x in range(10) recursive %}{{ loop(range(100000)) }}{% endfor %}",
]


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    path = tmp_path / "templates"
    path.mkdir()
    return path


def render(directory: Path, body: str):
    (directory / "t.md").write_text("---\nsubject: s\n---\n" + body + "\n", encoding="utf-8")
    context = {
        "candidate": {"first_name": "<b>Dana</b>", "tags": ["a"], "api_key": SECRET},
        "company": {"name": "Acme", "postal_address": "1 Main St"},
        "unsubscribe_url": "https://u.example/x",
    }
    return TemplateSet(directory).render("t", context)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("body", ESCAPES)
def test_sandbox_escapes_refused(directory: Path, body: str):
    try:
        email = render(directory, body)
    except TemplateError as error:
        assert str(error).startswith("templates/t.md:4: ")
        return
    for part in (email.text, email.html):
        assert SECRET not in part
        assert "<class" not in part and "&lt;class" not in part
        assert "<b>Dana" not in part.replace(email.text, "") or part is email.text


@pytest.mark.timeout(30)
@pytest.mark.parametrize("body", HUGE)
def test_huge_work_refused(directory: Path, body: str):
    with pytest.raises(TemplateError) as error:
        render(directory, body)
    assert str(error.value).startswith("templates/t.md")


def test_errors_are_reported_at_the_offending_line(directory: Path):
    with pytest.raises(TemplateError) as error:
        render(directory, "ok\n\n{{ 'a' * 10**9 }}")
    assert str(error.value) == "templates/t.md:6: repetition result too large"


def test_moderate_templates_still_render(directory: Path):
    body = (
        "{% for i in range(2000) %}{{ i }} {% endfor %}\n\n"
        "{{ ('ab' * 1000) | length }} {{ 2**64 }} {{ [1, 2, 3] | join(', ') }}\n"
        "{{ candidate.first_name | upper }} {{ '%05d' | format(42) }}"
    )
    email = render(directory, body)
    assert "1999" in email.text
    assert "2000 18446744073709551616 1, 2, 3" in email.text
    assert "<B>DANA</B> 00042" in email.text
    assert "&lt;B&gt;DANA&lt;/B&gt;" in email.html
