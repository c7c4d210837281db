"""The fast render path: an email's three parts from cached skeletons.

`TemplateSet.render` tries this first. One body pass (a `template_programs` program, or the
token environment's Jinja run for templates that need Jinja) yields the skeleton and the
values; the Markdown cache maps the skeleton to markdown-it's HTML, the page cache maps the
layout's skeleton to the inlined page, and today's email is string substitution into them.
Whenever `template_cache`'s checks cannot prove the result equal to the full path's, this
raises and the caller renders the full, uncached way (which also words every error).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2 import Template, TemplateNotFound
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from markdown_it import MarkdownIt
from markupsafe import escape

from .template_budget import MAX_CHARS, MAX_OUTPUT, MAX_STEPS, bounded, current_budget
from .template_cache import (
    LRU,
    MARKS,
    TOKEN,
    MarkdownEntry,
    Recording,
    Unsupported,
    analyze_document,
    analyze_markdown,
    escape_md_html,
    fill,
    finalize_token,
    md_text,
    serialize_attr,
    serialize_text,
    split,
    token,
    token_pass_ok,
    url_simple,
)
from .template_layout import (
    BUILTIN_LAYOUT,
    address_lines,
    finish_page,
    footer_html,
    inline_css,
    insert_footer,
    text_footer,
)
from .template_programs import (
    LayoutRun,
    TextRun,
    build_layout,
    layout_program,
    simple_program,
    token_skeleton,
)
from .template_sandbox import BoundedEnvironment
from .template_source import LAYOUT, TemplateSource, check_name
from .template_values import markdown_escape, one_line

_MISS: Any = object()


@dataclass
class _MarkdownPlan:
    """A cached Markdown skeleton: markdown-it's HTML and the token pass's output, split."""

    markdown: MarkdownEntry
    text_pieces: list[str]
    text_indices: list[int]

    def __post_init__(self) -> None:
        self.html_pieces, self.html_indices = split(self.markdown.html)
        self.html_chars = sum(map(len, self.html_pieces))


@dataclass
class _LayoutPlan:
    """A cached layout skeleton (before the footer), split; and per footer, the final one."""

    document: str
    pieces: list[str]
    indices: list[int]
    finals: dict[str | None, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.chars = sum(map(len, self.pieces))


class SkeletonRenderer:
    """The fast path of one `TemplateSet`; its caches are bounded (`template_cache.LRU`).

    It shares the set's files, environments and compiled templates: `compiled(env,
    filename)` and `compiled_string(text, file)` compile (and cache) as the full path does,
    `layout()` raises what the full path would about the layout, and `layout_file` names
    the layout in CSS errors.
    """

    def __init__(
        self,
        sources: Mapping[str, TemplateSource],
        *,
        options: Mapping[str, Any],
        text_env: BoundedEnvironment,
        layout_env: BoundedEnvironment,
        markdown: MarkdownIt,
        compiled: Callable[[BoundedEnvironment, str], Template],
        compiled_string: Callable[[str, str], Template],
        layout: Callable[[], Template],
        layout_file: str,
    ):
        self._sources = sources
        self._text_env = text_env
        self._layout_env = layout_env
        # The single body pass: text-part semantics, every output a token.
        self._token_env = BoundedEnvironment(autoescape=False, finalize=finalize_token, **options)
        self._markdown = markdown
        self._compiled = compiled
        self._compiled_string = compiled_string
        self._layout = layout
        self._layout_file = layout_file
        self._token_ok: dict[str, bool] = {}
        self._programs: dict[str, Any] = {}
        self._string_programs: dict[str, Any] = {}
        self._layout_program: Any = _MISS
        self._layout_ok = False
        self.md_cache = LRU()
        self.page_cache = LRU()

    def render(
        self, filename: str, source: TemplateSource, values: dict[str, Any], subject: str | None,
        company_name: str, address: str, unsubscribe_url: str,
    ) -> tuple[str, str, str]:
        """The full path's (subject, text, html); raises when it cannot prove them equal."""
        if not self._token_pass_ok(filename):
            raise Unsupported("the template needs both body passes")
        with bounded() as budget:
            subject_text, preheader = self._head(source, values, subject)
            steps, chars = budget.steps, budget.chars
            program = self._body_program(filename)
            skeleton: str | None
            if program is not None:  # the usual template: no Jinja needed
                body = TextRun(self._text_env, values, tokens=True)
                body.run(program)
                budget.produce(body.chars)
                # The branches taken name the skeleton: it is only built on a cache miss.
                texts, shape, skeleton = body.texts, (filename, *body.signature), None
            else:
                with Recording() as texts:
                    skeleton = _render_fast(self._compiled(self._token_env, filename), values)
                shape = skeleton
            # One pass stood for two (text, Markdown) running the same logic: charge the
            # second's steps, and at most twice the text's characters for its escapes (an
            # upper bound: if it fits, the full path fits too; if not, the full path decides).
            budget.steps = steps + 2 * (budget.steps - steps)
            budget.chars = chars + 2 * (budget.chars - chars) + sum(map(len, texts))
            if budget.steps > MAX_STEPS or budget.chars > MAX_CHARS:
                raise Unsupported("over budget")
            shown: dict[int, str] = {}
            inlined: list[tuple[int, str]] = []
            for index, text in enumerate(texts):
                simple = md_text(text)
                if simple is None:
                    if MARKS.search(text):
                        raise Unsupported("a value looks like a token")
                    inlined.append((index, markdown_escape(text)))
                else:
                    shown[index] = simple
            md_key = (shape, tuple(inlined))
            entry = self.md_cache.get(md_key, _MISS)
            if entry is _MISS:
                if skeleton is None:
                    skeleton = token_skeleton(program, body.signature)  # type: ignore[arg-type]
                pieces, indices = split(skeleton)
                markdown = fill(pieces, indices, {
                    i: token(i) if i in shown else markdown_escape(t) for i, t in enumerate(texts)
                })
                # Each output became one token, in order: anything else (template text that
                # looks like a token, say) and the skeleton is not used.
                analyzed = None
                if indices == list(range(len(texts))):
                    analyzed = analyze_markdown(self._markdown, markdown)
                entry = None if analyzed is None else _MarkdownPlan(analyzed, pieces, indices)
                self.md_cache.put(md_key, entry)
            if entry is None or len(entry.text_indices) != len(texts):
                raise Unsupported("Markdown not cacheable")
            text = fill(entry.text_pieces, entry.text_indices, texts)
            # The Markdown is at most twice as long as the text (escapes double at most).
            if 2 * len(text) > MAX_OUTPUT or not entry.markdown.accepts(shown):
                raise Unsupported("output too large or value not neutral")
            page = self._page(
                md_key, entry, shown, len(texts), values, subject_text, preheader,
                company_name, address, unsubscribe_url,
            )
        text = text_footer(text.strip("\n") + "\n", company_name, address, unsubscribe_url)
        return subject_text, text, page

    # -- subject and preheader ---------------------------------------------------------------
    def _head(
        self, source: TemplateSource, values: Mapping[str, Any], subject: str | None
    ) -> tuple[str, str]:
        """The full path's subject and preheader (its errors: the full path words them)."""
        text = subject if subject is not None else source.subject
        if text is None:
            raise Unsupported("no subject")
        subject_text = one_line(self._string(text, source.file, values))
        if not subject_text:
            raise Unsupported("empty subject")
        preheader = ""
        if source.preheader is not None:
            preheader = one_line(self._string(source.preheader, source.file, values))
        return subject_text, preheader

    def _string(self, text: str, file: str, values: Mapping[str, Any]) -> str:
        program = self._string_programs.get(text, _MISS)
        if program is _MISS:
            try:
                program = simple_program(self._text_env.parse(text).body)
            except TemplateSyntaxError:
                program = None
            if len(self._string_programs) > 1000:  # step subjects are few; stay bounded
                self._string_programs.clear()
            self._string_programs[text] = program
        if program is None:
            return _render_fast(self._compiled_string(text, file), values)
        run = TextRun(self._text_env, values, tokens=False)
        run.run(program)
        current_budget().produce(run.chars)
        return "".join(run.out)

    # -- the body ----------------------------------------------------------------------------
    def _token_pass_ok(self, filename: str) -> bool:
        """Whether one token pass can stand for the text and Markdown passes (includes too)."""
        ok = self._token_ok.get(filename)
        if ok is None:
            ok, pending, seen = True, [filename], set()
            while ok and pending:
                current = pending.pop()
                if current in seen:
                    continue
                seen.add(current)
                source = self._sources.get(current)
                try:
                    check_name(current)
                    if source is None:
                        raise TemplateNotFound(current)
                    ok, includes = token_pass_ok(self._text_env.parse(source.jinja))
                except Exception:  # noqa: BLE001 - the full path reports it
                    ok, includes = False, []
                pending += includes
            self._token_ok[filename] = ok
        return ok

    def _body_program(self, filename: str) -> list[Any] | None:
        """The template as a `simple_program` (includes inlined), or None."""
        program = self._programs.get(filename, _MISS)
        if program is _MISS:
            depth = 0

            def compile_file(name: str) -> list[Any] | None:
                nonlocal depth
                source = self._sources.get(name)
                depth += 1
                try:
                    check_name(name)
                    if source is None or depth > 8:
                        return None
                    return simple_program(self._text_env.parse(source.jinja).body, compile_file)
                except (SecurityError, TemplateSyntaxError):
                    return None
                finally:
                    depth -= 1

            program = self._programs[filename] = compile_file(filename)
        return program

    # -- the page ----------------------------------------------------------------------------
    def _page(
        self, md_key: tuple[Any, tuple], plan: _MarkdownPlan, shown: dict[int, str],
        first: int, values: Mapping[str, Any], subject_text: str, preheader: str,
        company_name: str, address: str, unsubscribe_url: str,
    ) -> str:
        if not self._layout_ok:
            self._layout()  # raises what the full path would (once it has not, it never will)
            self._layout_ok = True
        program = self._layout_skeleton_program()
        if program is None:
            raise Unsupported("layout not cacheable")
        # Upper bounds (an escape is at most 6 characters): if they fit, today's page fits.
        shown_chars = 6 * sum(map(len, shown.values()))
        run = LayoutRun(self._layout_env, {
            **values, "subject": subject_text, "preheader": preheader
        }, plan.html_chars + shown_chars, first)
        run.run(program)
        current_budget().produce(run.chars)
        signature = tuple(run.signature)
        key = (md_key, signature)
        layout = self.page_cache.get(key, _MISS)
        if layout is _MISS:
            out = build_layout(program, iter(signature), plan.html_pieces, plan.html_indices)
            document = "".join(token(part) if type(part) is int else part for part in out)
            layout = _LayoutPlan(document, *split(document))
            self.page_cache.put(key, layout)
        page: str | None = None
        if layout.chars + shown_chars + 6 * sum(map(len, run.texts.values())) > MAX_OUTPUT:
            page = _real_page(layout, shown, run.texts)
            if len(page) > MAX_OUTPUT:
                raise Unsupported("output too large")
        url_index = run.next_index
        href = token(url_index) if url_simple(unsubscribe_url) else None
        if _has_footer_parts(run.texts, address, unsubscribe_url):
            footer = None  # the checks below would find link and address in today's page
        else:
            page = page or _real_page(layout, shown, run.texts)
            footer = footer_html(page, company_name, address, unsubscribe_url, href)
            if footer is not None and MARKS.search(footer.replace(href or "\ue000", "")):
                raise Unsupported("a value looks like a token")
        final_plan = layout.finals.get(footer, _MISS)
        if final_plan is _MISS:
            document = layout.document if footer is None else insert_footer(
                layout.document, footer
            )
            expected = {*shown, *run.texts}
            if footer is not None and href is not None and href in footer:
                expected.add(url_index)
            final_plan = _analyze_page(document, expected)
            if len(layout.finals) < 64:  # footers differ by URL only when it is not simple
                layout.finals[footer] = final_plan
        if final_plan is None:  # finish today's way from today's page
            page = page or _real_page(layout, shown, run.texts)
            return finish_page(page, company_name, address, unsubscribe_url, self._layout_file)
        pieces, indices, contexts = final_plan
        final: dict[int, str] = {}
        for index, kind in contexts.items():
            if index in shown:
                final[index] = serialize_text(shown[index])
            elif index == url_index:
                final[index] = serialize_attr(unsubscribe_url)
            else:
                text = run.texts[index]
                final[index] = serialize_attr(text) if kind == "attr" else serialize_text(text)
        return fill(pieces, indices, final)

    def _layout_skeleton_program(self) -> list[Any] | None:
        if self._layout_program is _MISS:
            text = self._sources[LAYOUT].jinja if LAYOUT in self._sources else BUILTIN_LAYOUT
            try:
                self._layout_program = layout_program(self._layout_env.parse(text).body)
            except TemplateSyntaxError:
                self._layout_program = None
        return self._layout_program  # type: ignore[no-any-return]


def _render_fast(template: Template, values: Mapping[str, Any]) -> str:
    """`TemplateSet._render` for the fast path: same output limit, no traceback rewriting."""
    chunks: list[str] = []
    size = 0
    for chunk in template.root_render_func(template.new_context(values)):
        size += len(chunk)
        if size > MAX_OUTPUT:
            raise Unsupported("output too large")
        chunks.append(chunk)
    return "".join(chunks)


def _real_page(layout: _LayoutPlan, shown: dict[int, str], texts: dict[int, str]) -> str:
    """Today's page before the footer: the layout's output with today's escapes."""
    real = {i: escape_md_html(t) for i, t in shown.items()}
    real.update((i, str(escape(t))) for i, t in texts.items())
    return fill(layout.pieces, layout.indices, real)


def _has_footer_parts(texts: dict[int, str], address: str, unsubscribe_url: str) -> bool:
    """Whether `footer_html` is sure to find link and address in today's page, because a
    layout value (escaped the same way by both escapes: no quotes) contains them.

    A True answer is exact (those escaped strings are in the page); False means "look".
    """
    if "'" in unsubscribe_url or '"' in unsubscribe_url:
        return False
    values = texts.values()
    for text in values:
        if unsubscribe_url in text:
            break
    else:
        return False
    lines = _quote_free_lines(address)
    if lines is None:
        return False
    # A line is in one of the values iff it is in them joined by newlines: lines hold none.
    joined = "\n".join(values)
    return all(line in joined for line in lines)


@functools.lru_cache(maxsize=64)  # one address per install
def _quote_free_lines(address: str) -> tuple[str, ...] | None:
    """The footer's address lines, or None if one has a quote (escaped differently)."""
    lines = address_lines(address)
    return None if any("'" in line or '"' in line for line in lines) else lines


def _analyze_page(
    document: str, expected: set[int]
) -> tuple[list[str], list[int], dict[int, str]] | None:
    """css_inline's output for a document skeleton, split, and each token's context."""
    contexts = analyze_document(document)
    if contexts is None or set(contexts) != expected:
        return None
    try:
        inlined = inline_css(document)
    except ValueError:
        return None
    before = sorted(int(i) for i in TOKEN.findall(document))
    pieces, indices = split(inlined)
    if sorted(indices) != before or any(MARKS.search(piece) for piece in pieces):
        return None
    return pieces, indices, contexts
