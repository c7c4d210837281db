"""The skeleton cache (template_skeleton) renders byte for byte what the full path renders.

One TemplateSet per directory is shared by all examples, so the cache is warm with earlier
examples' skeletons and every example checks a cached render against `cache=False`.
"""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nurture_mail import template_skeleton
from nurture_mail.templates import TemplateSet

SKELETON = Path(__file__).resolve().parents[1] / "nurture_mail" / "skeleton" / "templates"

A, B = "{{ candidate.first_name }}", "{{ candidate.last_name }}"
BODIES = {
    # Accepted shapes: values in text, emphasis, link text, headings, lists, quotes.
    "emphasis.md": (
        "---\nsubject: \"Hi " + A + "\"\npreheader: \"{{ candidate.role | default('x') }}\"\n"
        "---\nHi " + A + ", " + B + "!\n\n"
        "*" + A + "* **" + B + "** _" + A + "_ a*" + A + "*b a_" + B + "_b ***" + A + "***"
        + B + "** *" + A + " " + B + "*\n"
    ),
    "linktext.md": (
        "---\nsubject: s\n---\nSee [" + A + "](https://jobs.example/x) and [**" + B
        + "**](https://y.example \"t\").\n\n[" + A + " " + B + "](<https://z.example/a b>)\n"
    ),
    "blocks.md": (
        "---\nsubject: \"" + A + " / " + B + "\"\n---\n"
        "# " + A + "\n\n## Role: {{ candidate.role | default('none') }} ##\n\n"
        + A + "\n===\n\n- " + A + "\n- " + B + ". x\n\n1. " + B + "\n2. *" + A + "*\n\n"
        + B + ". Not a list?\n\n" + B + ") Or this?\n\n" + A + B + ". x\n\n"
        "> " + A + " said\n> " + B + "\n\n" + A + "  \nnext " + B + "\\\nlast\n"
    ),
    "logic.md": (
        "---\nsubject: \"{{ candidate.first_name | upper }} {{ candidate.tags | length }}\"\n"
        "---\n"
        "{% if candidate.first_name | length > 3 %}Long {{ candidate.first_name | title }}"
        "{% else %}Short {{ candidate.first_name | lower }}{% endif %}\n\n"
        "{% for tag in candidate.tags %}\n- {{ loop.index }}: {{ tag }} {{ tag | replace('a', "
        "'*') }}\n{% endfor %}\n\n"
        "{{ 'x' ~ candidate.last_name ~ '*' }} {{ candidate.last_name | truncate(9) }} "
        "{{ candidate.last_name[:3] }} {{ candidate.tags }} {{ step.number }}\n"
        "{{ candidate.nickname | default(candidate.first_name) }} {{ today }}\n\n"
        "{{ candidate.tags | join(', ') }}\n\n{% include '_part.md' %}\n"
    ),
    "branches.md": (  # evaluated without Jinja: if/elif/else, ==, !=, not, defined, include
        "---\nsubject: \"{% if candidate.role is defined %}{{ candidate.role }}{% else %}Hi"
        "{% endif %} {{ company.name }}\"\n---\n"
        "{% if candidate.status == 'withdrawn' %}W " + A + "\n"
        "{% elif 'rejected' != candidate.status %}O " + B + "\n"
        "{% elif not candidate.tags %}No tags\n{% else %}R {{ candidate.email }}\n{% endif %}\n"
        "{% if candidate.nickname is not defined %}No nick.{% else %}Nick **{{ candidate.nickname"
        " }}**.{% endif %} {% if step.number == 3 %}three{% endif %}\n\n"
        "{% include '_part.md' %}\n"
    ),
    # Shapes the cache refuses (a value could change the Markdown around it).
    "code.md": (
        "---\nsubject: s\n---\nCode `" + A + "` and `` " + B + " `` and ` open " + A + "\n\n"
        "    code " + A + "\n\n```" + B + "\n" + A + "\n```\n"
    ),
    "urls.md": (
        "---\nsubject: s\n---\n[Apply]({{ candidate.url }} \"" + B + "\") <{{ candidate.url }}>"
        " <mailto:" + B + "> ![" + A + "](https://img.example/p.png) [x](https://j.example/"
        + B + ")\n"
    ),
    "entities.md": (
        "---\nsubject: s\n---\nEntity &" + A + "; &#" + B + "; &am" + A + "; \\" + B + " <" + A
        + "> 1 < " + B + "\n"
    ),
    "refs.md": (
        "---\nsubject: s\n---\n[" + A + "] and [" + B + "][]\n\n[dana]: https://refs.example/d\n"
    ),
    "macro.md": (
        "---\nsubject: s\n---\n"
        "{% macro b(label) %}[{{ label }}](https://x.example){% endmacro %}"
        "{{ b(candidate.first_name) }}\n\n"
        "{% set g %}Hi *{{ candidate.first_name }}*{% endset %}{{ g }} {{ g | upper }}\n"
        "{{ candidate.last_name | e }} {{ candidate.first_name | tojson }}\n"
    ),
    "_part.md": "Best,  \n{{ sender.name }}  \n{{ company.name }}\n",
}

