"""Template fuzzing: random Jinja/Markdown snippets and front matter load, validate and render
to a RenderedEmail or a TemplateError pinned to the template (never another exception, never
a hang), and nothing from outside the sandbox reaches the output."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from hypothesis import strategies as st

from nurture_mail.errors import TemplateError
from nurture_mail.templates import RenderedEmail, TemplateSet

from .fuzz_strategies import INJECTIONS, fuzz, nasty_text

ENV_SECRET = "env-secret-7d1f0c"  # in the environment during the test; must never be rendered
JINJA = [
    "{{ ", " }}", "{% ", " %}", "{# ", " #}", "{{ candidate.first_name }}", "{{ candidate.role }}",
    "{{ candidate.missing }}", "{{ candidate.first_name | default('x') }}", "{{ company.name }}",
    "{{ unsubscribe_url }}", "{{ today }}", "{{ step.number * 2 }}", "{{ candidate.tags | join(',') }}",
    "{% if candidate.first_name %}", "{% else %}", "{% endif %}", "{% for t in candidate.tags %}",
    "{% endfor %}", "{% for i in range(3) %}", "{% set x = 1 %}", "{{ x }}", "{% raw %}", "{% endraw %}",
    "{% include '_partial.md' %}", "{% include 'missing.md' %}", "{% include '../secret.txt' %}",
    "{% include '/etc/passwd' %}", "{% extends '_partial.md' %}", "{% block b %}", "{% endblock %}",
    "{% macro m(a) %}{{ a }}{% endmacro %}", "{{ m(1) }}", "{{ caller() }}", "{% call m(1) %}",
    "{% endcall %}", "{{ ''.__class__ }}", "{{ candidate.__init__ }}", "{{ cycler.__init__.__globals__ }}",
    "{{ 'a' * 10**7 }}", "{{ 10**10**5 }}", "{{ range(10**6) | list }}", "{{ '%s' % candidate }}",
    "{{ candidate | tojson }}", "{{ candidate | pprint }}", "{{ candidate | dictsort }}", "{{ [1,2] | sum }}",
    "{{ 1 / 0 }}", "{{ 'a' + 1 }}", "{{ none.x }}", "{{ candidate.tags[5] }}", "{{ {}['x'] }}",
    "{{ 'x' | int }}", "{{ 'x' | float }}", "{{ -1 | filesizeformat }}", "{{ 'x' | truncate(-1) }}",
    "{{ 'x' | wordwrap(0) }}", "{{ [1] | batch(0) | list }}", "{{ [1] | slice(0) | list }}", "{{ 'x' | indent(-5) }}",
    "{{ 'abc'[::0] }}", "{{ 'x' | center(-1) }}", "{{ '%(a)s' % {} }}", "{{ '%d' | format('x') }}",
    "{{ 'x' | attr('upper')() }}", "{{ 'x' | map('upper') | list }}", "{{ [3,1] | sort(attribute='x') }}",
    "{{ [1] | groupby('x') }}", "{{ 'x' | replace('x') }}", "{{ lipsum() }}", "{{ namespace(a=1).a }}",
    "**bold**", "_em_", "[link](http://x)", "<script>alert(1)</script>", "# heading\n", "> quote\n",
    "```\ncode\n```", "    indented\n", "- item\n", "1. item\n", "![img](x)", "&amp;", "\\", "\n\n", "\r\n",
]
FRONT = [
    "---\n", "subject: ", "subject: \"Hi {{ candidate.first_name }}\"\n", "subject: s\n", "preheader: p\n",
    "subject: [1, 2]\n", "subject: {{\n", "subject: !!python/object:os.system x\n", "...\n", ": :\n",
    "subject: \"{{ candidate.missing }}\"\n", "subject: \"{% for %}\"\n", "preheader: {a: 1}\n", "\t",
    "subject: &a [*a]\n", "\ufeff",
]
snippets = st.lists(st.one_of(st.sampled_from(JINJA), nasty_text, st.sampled_from(INJECTIONS)), max_size=12).map("".join)
front = st.lists(st.sampled_from(FRONT), max_size=6).map("".join)


@st.composite
def template_files(draw):
    head = draw(st.sampled_from(["---\nsubject: s\n---\n", "", "---\n{}---\n"]))
    if "{}" in head:
        head = head.format(draw(front))
    body = draw(snippets)
    partial = draw(snippets)
    step_subject = draw(st.one_of(st.none(), snippets))
    return head + body, partial, step_subject


CONTEXT = {
    "candidate": {"first_name": "<b>Dana</b>\r\nBcc: x@y.z", "role": "Engineer", "tags": ["a", "b"],
                  "email": "dana@example.com"},
    "sender": {"name": "Dana", "email": "dana@talent.example"},
    "company": {"name": "Acme", "postal_address": "1 Main St"},
    "campaign": {"id": "c", "name": "C"},
    "step": {"id": "s", "number": 1},
    "unsubscribe_url": "https://u.example/u/tok",
    "today": "2027-03-01",
}


def check(directory: Path, files) -> None:
    body, partial, step_subject = files
    (directory / "t.md").write_text(body, encoding="utf-8", errors="surrogatepass")
    (directory / "_partial.md").write_text(partial, encoding="utf-8", errors="surrogatepass")
    templates = TemplateSet(directory)
    for error in templates.validate():
        assert isinstance(error, TemplateError)
        assert error.file.startswith("templates/")
    try:
        email = templates.render("t", CONTEXT, subject=step_subject)
    except TemplateError as error:
        assert error.file.startswith("templates/")
        return
    assert isinstance(email, RenderedEmail)
    assert email.subject and "\n" not in email.subject and "\r" not in email.subject
    for part in (email.subject, email.text, email.html):
        assert ENV_SECRET not in part
        assert "root:x:0:0" not in part and "outside-the-sandbox" not in part
    assert "<b>Dana" not in email.html and "<script>" not in email.html


@pytest.mark.timeout(300)
def test_random_templates_and_front_matter(request, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("NURTURE_UNSUBSCRIBE_SECRET", ENV_SECRET)
    (tmp_path / "secret.txt").write_text("outside-the-sandbox")
    directory = tmp_path / "templates"
    directory.mkdir()
    assert os.environ["NURTURE_UNSUBSCRIBE_SECRET"] == ENV_SECRET
    fuzz(request, template_files(), lambda files: check(directory, files))


@pytest.mark.timeout(300)
def test_random_bytes_as_template_files(request, tmp_path: Path):
    directory = tmp_path / "templates"
    directory.mkdir()

    def check_bytes(raw: bytes) -> None:
        (directory / "t.md").write_bytes(raw)
        templates = TemplateSet(directory)
        assert all(isinstance(e, TemplateError) for e in templates.validate())
        with contextlib.suppress(TemplateError):
            templates.render("t", CONTEXT)

    fuzz(request, st.binary(max_size=300), check_bytes)
