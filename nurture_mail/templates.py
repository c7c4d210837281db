"""A user's `templates/` directory -> the subject, text part and HTML part of one email.

Templates are Markdown with YAML front matter, rendered by the bounded sandbox in
`template_sandbox`. The body is rendered twice: once with raw values for the text part, once
with every value Markdown-escaped for the HTML part, which markdown-it turns into HTML that
`_layout.html` wraps. Files are read and compiled once per `TemplateSet`.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jinja2 import BaseLoader, Template, TemplateNotFound, meta, nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from markdown_it import MarkdownIt
from markupsafe import Markup, escape

from .errors import TemplateError
from .template_budget import (
    MAX_CHARS,
    MAX_OUTPUT,
    MAX_STEPS,
    MAX_VALUE,
    BudgetExceeded,
    bounded,
    check,
    current_budget,
)
from .template_cache import (
    _MARKS,
    LRU,
    TOKEN,
    MarkdownEntry,
    ProgramRun,
    Recording,
    TextRun,
    Unsupported,
    analyze_document,
    analyze_markdown,
    escape_md_html,
    fill,
    finalize_token,
    layout_program,
    layout_simple,
    md_text,
    serialize_attr,
    serialize_text,
    simple_program,
    split,
    token,
    token_pass_ok,
    url_simple,
)
from .template_layout import (
    BUILTIN_LAYOUT,
    footer_html,
    html_footer,
    inline_css,
    insert_footer,
    text_footer,
)
from .template_sandbox import BoundedEnvironment, finalize_markdown, finalize_text
from .template_values import clean_text, markdown_escape, plain, view

LAYOUT = "_layout.html"
_SUFFIXES = (".md", ".html", ".txt")
_LINE_BREAKING = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class _Source:
    """One file of the directory, read once."""

    file: str  # as shown in errors: "templates/thank-you.md"
    jinja: str  # Jinja source; front matter replaced by an empty comment of as many lines
    subject: str | None = None
    subject_line: int | None = None
    preheader: str | None = None
    preheader_line: int | None = None


def one_line(value: str) -> str:
    """Subject cleaning: any run of whitespace or control characters becomes one space."""
    return _LINE_BREAKING.sub(" ", value).strip()


def check_name(name: str) -> None:
    """Refuse names that could reach outside the templates directory."""
    parts = name.split("/")
    if (
        not name
        or "\\" in name
        or "\x00" in name
        or name.startswith("/")
        or ":" in parts[0]
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise SecurityError(f"template name {name!r} refused (must stay inside templates/)")


def _read_front_matter(file: str, text: str) -> _Source:
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines[0].rstrip() != "---":
        return _Source(file, text)
    end = next((i for i in range(1, len(lines)) if lines[i].rstrip() in ("---", "...")), None)
    if end is None:
        raise TemplateError(file, 1, "front matter is not closed by a '---' line")
    loader = yaml.SafeLoader("\n".join(lines[1:end]))
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise TemplateError(file, mark.line + 2 if mark else 1, f"front matter: {exc}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise TemplateError(file, 2, "front matter must be a mapping (subject: ...)")
    key_lines = {
        key.value: key.start_mark.line + 2
        for key, _ in (node.value if isinstance(node, yaml.MappingNode) else [])
    }
    for key in ("subject", "preheader"):
        if key in data and not isinstance(data[key], str):
            raise TemplateError(file, key_lines.get(key), f"{key} must be a string")
    # Jinja line numbers must be file line numbers: keep the front matter's lines.
    jinja = "{#" + "\n" * (end + 1) + "#}" + "\n".join(lines[end + 1 :])
    return _Source(
        file, jinja,
        data.get("subject"), key_lines.get("subject"),
        data.get("preheader"), key_lines.get("preheader"),
    )


class _DirectoryLoader(BaseLoader):
    """Serves the files read at start-up; never touches the disk again."""

    def __init__(self, sources: Mapping[str, _Source]):
        self._sources = sources

    def get_source(self, environment: Any, template: str) -> tuple[str, str, Callable[[], bool]]:
        check_name(template)
        source = self._sources.get(template)
        if source is None:
            raise TemplateNotFound(template)
        return source.jinja, source.file, lambda: True


class TemplateSet:
    """The templates of one directory, loaded once, compiled on first use and cached."""

    def __init__(self, directory: Path):
        directory = Path(directory)
        if not directory.is_dir():
            raise TemplateError(str(directory), None, "templates directory not found")
        self._prefix = directory.name
        self._sources: dict[str, _Source] = {}
        self._load_errors: dict[str, TemplateError] = {}
        for path in sorted(directory.iterdir()):
            if path.is_file() and path.suffix in _SUFFIXES:
                self._load(path)
        options: dict[str, Any] = {
            "loader": _DirectoryLoader(self._sources),
            "trim_blocks": True,
            "lstrip_blocks": True,
            "auto_reload": False,
            "cache_size": -1,
        }
        self._text_env = BoundedEnvironment(autoescape=False, finalize=finalize_text, **options)
        self._md_env = BoundedEnvironment(
            markdown=True, autoescape=True, finalize=finalize_markdown, **options
        )
        self._layout_env = BoundedEnvironment(autoescape=True, finalize=finalize_text, **options)
        # The skeleton cache's single body pass (template_cache): text-part semantics,
        # every output a token.
        self._token_env = BoundedEnvironment(autoescape=False, finalize=finalize_token, **options)
        self._token_ok: dict[str, bool] = {}
        self._programs: dict[str, Any] = {}
        self._string_programs: dict[str, Any] = {}
        self._program: Any = _MISS
        self._md_cache = LRU()
        self._page_cache = LRU()
        # CommonMark, raw HTML off, no linkify: only the template author's Markdown makes markup.
        self._markdown = MarkdownIt("commonmark", {"html": False})
        self._compiled: dict[tuple[str, str], Template] = {}
        self._strings: dict[str, Template] = {}

    def _load(self, path: Path) -> None:
        file = f"{self._prefix}/{path.name}"
        try:
            text = path.read_text(encoding="utf-8")
            if path.suffix == ".md":
                self._sources[path.name] = _read_front_matter(file, text)
            else:
                self._sources[path.name] = _Source(file, text.removeprefix("\ufeff"))
        except UnicodeDecodeError:
            self._load_errors[path.name] = TemplateError(file, None, "not valid UTF-8")
        except TemplateError as exc:
            self._load_errors[path.name] = exc

    # -- queries ---------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Templates that steps can use: `thank-you` for `thank-you.md`; no partials."""
        files = [*self._sources, *self._load_errors]
        return sorted(f[:-3] for f in files if f.endswith(".md") and not f.startswith("_"))

    def exists(self, name: str) -> bool:
        try:
            check_name(name)
        except SecurityError:
            return False
        return name in self.names()

    def validate(self) -> list[TemplateError]:
        """Every problem that loading can find, each pinned to `file:line`."""
        errors = list(self._load_errors.values())
        for filename, source in self._sources.items():
            envs = [self._layout_env] if filename.endswith(".html") else [
                self._text_env, self._md_env
            ]
            try:
                for env in envs:
                    self._template(env, filename)
                for text, line in ((source.subject, source.subject_line),
                                   (source.preheader, source.preheader_line)):
                    if text is not None:
                        self._string(text, source.file, line)
            except TemplateError as exc:
                errors.append(exc)
        return errors

    def references(self, name: str) -> frozenset[str]:
        """Variables a template (and the partials it includes) uses: `candidate.role`, ..."""
        found: set[str] = set()
        pending, seen = [self._file(name)], set()
        while pending:
            filename = pending.pop()
            if filename in seen or filename not in self._sources:
                continue
            seen.add(filename)
            source = self._sources[filename]
            texts = [source.jinja, source.subject or "", source.preheader or ""]
            for text in texts:
                try:
                    tree = self._text_env.parse(text)
                except TemplateSyntaxError:
                    continue
                found |= meta.find_undeclared_variables(tree)
                for node in tree.find_all(nodes.Getattr):
                    if isinstance(node.node, nodes.Name):
                        found.add(f"{node.node.name}.{node.attr}")
                pending += [
                    ref for ref in meta.find_referenced_templates(tree) if isinstance(ref, str)
                ]
        return frozenset(found)

    # -- rendering -------------------------------------------------------------------------
    def render(
        self,
        name: str,
        context: Mapping[str, Any],
        *,
        subject: str | None = None,
        cache: bool = True,
    ) -> RenderedEmail:
        """Subject, text and HTML of template `name` for `context`.

        `cache=False` takes the full path (every pass, markdown-it, layout and CSS inlining
        for this email alone); the default reuses the work done for earlier emails of the
        same shape (see `template_cache`) and gives byte-identical results.
        """
        filename = self._file(name)
        source = self._sources[filename]
        values = {key: view(key, value) for key, value in context.items()}
        company = context.get("company") or {}
        address = str(company.get("postal_address") or "")
        unsubscribe_url = str(context.get("unsubscribe_url") or "")
        if not address or not unsubscribe_url:
            raise ValueError("render() needs company.postal_address and unsubscribe_url")
        company_name = str(company.get("name") or "")
        if cache and self._token_pass_ok(filename):
            try:
                return self._render_cached(
                    filename, source, values, subject, company_name, address, unsubscribe_url
                )
            except Exception:  # noqa: BLE001 - the full path raises the canonical error
                pass
        return self._render_full(
            filename, source, values, subject, company_name, address, unsubscribe_url
        )

    def _render_full(
        self, filename: str, source: _Source, values: dict[str, Any], subject: str | None,
        company_name: str, address: str, unsubscribe_url: str,
    ) -> RenderedEmail:
        with bounded():
            subject_text, preheader = self._render_head(source, values, subject)
            text = self._render(self._template(self._text_env, filename), values, source.file)
            markdown = self._render(self._template(self._md_env, filename), values, source.file)
            page = self._render_page(values, self._markdown.render(markdown), subject_text,
                                     preheader)
        text = text_footer(text.strip("\n") + "\n", company_name, address, unsubscribe_url)
        page = self._finish_page(page, company_name, address, unsubscribe_url)
        return RenderedEmail(subject_text, text, page)

    def _render_head(
        self, source: _Source, values: Mapping[str, Any], subject: str | None
    ) -> tuple[str, str]:
        subject_text = self._render_line(source, values, subject)
        preheader = ""
        if source.preheader is not None:
            preheader = self._render_string(
                source.preheader, values, source.file, source.preheader_line
            )
        return subject_text, one_line(preheader)

    def _render_page(
        self, values: Mapping[str, Any], html: str, subject_text: str, preheader: str
    ) -> str:
        layout = self._layout()
        return self._render(layout, {
            **values, "content": Markup(html), "subject": subject_text, "preheader": preheader,
        }, layout.filename or LAYOUT)

    def _finish_page(
        self, page: str, company_name: str, address: str, unsubscribe_url: str
    ) -> str:
        page = html_footer(page, company_name, address, unsubscribe_url)
        try:
            return inline_css(page)
        except ValueError as exc:  # css_inline.InlineError
            raise TemplateError(f"{self._prefix}/{LAYOUT}", None, f"CSS: {exc}") from None

    # -- the skeleton cache (template_cache) -----------------------------------------------
    def _render_cached(
        self, filename: str, source: _Source, values: dict[str, Any], subject: str | None,
        company_name: str, address: str, unsubscribe_url: str,
    ) -> RenderedEmail:
        """The full path's result from cached skeletons; raises when it cannot prove it."""
        with bounded() as budget:
            subject_text, preheader = self._fast_head(source, values, subject)
            steps, chars = budget.steps, budget.chars
            program = self._body_program(filename)
            if program is not None:  # the usual template: no Jinja needed
                body = TextRun(self._text_env, values, tokens=True)
                body.run(program)
                budget.produce(body.chars)
                skeleton, texts = "".join(body.out), body.texts
            else:
                with Recording() as texts:
                    skeleton = _render_fast(self._template(self._token_env, filename), values)
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
                    if _MARKS.search(text):
                        raise Unsupported("a value looks like a token")
                    inlined.append((index, markdown_escape(text)))
                else:
                    shown[index] = simple
            md_key = (skeleton, tuple(inlined))
            entry = self._md_cache.get(md_key, _MISS)
            if entry is _MISS:
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
                self._md_cache.put(md_key, entry)
            if entry is None or len(entry.text_indices) != len(texts):
                raise Unsupported("Markdown not cacheable")
            text = fill(entry.text_pieces, entry.text_indices, texts)
            # The Markdown is at most twice as long as the text (escapes double at most).
            if 2 * len(text) > MAX_OUTPUT or not entry.markdown.accepts(shown):
                raise Unsupported("output too large or value not neutral")
            page = self._page_from_skeleton(
                md_key, entry, shown, len(texts), values, subject_text, preheader,
                company_name, address, unsubscribe_url,
            )
        text = text_footer(text.strip("\n") + "\n", company_name, address, unsubscribe_url)
        return RenderedEmail(subject_text, text, page)

    def _fast_head(
        self, source: _Source, values: Mapping[str, Any], subject: str | None
    ) -> tuple[str, str]:
        """`_render_head` without Jinja's traceback rewriting (errors take the full path)."""
        text = subject if subject is not None else source.subject
        if text is None:
            raise Unsupported("no subject")
        subject_text = one_line(self._fast_string(text, source.file, values))
        if not subject_text:
            raise Unsupported("empty subject")
        preheader = ""
        if source.preheader is not None:
            preheader = self._fast_string(source.preheader, source.file, values)
        return subject_text, one_line(preheader)

    def _fast_string(self, text: str, file: str, values: Mapping[str, Any]) -> str:
        program = self._string_programs.get(text, _MISS)
        if program is _MISS:
            try:
                program = simple_program(self._text_env.parse(text).body)
            except TemplateSyntaxError:
                program = None
            if len(self._string_programs) > 1000:  # like _strings: never grow without bound
                self._string_programs.clear()
            self._string_programs[text] = program
        if program is None:
            return _render_fast(self._string(text, file, None), values)
        run = TextRun(self._text_env, values, tokens=False)
        run.run(program)
        current_budget().produce(run.chars)
        return "".join(run.out)

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

    def _page_from_skeleton(
        self, md_key: tuple[str, tuple], plan: _MarkdownPlan, shown: dict[int, str],
        first: int, values: Mapping[str, Any], subject_text: str, preheader: str,
        company_name: str, address: str, unsubscribe_url: str,
    ) -> str:
        self._layout()  # raises what the full path would
        program = self._layout_program()
        if program is None:
            raise Unsupported("layout not cacheable")
        # Upper bounds (an escape is at most 6 characters): if they fit, today's page fits.
        shown_chars = 6 * sum(map(len, shown.values()))
        run = _LayoutRun(self._layout_env, {
            **values, "subject": subject_text, "preheader": preheader
        }, plan.html_chars + shown_chars, first)
        run.run(program)
        current_budget().produce(run.chars)
        signature = tuple(run.signature)
        key = (md_key, signature)
        layout = self._page_cache.get(key, _MISS)
        if layout is _MISS:
            out = _build_layout(program, iter(signature), plan)
            document = "".join(token(part) if type(part) is int else part for part in out)
            layout = _LayoutPlan(document, *split(document))
            self._page_cache.put(key, layout)
        page: str | None = None
        if layout.chars + shown_chars + 6 * sum(map(len, run.texts.values())) > MAX_OUTPUT:
            page = self._real_page(layout, shown, run.texts)
            if len(page) > MAX_OUTPUT:
                raise Unsupported("output too large")
        url_index = run.next_index
        href = token(url_index) if url_simple(unsubscribe_url) else None
        if _has_footer_parts(run.texts, address, unsubscribe_url):
            footer = None  # the checks below would find link and address in today's page
        else:
            page = page or self._real_page(layout, shown, run.texts)
            footer = footer_html(page, company_name, address, unsubscribe_url, href)
            if footer is not None and _MARKS.search(footer.replace(href or "\ue000", "")):
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
            page = page or self._real_page(layout, shown, run.texts)
            return self._finish_page(page, company_name, address, unsubscribe_url)
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

    @staticmethod
    def _real_page(layout: _LayoutPlan, shown: dict[int, str], texts: dict[int, str]) -> str:
        """Today's page before the footer: the layout's output with today's escapes."""
        real = {i: escape_md_html(t) for i, t in shown.items()}
        real.update((i, str(escape(t))) for i, t in texts.items())
        return fill(layout.pieces, layout.indices, real)

    def _token_pass_ok(self, filename: str) -> bool:
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

    def _layout_program(self) -> list[Any] | None:
        if self._program is _MISS:
            text = self._sources[LAYOUT].jinja if LAYOUT in self._sources else BUILTIN_LAYOUT
            try:
                self._program = layout_program(self._layout_env.parse(text).body)
            except TemplateSyntaxError:
                self._program = None
        return self._program  # type: ignore[return-value]

    def _file(self, name: str) -> str:
        file = f"{self._prefix}/{name}.md"
        try:
            check_name(name)
        except SecurityError as exc:
            raise TemplateError(file, None, str(exc)) from None
        filename = f"{name}.md"
        if filename in self._load_errors:
            raise self._load_errors[filename]
        if filename not in self._sources or name.startswith("_"):
            raise TemplateError(file, None, f"no template named {name!r}")
        return filename

    def _render_line(self, source: _Source, values: Mapping[str, Any], override: str | None) -> str:
        if override is not None:
            text = self._render_string(override, values, f"{source.file} (step subject)", None)
        elif source.subject is not None:
            text = self._render_string(source.subject, values, source.file, source.subject_line)
        else:
            raise TemplateError(source.file, 1, "no subject: set it in the front matter or step")
        subject = one_line(text)
        if not subject:
            raise TemplateError(source.file, source.subject_line, "the subject renders empty")
        return subject

    def _render_string(
        self, text: str, values: Mapping[str, Any], file: str, line: int | None
    ) -> str:
        return self._render(self._string(text, file, line), values, file, line)

    def _layout(self) -> Template:
        if f"{LAYOUT}" in self._load_errors:
            raise self._load_errors[LAYOUT]
        if LAYOUT in self._sources:
            return self._template(self._layout_env, LAYOUT)
        return self._string(BUILTIN_LAYOUT, "<built-in layout>", None, self._layout_env)

    def _template(self, env: BoundedEnvironment, filename: str) -> Template:
        key = (id(env), filename)
        template = self._compiled.get(key)
        if template is None:
            try:
                template = env.get_template(filename)
            except TemplateSyntaxError as exc:
                raise _syntax_error(exc, self._sources[filename].file) from None
            if filename == LAYOUT:
                _require_content(template, env, self._sources[filename])
            self._compiled[key] = template
        return template

    def _string(
        self, text: str, file: str, line: int | None, env: BoundedEnvironment | None = None
    ) -> Template:
        env = env or self._text_env
        key = f"{id(env)}\x00{text}"
        template = self._strings.get(key)
        if template is None:
            try:
                template = env.from_string(text)
            except TemplateSyntaxError as exc:
                raise TemplateError(file, line, exc.message or str(exc)) from None
            if len(self._strings) > 1000:  # step subjects are few; never grow without bound
                self._strings.clear()
            self._strings[key] = template
        return template

    def _render(
        self, template: Template, values: Mapping[str, Any], file: str, line: int | None = None
    ) -> str:
        chunks: list[str] = []
        size = 0
        try:
            for chunk in template.generate(values):
                size += len(chunk)
                if size > MAX_OUTPUT:
                    raise BudgetExceeded(f"output too large (over {MAX_OUTPUT:,} characters)")
                chunks.append(chunk)
        except TemplateError:
            raise
        except TemplateSyntaxError as exc:  # in an included template
            raise _syntax_error(exc, file) from None
        except Exception as exc:
            raise self._runtime_error(exc, file, line) from None
        return "".join(chunks)

    def _runtime_error(self, exc: Exception, file: str, line: int | None) -> TemplateError:
        where = (file, line)
        known = {source.file for source in self._sources.values()}
        for frame, lineno in traceback.walk_tb(exc.__traceback__):
            name = frame.f_code.co_filename
            if name in known:
                where = (name, lineno)
        return TemplateError(where[0], where[1], _describe(exc))


