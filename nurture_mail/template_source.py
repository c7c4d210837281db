"""The files of a user's `templates/` directory as Jinja sees them.

Owns reading one file (front matter split off, line numbers kept), the rule that template
names stay inside the directory, and the loader that serves the files read at start-up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from jinja2 import BaseLoader, TemplateNotFound
from jinja2.exceptions import SecurityError

from .errors import TemplateError

LAYOUT = "_layout.html"
SUFFIXES = (".md", ".html", ".txt")


@dataclass(frozen=True)
class TemplateSource:
    """One file of the directory, read once."""

    file: str  # as shown in errors: "templates/thank-you.md"
    jinja: str  # Jinja source; front matter replaced by an empty comment of as many lines
    subject: str | None = None
    subject_line: int | None = None
    preheader: str | None = None
    preheader_line: int | None = None


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


def read_front_matter(file: str, text: str) -> TemplateSource:
    """A Markdown template: YAML front matter (subject, preheader) and the Jinja body."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines[0].rstrip() != "---":
        return TemplateSource(file, text)
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
    return TemplateSource(
        file, jinja,
        data.get("subject"), key_lines.get("subject"),
        data.get("preheader"), key_lines.get("preheader"),
    )


class DirectoryLoader(BaseLoader):
    """Serves the files read at start-up; never touches the disk again."""

    def __init__(self, sources: Mapping[str, TemplateSource]):
        self._sources = sources

    def get_source(self, environment: Any, template: str) -> tuple[str, str, Callable[[], bool]]:
        check_name(template)
        source = self._sources.get(template)
        if source is None:
            raise TemplateNotFound(template)
        return source.jinja, source.file, lambda: True