LAYOUTS = {
    "attrs": (
        "<!doctype html><html><head><title>{{ subject }} | {{ company.name }}</title>"
        "<style>p { margin: 0; } a { color: #123456; } .c { color: red; }</style></head>"
        "<body><div class=\"c\">{{ content }}</div>"
        "<p>" + A + " &amp; " + B + " &middot; {{ company.name }}</p>"
        "<a href=\"{{ unsubscribe_url }}\" title=\"" + A + "\">Unsubscribe</a>"
        "<a href='https://x.example/?n=" + B + "'>x</a>"
        "<p>{{ company.postal_address }}</p><table><tr><td>" + B + "</td></tr></table>"
        "{% if preheader %}<span>{{ preheader }}</span>{% else %}<i>none</i>{% endif %}"
        "</body></html>"
    ),
    "hostile": (
        "<html><head><title>{{ subject }}</title></head><body>{{ content }}"
        "<img alt=\"" + A + "\" src=\"https://img.example/a.png\"><p class=\"" + B + "\">x</p>"
        "<p>&" + A + " &am" + B + "</p><table><tr><td>" + B + "</td></tr>" + A + "</table>"
        "<pre>" + A + "</pre><textarea>" + B + "</textarea><!-- " + A + " -->"
        "<script>var x = \"" + B + "\";</script></body></html>"
    ),
    "selectors": (
        "<html><head><style>a[href^=\"https\"] { color: green; } p:empty { display: none; }"
        "</style></head><body><p>" + A + "</p>{{ content }}"
        "<a href=\"{{ unsubscribe_url }}\">u</a></body></html>"
    ),
    "builtin": None,
}


@pytest.fixture(scope="module")
def template_sets(tmp_path_factory: pytest.TempPathFactory) -> list[TemplateSet]:
    sets = []
    shipped = tmp_path_factory.mktemp("shipped") / "templates"
    shutil.copytree(SKELETON, shipped)
    sets.append(TemplateSet(shipped))
    for name, layout in LAYOUTS.items():
        directory = tmp_path_factory.mktemp(name) / "templates"
        directory.mkdir()
        for filename, body in BODIES.items():
            (directory / filename).write_text(body, encoding="utf-8")
        if layout is not None:
            (directory / "_layout.html").write_text(layout, encoding="utf-8")
        sets.append(TemplateSet(directory))
    return sets


SPECIALS = [
    "", " ", "Dana", " Dana", "Dana ", "Dana  Lee", "O'Brien", 'Say "hi"', "a&b", "&amp;",
    "&lt;", "amp", "lt", "copy", "notin", "#65", "x41", "**bold**", "__u__", "*", "_", "[x](y)",
    "[x]", "dana", "<script>alert(1)</script>", "<b>", "1", "12", "2024", "123456789",
    "1234567890", "1.", "1)", "#", "# H", "-", "- item", "+", ">", "=", "===", "---", "\\",
    "\\*", "`", "``", "`code`", "~~~", "Zoë", "李小龍", "Ünïcödé", "\u00a0", "a\u00a0b",
    "\u200b", "\u200d", "\ufeff", "\ue000", "\ue0001\ue001", "\ue001", "a\nb", "a\r\nb",
    "a\rb", "\n", "\t", "a\tb", "x\x00y", "\x1b[31m", "\x85", "\u2028", "👩\u200d💻", "🎉",
    "«Dana»", "(Dana)", "Dana.", "¿Dana?", "—", "€5", "mailto:x@y.z", "http://evil.example",
    "https://talent.example/u/tok?x=1&y=2", "&#x41;", "&copy", "a@b.c", "x" * 3000,
    "Dana " * 400, "'", '"', "&", "<", ">", "\\\n", "  \n", "x  ", "a*", "*a", "a_", "_a",
]
CHARS = "aZ9 _*[]()<>&;#`\\'\"!.-=+~|{}:/\n\t\r\u00a0é李\u200d😀«»—"