def _syntax_error(exc: TemplateSyntaxError, file: str) -> TemplateError:
    return TemplateError(exc.filename or file, exc.lineno, exc.message or str(exc))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TemplateNotFound):
        return f"template {exc.name!r} not found"
    if isinstance(exc, UndefinedError | SecurityError | BudgetExceeded):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _require_content(template: Template, env: BoundedEnvironment, source: _Source) -> None:
    tree = env.parse(source.jinja)
    if "content" not in meta.find_undeclared_variables(tree):
        raise TemplateError(source.file, 1, "the layout must output {{ content }}")


_MISS: Any = object()


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


class _LayoutRun(ProgramRun):
    """The layout's Jinja pass (same lookups, `finalize_text` checks and charges, autoescape)
    with simple values kept as tokens: `signature` is what varies between emails (branches
    taken, values inlined, token indices), `texts` the tokens' values."""

    def __init__(self, env: BoundedEnvironment, context: dict[str, Any], content_chars: int,
                 first: int):
        super().__init__(env, context)
        self.content_chars = content_chars
        self.next_index = first
        self.texts: dict[int, str] = {}
        self.chars = 0

    def output(self, path: tuple[str, ...]) -> None:
        signature = self.signature
        if path[0] == "content":
            if len(path) > 1 or self.content_chars > MAX_VALUE:
                raise Unsupported("content")
            self.chars += self.content_chars
            signature.append(None)
            return
        value = self.value(path)
        if type(value) is str and value.isprintable():  # the usual case
            if len(value) > MAX_VALUE:
                raise Unsupported("value too large")
            text = value
            simple = text != "" and text[0] != " "
        else:
            if isinstance(value, Markup):
                raise Unsupported("trusted value")
            check(value)
            text = clean_text(plain(value))
            simple = layout_simple(text)
        self.chars += len(text)
        if simple:
            index = self.next_index
            self.texts[index] = text
            signature.append(index)
            self.next_index += 1
        else:
            if _MARKS.search(text):
                raise Unsupported("a value looks like a token")
            signature.append(str(escape(text)))


