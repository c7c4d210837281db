"""TemplateSet: Markdown + front matter -> subject, text and HTML, with values kept inert."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from nurture_mail.errors import TemplateError
from nurture_mail.templates import RenderedEmail, TemplateSet

THANK_YOU = """\
---
subject: "Thanks for your time, {{ candidate.first_name }}"
preheader: A quick note
---
Hi {{ candidate.first_name }},

Thank you for interviewing for the **{{ candidate.role }}** role.
Known as {{ candidate.nickname | default(candidate.first_name) }}.

{% include "_signature.md" %}
"""

SIGNATURE = "Best,\n{{ sender.name }}\n"


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    return write(tmp_path / "templates", {"thank-you.md": THANK_YOU, "_signature.md": SIGNATURE})


def context(**candidate: object) -> dict[str, object]:
    fields = {"first_name": "Dana", "role": "Backend Engineer", "email": "dana@example.com"}
    fields.update(candidate)
    return {
        "candidate": fields,
        "sender": {"name": "Sam Recruiter", "email": "sam@talent.example"},
        "company": {"name": "Acme", "postal_address": "1 Main St\nSpringfield, IL 62701"},
        "campaign": {"id": "silver", "name": "Silver medalists"},
        "step": {"id": "thank-you", "number": 1},
        "unsubscribe_url": "https://talent.example/u/tok?x=1&y=2",
        "today": date(2026, 3, 4),
    }


def render(directory: Path, name: str = "thank-you", **candidate: object) -> RenderedEmail:
    return TemplateSet(directory).render(name, context(**candidate))


def test_renders_subject_text_and_html(templates: Path):
    email = render(templates)
    assert email.subject == "Thanks for your time, Dana"
    assert email.text.startswith("Hi Dana,\n\nThank you for interviewing for the **Backend")
    assert "Known as Dana." in email.text
    assert "Best,\nSam Recruiter" in email.text  # the partial
    assert "<strong>Backend Engineer</strong>" in email.html
    assert "<p>Best,\nSam Recruiter</p>" in email.html
    assert "A quick note" in email.html  # preheader
    assert email.html.lstrip().lower().startswith("<!doctype html>")


def test_names_and_exists(templates: Path):
    ts = TemplateSet(templates)
    assert ts.names() == ["thank-you"]
    assert ts.exists("thank-you")
    assert not ts.exists("_signature")
    assert not ts.exists("missing")
    assert not ts.exists("../thank-you")


def test_default_for_missing_value(templates: Path):
    assert "Known as Dee." in render(templates, nickname="Dee").text


def test_undefined_variable_is_error_with_file_and_line(tmp_path: Path):
    directory = write(tmp_path / "templates", {
        "a.md": "---\nsubject: Hi\n---\nline four\n\nHi {{ candidate.nickname }}\n",
        "b.md": "---\nsubject: Hi\n---\n{{ nonsense }}\n",
        "c.md": "---\nsubject: Hi {{ candidate.middle }}\n---\nbody\n",
    })
    with pytest.raises(TemplateError) as error:
        render(directory, "a")
    assert str(error.value) == "templates/a.md:6: 'candidate.nickname' is undefined"
    with pytest.raises(TemplateError) as error:
        render(directory, "b")
    assert str(error.value) == "templates/b.md:4: 'nonsense' is undefined"
    with pytest.raises(TemplateError) as error:
        render(directory, "c")
    assert str(error.value) == "templates/c.md:2: 'candidate.middle' is undefined"


def test_undefined_in_partial_points_at_the_partial(tmp_path: Path):
    directory = write(tmp_path / "templates", {
        "a.md": "---\nsubject: Hi\n---\n{% include '_p.md' %}\n",
        "_p.md": "ok\n{{ sender.title }}\n",
    })
    with pytest.raises(TemplateError) as error:
        render(directory, "a")
    assert str(error.value) == "templates/_p.md:2: 'sender.title' is undefined"



@pytest.mark.parametrize(
    "body,message",
    [
        # A list of undefined values used to show as "[Undefined, Undefined]".
        ("{{ candidate.tags | map(attribute='y') | list }}", "'str object' has no attribute 'y'"),
        ("{{ candidate.jobs | map(attribute='salary') | list | string }}",
         "'candidate.jobs.salary' is undefined"),
        ("{{ 'Roles: ' ~ (candidate.jobs | map(attribute='salary') | list) }}",
         "'candidate.jobs.salary' is undefined"),
        ("{{ candidate.nope | map(attribute='y') | list }}", "'candidate.nope' is undefined"),
        # A generator used to show as "<generator object sync_do_map at 0x7f...>".
        ("{{ candidate.jobs | map(attribute='title') }}", "a filter chain ends in a lazy sequence"),
        ("{{ candidate.tags | reverse }}", "a filter chain ends in a lazy sequence"),
        ("{{ 'x' ~ candidate.tags | select }}", "a filter chain ends in a lazy sequence"),
        # A mapping used to show as "<candidate.jobs>", alone or inside a list.
        ("{{ candidate.jobs }}", "'candidate.jobs' holds fields, not text: show one of them, "
                                 "such as candidate.jobs.title"),
        ("{{ candidate.jobs | selectattr('title') | list }}", "'candidate.jobs' holds fields"),
        ("{{ 'Roles: ' ~ candidate.jobs[0] }}", "'candidate.jobs' holds fields"),
        ("{{ company }}", "'company' holds fields, not text"),
    ],
)
@pytest.mark.parametrize("cache", [True, False])
def test_filter_chains_over_undefined_or_generators_are_errors(
    tmp_path: Path, body: str, message: str, cache: bool
):
    directory = write(tmp_path / "templates", {"a.md": f"---\nsubject: s\n---\nHi\n{body}\n"})
    ctx = context(tags=["python", "go"], jobs=[{"title": "SRE"}, {"title": "Data"}])
    with pytest.raises(TemplateError) as error:
        TemplateSet(directory).render("a", ctx, cache=cache)
    assert str(error.value).startswith(f"templates/a.md:5: {message}")
    assert "Undefined" not in str(error.value) and "0x" not in str(error.value)


@pytest.mark.parametrize("cache", [True, False])
def test_filter_chains_that_end_in_text_render(tmp_path: Path, cache: bool):
    directory = write(tmp_path / "templates", {"a.md": (
        "---\nsubject: s\n---\n"
        "A {{ candidate.jobs | map(attribute='title') | join(', ') }}\n"
        "B {{ candidate.jobs | map(attribute='title') | list }}\n"
        "C {{ candidate.tags | map(attribute='y', default='-') | join(',') }}\n"
        "D {{ candidate.tags | reverse | join(' ') }}\n"
    )})
    ctx = context(tags=["python", "go"], jobs=[{"title": "SRE"}, {"title": "Data"}])
    email = TemplateSet(directory).render("a", ctx, cache=cache)
    assert email.text.startswith("A SRE, Data\nB ['SRE', 'Data']\nC -,-\nD go python\n")

def test_syntax_errors_reported_with_file_and_line(tmp_path: Path):
    directory = write(tmp_path / "templates", {
        "bad.md": "---\nsubject: Hi\n---\nfine\n{{ candidate.first_name | }}\nmore\n",
        "badsubject.md": "---\nsubject: Hi {{ candidate.first_name \n---\nbody\n",
        "badyaml.md": "---\nsubject: [unclosed\n---\nbody\n",
        "ok.md": "---\nsubject: Hi\n---\nbody\n",
    })
    with pytest.raises(TemplateError) as error:
        render(directory, "bad")
    assert str(error.value).startswith("templates/bad.md:5: ")
    errors = sorted(str(e) for e in TemplateSet(directory).validate())
    assert len(errors) == 3
    assert errors[0].startswith("templates/bad.md:5: ")
    assert errors[1].startswith("templates/badsubject.md:2: ")
    assert errors[2].startswith("templates/badyaml.md:")


@pytest.mark.parametrize("name", ["../secret", "/etc/passwd", "a\\b", "sub/../../x", ""])
def test_path_traversal_refused(templates: Path, name: str):
    (templates.parent / "secret.md").write_text("---\nsubject: s\n---\nSECRET\n")
    with pytest.raises(TemplateError) as error:
        TemplateSet(templates).render(name, context())
    assert "SECRET" not in str(error.value)


def test_include_outside_directory_refused(tmp_path: Path):
    (tmp_path / "secret.md").write_text("SECRET")
    directory = write(tmp_path / "templates", {
        "a.md": "---\nsubject: Hi\n---\n\n{% include '../secret.md' %}\n",
    })
    with pytest.raises(TemplateError) as error:
        render(directory, "a")
    assert str(error.value).startswith("templates/a.md:5: ")
    assert "refused" in str(error.value)


INJECTIONS = [
    "<script>alert(1)</script>",
    "[x](http://evil)",
    "**bold**",
    "<http://evil>",
    "\r\nBcc: x@y",
    "![img](http://evil/p.png)",
    "`code` _em_ ~~s~~",
    "# Heading",
    "&lt;b&gt;",
    "line\n\n    code block\n- item",
    "1. first\n> quote\n---",
]


@pytest.mark.parametrize("value", INJECTIONS)
def test_candidate_values_cannot_add_markup(templates: Path, value: str):
    email = render(templates, first_name=value, role=value)
    body = email.html.split('<div class="nm-body"', 1)[1]
    assert "<script" not in body
    assert "<a href=\"http://evil" not in body
    assert "<img" not in body
    assert "<code>" not in body and "<em>" not in body and "<h1" not in body
    assert "<li>" not in body and "<blockquote>" not in body and "<pre>" not in body
    assert "<hr" not in body
    assert body.count("<strong>") <= 1  # only the template's own **...**
    assert "\r" not in email.subject and "\n" not in email.subject
    # The text part carries the value verbatim, minus control characters.
    assert value.replace("\r", "") in email.text


def test_injection_shows_up_literally_in_html(templates: Path):
    email = render(templates, first_name="**bold** <script>x</script> [x](http://evil)")
    assert "**bold** &lt;script&gt;x&lt;/script&gt; [x](http://evil)" in email.html


def test_subject_override_and_header_injection(templates: Path):
    ts = TemplateSet(templates)
    email = ts.render(
        "thank-you", context(first_name="Dana\r\nBcc: x@y\tz"),
        subject="Catching up, {{ candidate.first_name }}?",
    )
    assert email.subject == "Catching up, Dana Bcc: x@y z?"


def test_missing_subject_is_an_error(tmp_path: Path):
    directory = write(tmp_path / "templates", {"a.md": "no front matter\n"})
    with pytest.raises(TemplateError, match="no subject"):
        render(directory, "a")
    assert TemplateSet(directory).render("a", context(), subject="S").subject == "S"


def test_macros_and_blocks_keep_their_markdown_but_escape_values(tmp_path: Path):
    directory = write(tmp_path / "templates", {"a.md": (
        "---\nsubject: s\n---\n"
        "{% macro button(label, url) %}[{{ label }}]({{ url }}){% endmacro %}"
        "{{ button('Apply', 'https://jobs.example/1') }}\n\n"
        "{{ button(candidate.first_name, 'https://jobs.example/2') }}\n\n"
        "{% set greeting %}Hi *{{ candidate.first_name }}*{% endset %}{{ greeting }}\n\n"
        "{{ greeting | upper }} {{ candidate.first_name | e }} {{ candidate.first_name | tojson }}\n"
        "{{ 'x' ~ candidate.first_name }} {{ greeting ~ candidate.first_name }}\n"
    )})
    email = render(directory, "a", first_name="**b** [l](http://evil)")
    html = re.sub(r' style="[^"]*"', "", email.html)  # the layout's CSS, inlined
    assert '<a href="https://jobs.example/1">Apply</a>' in html
    assert '<a href="https://jobs.example/2">**b** [l](http://evil)</a>' in html
    assert "<em>**b** [l](http://evil)</em>" in email.html
    assert "<strong>" not in email.html
    assert 'href="http://evil' not in email.html


def test_footer_added_to_both_parts(templates: Path):
    email = render(templates)
    assert "Unsubscribe: https://talent.example/u/tok?x=1&y=2" in email.text
    assert "1 Main St\nSpringfield, IL 62701" in email.text
    assert 'href="https://talent.example/u/tok?x=1&amp;y=2"' in email.html
    assert "1 Main St<br>Springfield, IL 62701" in email.html
    assert email.html.index("nm-footer") < email.html.index("</body>")


def test_footer_not_duplicated_when_template_has_it(tmp_path: Path):
    directory = write(tmp_path / "templates", {"a.md": (
        "---\nsubject: s\n---\nBody.\n\n[Unsubscribe]({{ unsubscribe_url }})\n\n"
        "{{ company.postal_address }}\n"
    )})
    email = render(directory, "a")
    assert email.text.count("https://talent.example/u/tok?x=1&y=2") == 1
    assert "nm-footer" not in email.html
    assert 'href="https://talent.example/u/tok?x=1&amp;y=2"' in email.html


def test_layout_wraps_escapes_and_inlines_css(tmp_path: Path):
    directory = write(tmp_path / "templates", {
        "a.md": "---\nsubject: s\n---\nHello\n",
        "_layout.html": (
            "<html><head><style>p { color: red; } .sig { margin: 0; }</style></head>"
            "<body><h1>{{ candidate.first_name }}</h1>{{ content }}"
            "<p class=\"sig\">{{ subject }}</p></body></html>"
        ),
    })
    email = render(directory, "a", first_name="<b>Dana</b>")
    assert '<p style="color: red;">Hello</p>' in email.html
    assert "<style" not in email.html
    assert "<h1>&lt;b&gt;Dana&lt;/b&gt;</h1>" in email.html
    assert "nm-footer" in email.html


@pytest.mark.parametrize("layout", [
    "<html><body>{{ candidate.first_name | safe }}{{ content }}</body></html>",
    "<html><body>\n{% autoescape false %}{{ content }}{% endautoescape %}</body></html>",
    "<html><body>no content here</body></html>",
])
def test_unsafe_or_useless_layout_refused(tmp_path: Path, layout: str):
    directory = write(tmp_path / "templates", {
        "a.md": "---\nsubject: s\n---\nHello\n", "_layout.html": layout,
    })
    errors = TemplateSet(directory).validate()
    assert [str(e).split(":")[0] for e in errors] == ["templates/_layout.html"]
    assert errors[0].line is not None
    with pytest.raises(TemplateError):
        render(directory, "a")


def test_autoescape_false_refused_in_markdown(tmp_path: Path):
    directory = write(tmp_path / "templates", {
        "a.md": "---\nsubject: s\n---\n\n{% autoescape false %}{{ candidate.first_name }}"
                "{% endautoescape %}\n",
    })
    (error,) = TemplateSet(directory).validate()
    assert str(error) == "templates/a.md:5: autoescape cannot be changed in templates"


def test_references(templates: Path):
    refs = TemplateSet(templates).references("thank-you")
    assert {"candidate.first_name", "candidate.role", "candidate.nickname", "sender.name"} <= refs


def test_today_and_loops(tmp_path: Path):
    directory = write(tmp_path / "templates", {"a.md": (
        "---\nsubject: s\n---\n{{ today.strftime('%B %Y') }}\n\n"
        "{% for tag in candidate.tags %}\n- {{ tag }}\n{% endfor %}\n"
    )})
    email = render(directory, "a", tags=["python", "go"])
    assert "March 2026" in email.text
    assert "<li>python</li>" in email.html and "<li>go</li>" in email.html


def test_a_list_shown_whole_reads_as_its_items_joined(tmp_path: Path):
    directory = write(tmp_path / "templates", {"a.md": (
        '---\nsubject: "Tags {{ candidate.tags }}"\n---\nT {{ candidate.tags }}\n\n'
        "C {{ 'tags: ' ~ candidate.tags }}\n\nJ {{ candidate.tags | join('/') }} {{ candidate.tags | length }}\n"
    )})
    ts = TemplateSet(directory)
    for _ in range(2):  # the first render and the warm (skeleton) one
        email = ts.render("a", context(tags=["python", "<go>"]))
        assert email.subject == "Tags python, <go>"
        assert "T python, <go>\n\nC tags: python, <go>\n\nJ python/<go> 2\n" in email.text
        assert "<p>T python, &lt;go&gt;</p>" in email.html and "<p>C tags: python, &lt;go&gt;</p>" in email.html
    assert ts.render("a", context(tags=[])).text.startswith("T \n\nC tags: \n\nJ  0\n")
    # A list of records still has no text: the error says what to show instead.
    directory = write(tmp_path / "jobs", {"b.md": "---\nsubject: s\n---\n{{ candidate.jobs }}\n"})
    with pytest.raises(TemplateError, match="holds fields, not text"):
        TemplateSet(directory).render("b", context(jobs=[{"title": "SRE"}]))


def test_render_is_fast_enough_to_cache(templates: Path):
    ts = TemplateSet(templates)
    ctx = context()
    first = ts.render("thank-you", ctx)
    assert all(ts.render("thank-you", ctx) == first for _ in range(50))
