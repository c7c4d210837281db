"""Sandbox escapes not in tests/test_templates_security.py: other routes to Python internals
(`attr`, `map(attribute=...)`, loop/macro/caller objects, dates, `self`), mutation of the
context, and filters that would dump an object. Each is refused (TemplateError at the
template) or renders nothing of Python's insides and nothing from the environment."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from nurture_mail.errors import TemplateError
from nurture_mail.templates import TemplateSet

ENV_SECRET = "sandbox-env-secret-9f2"
LEAKS = ("<class", "&lt;class", "<function", "&lt;function", "<built-in", "&lt;built-in", "<module",
         "&lt;module", "<bound", "&lt;bound", "mappingproxy", "__", ENV_SECRET, "_data", "<code", "&lt;code",
         "<method", "&lt;method", "<generator", "&lt;generator")
ESCAPES = [
    "{{ candidate | attr('_data') }}",
    "{{ candidate | attr('__class__') }}",
    "{{ candidate | attr('__init__') | attr('__globals__') }}",
    "{{ candidate.tags | map(attribute='__class__') | list }}",
    "{{ candidate.tags | map('attr', '__class__') | list }}",
    "{{ candidate.tags | selectattr('__class__') | list }}",
    "{{ candidate.tags | sort(attribute='__class__.__mro__') }}",
    "{{ candidate.tags | groupby('__class__') }}",
    "{{ self._TemplateReference__context }}",
    "{{ self.__class__ }}",
    "{% for x in [1] %}{{ loop.__class__ }}{{ loop._iterator }}{% endfor %}",
    "{% macro m() %}{% endmacro %}{{ m.__globals__ }}{{ m._func }}{{ m.__code__ }}",
    "{% macro m() %}{{ caller._func.__globals__ }}{% endmacro %}{% call m() %}x{% endcall %}",
    "{{ namespace().__class__.__mro__ }}",
    "{{ cycler(1).__class__.__init__.__globals__ }}",
    "{{ joiner().__class__.__init__.__globals__ }}",
    "{{ ''.__class__.__base__.__subclasses__() }}",
    "{{ ().__class__.__bases__[0].__subclasses__() }}",
    "{{ today.__class__ }}{{ today.__reduce_ex__(2) }}",
    "{{ (candidate.tags | first).__class__ }}",
    "{{ unsubscribe_url.__class__.__mro__ }}",
    "{{ company._raw_values() }}",
    "{{ candidate._raw_values() }}",
    "{{ candidate.items() }}",
    "{{ candidate | tojson }}",
    "{{ candidate | dictsort }}",
    "{{ candidate | pprint }}",
    "{{ candidate.tags.__iter__().__class__ }}",
    "{{ candidate.tags.index.__self__.__class__ }}",
    "{% set x = [] %}{{ x.append(1) }}{{ x }}",
    "{% set d = {} %}{{ d.update(a=1) }}{{ d.setdefault('b', 2) }}",
    "{{ candidate.tags.__setitem__(0, 'x') }}",
    "{% set candidate = {'first_name': 'x'} %}{{ candidate.__class__ }}",
    "{{ range.__self__ }}{{ range.__wrapped__ }}",
    "{{ dict.__class__ }}{{ dict(a=1).__class__.__mro__ }}",
    "{{ [].pop() }}",
    "{{ lipsum }}",
    "{{ config }}{{ g }}{{ request }}{{ session }}{{ url_for }}{{ os }}{{ environ }}",
    "{{ '%s' % candidate.__class__ }}",
    "{{ '{0.__class__}' | format(candidate) }}",
    "{% with f = candidate.first_name.__class__ %}{{ f }}{% endwith %}",
    "{% filter upper %}{{ candidate.__class__ }}{% endfilter %}",
    "{{ candidate.first_name.encode('utf-8').decode.__self__.__class__ }}",
]


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    path = tmp_path / "templates"
    path.mkdir()
    return path


@pytest.mark.timeout(30)
@pytest.mark.parametrize("body", ESCAPES)
def test_more_escapes_refused(directory: Path, body: str, monkeypatch):
    monkeypatch.setenv("NURTURE_UNSUBSCRIBE_SECRET", ENV_SECRET)
    (directory / "t.md").write_text("---\nsubject: s\n---\n" + body + "\n", encoding="utf-8")
    context = {
        "candidate": {"first_name": "Dana", "tags": ["a", "b"]},
        "company": {"name": "Acme", "postal_address": "1 Main St"},
        "unsubscribe_url": "https://u.example/x",
        "today": date(2027, 3, 1),
    }
    try:
        email = TemplateSet(directory).render("t", context)
    except TemplateError as error:
        assert error.file == "templates/t.md"
        return
    for part in (email.subject, email.text, email.html):
        for leak in LEAKS:
            assert leak not in part, (leak, part[:500])
