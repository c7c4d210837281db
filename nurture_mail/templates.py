"""A user's `templates/` directory -> the subject, text part and HTML part of one email.

Templates are Markdown with YAML front matter, rendered by the bounded sandbox in
`template_sandbox`. The body is rendered twice: once with raw values for the text part, once
with every value Markdown-escaped for the HTML part, which markdown-it turns into HTML that
`_layout.html` wraps. Files are read and compiled once per `TemplateSet`.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jinja2 import BaseLoader, Template, TemplateNotFound, meta, nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from markdown_it import MarkdownIt
from markupsafe import Markup

from .errors import TemplateError
from .template_budget import MAX_OUTPUT, BudgetExceeded, bounded
from .template_layout import BUILTIN_LAYOUT, html_footer, inline_css, text_footer
from .template_sandbox import BoundedEnvironment, finalize_markdown, finalize_text
from .template_values import view

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
        self, name: str, context: Mapping[str, Any], *, subject: str | None = None
    ) -> RenderedEmail:
        filename = self._file(name)
        source = self._sources[filename]
        values = {key: view(key, value) for key, value in context.items()}
        company = context.get("company") or {}
        address = str(company.get("postal_address") or "")
        unsubscribe_url = str(context.get("unsubscribe_url") or "")
        if not address or not unsubscribe_url:
            raise ValueError("render() needs company.postal_address and unsubscribe_url")
        with bounded():
            subject_text = self._render_line(source, values, subject)
            preheader = ""
            if source.preheader is not None:
                preheader = self._render_string(
                    source.preheader, values, source.file, source.preheader_line
                )
            text = self._render(self._template(self._text_env, filename), values, source.file)
            markdown = self._render(self._template(self._md_env, filename), values, source.file)
            layout = self._layout()
            page = self._render(layout, {
                **values,
                "content": Markup(self._markdown.render(markdown)),
                "subject": subject_text,
                "preheader": one_line(preheader),
            }, layout.filename or LAYOUT)
        company_name = str(company.get("name") or "")
        text = text_footer(text.strip("\n") + "\n", company_name, address, unsubscribe_url)
        page = html_footer(page, company_name, address, unsubscribe_url)
        try:
            page = inline_css(page)
        except ValueError as exc:  # css_inline.InlineError
            raise TemplateError(f"{self._prefix}/{LAYOUT}", None, f"CSS: {exc}") from None
        return RenderedEmail(subject_text, text, page)

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
