"""A user's `templates/` directory -> the subject, text part and HTML part of one email.

Templates are Markdown with YAML front matter (`template_source`), rendered by the bounded
sandbox in `template_sandbox`. The body is rendered twice: once with raw values for the text
part, once with every value Markdown-escaped for the HTML part, which markdown-it turns into
HTML that `_layout.html` wraps (`template_layout`). Files are read and compiled once per
`TemplateSet`; `render` first tries the skeleton cache (`template_skeleton`), which gives the
same bytes for a fraction of the work, and falls back to the full path here.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Template, TemplateNotFound, meta, nodes
from jinja2.exceptions import SecurityError, TemplateRuntimeError, TemplateSyntaxError
from markdown_it import MarkdownIt
from markupsafe import Markup

from .errors import TemplateError
from .template_budget import MAX_OUTPUT, BudgetExceeded, bounded
from .template_layout import BUILTIN_LAYOUT, finish_page, text_footer
from .template_sandbox import BoundedEnvironment, finalize_markdown, finalize_text
from .template_skeleton import SkeletonRenderer
from .template_source import (
    LAYOUT,
    SUFFIXES,
    DirectoryLoader,
    TemplateSource,
    check_name,
    read_front_matter,
)
from .template_values import one_line, view

__all__ = ["LAYOUT", "RenderedEmail", "TemplateSet", "check_name", "one_line"]


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


class TemplateSet:
    """The templates of one directory, loaded once, compiled on first use and cached."""

    def __init__(self, directory: Path):
        directory = Path(directory)
        if not directory.is_dir():
            raise TemplateError(str(directory), None, "templates directory not found")
        self._prefix = directory.name
        self._sources: dict[str, TemplateSource] = {}
        self._load_errors: dict[str, TemplateError] = {}
        for path in sorted(directory.iterdir()):
            if path.is_file() and path.suffix in SUFFIXES:
                self._load(path)
        options: dict[str, Any] = {
            "loader": DirectoryLoader(self._sources),
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
        self._compiled: dict[tuple[int, str], Template] = {}
        self._strings: dict[str, Template] = {}
        self._files: dict[str, str] = {}  # template name -> file, for names that exist
        self._skeleton = SkeletonRenderer(
            self._sources,
            options=options,
            text_env=self._text_env,
            layout_env=self._layout_env,
            markdown=self._markdown,
            compiled=self._template,
            compiled_string=lambda text, file: self._string(text, file, None),
            layout=self._layout,
            layout_file=self._layout_file,
        )

    @property
    def _layout_file(self) -> str:
        return f"{self._prefix}/{LAYOUT}"

    def _load(self, path: Path) -> None:
        file = f"{self._prefix}/{path.name}"
        try:
            text = path.read_text(encoding="utf-8")
            if path.suffix == ".md":
                self._sources[path.name] = read_front_matter(file, text)
            else:
                self._sources[path.name] = TemplateSource(file, text.removeprefix("\ufeff"))
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
        same shape (see `template_skeleton`) and gives byte-identical results.
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
        if cache:
            try:
                return RenderedEmail(*self._skeleton.render(
                    filename, source, values, subject, company_name, address, unsubscribe_url
                ))
            except Exception:  # noqa: BLE001 - the full path raises the canonical error
                pass
        return self._render_full(
            filename, source, values, subject, company_name, address, unsubscribe_url
        )

    def _render_full(
        self, filename: str, source: TemplateSource, values: dict[str, Any],
        subject: str | None, company_name: str, address: str, unsubscribe_url: str,
    ) -> RenderedEmail:
        with bounded():
            subject_text, preheader = self._render_head(source, values, subject)
            text = self._render(self._template(self._text_env, filename), values, source.file)
            markdown = self._render(self._template(self._md_env, filename), values, source.file)
            page = self._render_page(values, self._markdown.render(markdown), subject_text,
                                     preheader)
        text = text_footer(text.strip("\n") + "\n", company_name, address, unsubscribe_url)
        page = finish_page(page, company_name, address, unsubscribe_url, self._layout_file)
        return RenderedEmail(subject_text, text, page)

    def _render_head(
        self, source: TemplateSource, values: Mapping[str, Any], subject: str | None
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

    # -- compiling and running -------------------------------------------------------------
    def _file(self, name: str) -> str:
        """The file of template `name` (`thank-you.md`), or the TemplateError to report."""
        filename = self._files.get(name)
        if filename is None:
            filename = self._files[name] = self._find(name)
        return filename

    def _find(self, name: str) -> str:
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

    def _render_line(
        self, source: TemplateSource, values: Mapping[str, Any], override: str | None
    ) -> str:
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
    if isinstance(exc, TemplateRuntimeError | SecurityError):  # undefined, budget, ...
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _require_content(template: Template, env: BoundedEnvironment, source: TemplateSource) -> None:
    tree = env.parse(source.jinja)
    if "content" not in meta.find_undeclared_variables(tree):
        raise TemplateError(source.file, 1, "the layout must output {{ content }}")