def _build_layout(program: list[Any], signature: Iterator[Any], plan: _MarkdownPlan,
                  out: list[str | int] | None = None) -> list[str | int]:
    """The layout's output for a signature `_LayoutRun` made: text and token indices."""
    out = [] if out is None else out
    for op in program:
        if type(op) is str:
            out.append(op)
        elif op[0] == "out":
            item = next(signature)
            if item is None:  # content
                out.append(plan.html_pieces[0])
                for index, piece in zip(plan.html_indices, plan.html_pieces[1:], strict=True):
                    out.append(index)
                    out.append(piece)
            else:
                out.append(item)
        else:
            _, branches, else_ = op
            number = next(signature)
            _build_layout(branches[number][1] if number >= 0 else else_, signature, plan, out)
    return out


def _has_footer_parts(texts: dict[int, str], address: str, unsubscribe_url: str) -> bool:
    """Whether `footer_html` is sure to find link and address in today's page, because a
    layout value (escaped the same way by both escapes: no quotes) contains them.

    A True answer is exact (those escaped strings are in the page); False means "look".
    """
    if "'" in unsubscribe_url or '"' in unsubscribe_url:
        return False
    lines = [line.strip() for line in address.splitlines() if line.strip()]
    if any("'" in line or '"' in line for line in lines):
        return False
    values = texts.values()
    return any(unsubscribe_url in text for text in values) and all(
        any(line in text for text in values) for line in lines
    )


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
    if sorted(indices) != before or any(_MARKS.search(piece) for piece in pieces):
        return None
    return pieces, indices, contexts