value = st.one_of(
    st.sampled_from(SPECIALS),
    st.text(alphabet=CHARS, max_size=20),
    st.lists(st.sampled_from(SPECIALS), min_size=2, max_size=4).map("".join),
    st.text(max_size=12),
)


@st.composite
def contexts(draw: Any) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "first_name": draw(value),
        "last_name": draw(value),
        "email": "c@example.com",
        "status": draw(st.sampled_from(["withdrawn", "rejected", draw(value)])),
        "url": draw(value),
        "tags": draw(st.lists(value, max_size=3)),
    }
    if draw(st.booleans()):
        candidate["role"] = draw(value)
    if draw(st.booleans()):
        candidate["nickname"] = draw(value)
    address = draw(st.one_of(st.just("1 Main St\nSpringfield, IL 62701"), value))
    url = draw(st.one_of(
        st.just("https://talent.example/u/tok?x=1&y=2"),
        st.builds(lambda v: f"https://talent.example/u/{v}", value),
    ))
    return {
        "candidate": candidate,
        "sender": {"name": draw(value), "email": "sam@talent.example"},
        "company": {"name": draw(value), "postal_address": address or "1 Main St"},
        "campaign": {"id": "silver", "name": "Silver medalists"},
        "step": {"id": "thank-you", "number": draw(st.integers(0, 12))},
        "unsubscribe_url": url if url.strip() else "https://talent.example/u/x",
        "today": date(2026, 3, 4),
    }


def outcome(ts: TemplateSet, name: str, context: dict[str, Any], **kwargs: Any) -> Any:
    try:
        return ts.render(name, context, **kwargs)
    except Exception as exc:  # noqa: BLE001 - both paths must fail alike
        return (type(exc).__name__, str(exc))


@settings(max_examples=600, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(context=contexts(), subject=st.one_of(st.none(), value.map(lambda v: v + " {{ x }}"),
                                              st.just("Re: {{ candidate.first_name }}")))
def test_cached_render_equals_full_render(
    template_sets: list[TemplateSet], context: dict[str, Any], subject: str | None
):
    for ts in template_sets:
        for name in ts.names():
            kwargs = {"subject": subject} if subject is not None and "{{ x }}" not in subject \
                else {}
            cached = outcome(ts, name, context, **kwargs)
            full = outcome(ts, name, context, cache=False, **kwargs)
            assert cached == full, (ts._prefix, name)


def typical(i: int) -> dict[str, Any]:
    names = ["Dana", "Zoë", "O'Brien", "Jean-Luc", "李", "Ana María", "D'Angelo", "Kim"]
    return {
        "candidate": {"first_name": f"{names[i % len(names)]}", "last_name": f"Lee{i}",
                      "email": "c@example.com", "status": "rejected", "url": "https://x",
                      "tags": ["python"], "role": "Backend Engineer"},
        "sender": {"name": "Sam Recruiter", "email": "sam@talent.example"},
        "company": {"name": "Acme & Co.", "postal_address": "1 Main St\nSpringfield, IL 62701"},
        "campaign": {"id": "silver", "name": "Silver medalists"},
        "step": {"id": "thank-you", "number": 1},
        "unsubscribe_url": f"https://talent.example/u/tok{i}?x=1&y=2",
        "today": date(2026, 3, 4),
    }


def test_typical_renders_hit_the_cache(template_sets: list[TemplateSet], monkeypatch):
    """Ordinary values take the whole fast path: no full render, no per-email CSS inlining."""
    slow: list[str] = []
    for owner, name in ((TemplateSet, "_render_full"), (template_skeleton, "finish_page")):
        original = getattr(owner, name)

        def counting(*args: Any, _original: Any = original, _name: str = name) -> Any:
            slow.append(_name)
            return _original(*args)

        monkeypatch.setattr(owner, name, counting)
    shipped, attrs, builtin = template_sets[0], template_sets[1], template_sets[4]
    cases = [(shipped, name) for name in shipped.names()] + [
        (ts, name) for ts in (attrs, builtin)
        for name in ("emphasis", "linktext", "blocks", "branches", "logic")
    ]
    expected = []
    for i in range(40):
        for ts, name in cases:
            expected.append(ts.render(name, typical(i), cache=False))
    slow.clear()
    rendered = [ts.render(name, typical(i)) for i in range(40) for ts, name in cases]
    assert slow == []
    assert rendered == expected
    # A value that cannot be a token still renders through the cache (inlined) or falls back.
    odd = typical(1)
    odd["candidate"]["first_name"] = "Dana\n\n# Heading"
    assert shipped.render("thank-you", odd) == shipped.render("thank-you", odd, cache=False)


def test_cache_is_bounded(template_sets: list[TemplateSet]):
    ts = template_sets[0]
    for i in range(600):
        context = typical(i)
        context["company"]["name"] = f"Acme {i}!"  # a value inlined into the skeleton
        ts.render("check-in", context)
    assert len(ts._skeleton.md_cache) <= 512 and len(ts._skeleton.page_cache) <= 512


def test_program_skeleton_is_the_token_pass_output(template_sets: list[TemplateSet]):
    """A template run without Jinja keys the Markdown cache by the branches it took; the
    skeleton they name is what the Jinja token pass outputs for the same values."""
    from nurture_mail.template_budget import bounded
    from nurture_mail.template_cache import Recording
    from nurture_mail.template_programs import TextRun, token_skeleton
    from nurture_mail.template_skeleton import _render_fast
    from nurture_mail.template_values import view

    checked = 0
    for ts in template_sets:
        renderer = ts._skeleton
        for name in ts.names():
            filename = f"{name}.md"
            program = renderer._body_program(filename)
            if program is None:
                continue
            for i in range(12):
                context = typical(i)
                context["candidate"]["status"] = ["withdrawn", "rejected", "hired"][i % 3]
                if i % 2:
                    del context["candidate"]["role"]
                if i % 4 == 1:
                    context["candidate"]["tags"] = []
                values = {key: view(key, value) for key, value in context.items()}
                with bounded():
                    run = TextRun(ts._text_env, values, tokens=True)
                    try:
                        run.run(program)
                    except Exception:  # noqa: BLE001 - not renderable this way: not compared
                        continue
                    with Recording() as texts:
                        expected = _render_fast(
                            renderer._compiled(renderer._token_env, filename), values
                        )
                assert token_skeleton(program, run.signature) == expected, (ts._prefix, name)
                assert run.texts == texts
                checked += 1
    assert checked > 50


def test_one_line_shortcut_matches_the_regex():
    from nurture_mail.template_values import _LINE_BREAKING, one_line

    assert all(
        not _LINE_BREAKING.match(c) and not c.isspace()
        for c in map(chr, range(0x110000)) if c.isprintable() and c != " "
    )
    for text in SPECIALS + ["a  b", " a", "a ", "a\u2028b", "\u3000x"]:
        assert one_line(text) == _LINE_BREAKING.sub(" ", text).strip()


def test_programs_with_deep_private_and_missing_paths_render_as_the_full_path(tmp_path):
    """The runner closures inline paths of one or two public names; longer paths, names
    starting "_" and missing values take `ProgramRun.value` and the sandbox, as before."""
    directory = tmp_path / "templates"
    directory.mkdir()
    (directory / "deep.md").write_text(
        "---\nsubject: \"{% if candidate.links.site is defined %}{{ candidate.links.site }}"
        "{% else %}none{% endif %} {{ step.number }}\"\n---\n"
        "Hi {{ candidate.first_name }} ({{ today }})\n\n"
        "{% if candidate.links.site is defined %}Site: {{ candidate.links.site }}{% endif %}\n\n"
        "{% if candidate.nickname is defined %}aka {{ candidate.nickname }}"
        "{% elif not candidate.tags %}no tags{% elif step.number == 2 %}two"
        "{% else %}{{ candidate.tags }}{% endif %}\n\n"
        "{% if candidate._data is defined %}private{% endif %}\n",
        encoding="utf-8",
    )
    ts = TemplateSet(directory)
    seen = set()
    for i in range(16):
        context = typical(i)
        candidate = context["candidate"]
        candidate["links"] = {"site": f"https://example.com/{i}"} if i % 2 else {}
        if i % 4 == 1:
            candidate["nickname"] = f"Nick{i}"
        if i % 3 == 0:
            candidate["tags"] = []
        context["step"]["number"] = i % 3
        cached = ts.render("deep", context)
        assert cached == ts.render("deep", context, cache=False), i
        body = cached.text.split("\n-- \n")[0]
        seen.update(branch for branch in ("aka Nick", "no tags", "two", "python", "Site: ")
                    if branch in body)
    program = ts._skeleton._body_program("deep.md")
    assert program is not None and "tokens" in program.runners  # the runner closures ran
    assert seen == {"aka Nick", "no tags", "two", "python", "Site: "}  # every branch taken
