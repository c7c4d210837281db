"""Reading campaign YAML as nodes, so that every complaint can name its file and line.

PyYAML's node API keeps the position of every key and value; this module wraps it with a
YAML-1.2-like resolver and small typed readers that record errors instead of raising, so one
pass over a file reports everything that is wrong with it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import yaml

from nurture_mail.errors import CampaignError
from nurture_mail.rules import describe, suggest

_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE = "tag:yaml.org,2002:merge"


class Loader(_Base):  # type: ignore[misc,valid-type]
    """SafeLoader with YAML 1.2 core scalars.

    Only true/false are booleans (``country: NO`` and ``on``/``yes`` stay text), there are no
    base-60 integers (``17:00`` stays text) and numbers with leading zeros stay text
    (postcodes, ids). Dates are still read as dates, for ``skip_dates``.
    """

    yaml_implicit_resolvers: dict = {}


_DIGITS = list("-+0123456789")
for _tag, _pattern, _first in (
    ("bool", r"true|True|TRUE|false|False|FALSE", list("tTfF")),
    ("int", r"[-+]?(?:0|[1-9][0-9]*)", _DIGITS),
    ("float", r"[-+]?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)", _DIGITS),
    ("null", r"~|null|Null|NULL|", ["~", "n", "N", ""]),
    (
        "timestamp",
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
        r"|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?:[Tt]|[ \t]+)[0-9]{1,2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]*)?"
        r"(?:[ \t]*(?:Z|[-+][0-9]{1,2}(?::[0-9]{2})?))?",
        list("0123456789"),
    ),
    ("merge", r"<<", ["<"]),
):
    Loader.add_implicit_resolver(
        f"tag:yaml.org,2002:{_tag}", re.compile(f"^(?:{_pattern})$"), _first
    )


def line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def key_text(node: yaml.Node) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def peek(node: yaml.Node, key: str) -> yaml.Node | None:
    """The value node of ``key`` in a mapping node, without validating anything."""
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if key_text(k) == key:
                return v
    return None


Entries = dict[str, tuple[yaml.Node, yaml.Node]]


@dataclass
class NodeReader:
    """Typed access to one document's nodes; problems are collected in ``errors``."""

    file: str
    loader: Loader
    errors: list[CampaignError] = field(default_factory=list)
    # Dotted key path -> line, e.g. "steps.check-in.template" (for later checks' messages).
    lines: dict[str, int] = field(default_factory=dict)
    # id(node) -> (node, value): an alias is built once, so `&a [*b, *b, ...]` chains (a
    # "billion laughs" file) cost their distinct nodes, not their exponential expansion.
    _built: dict[int, tuple[yaml.Node, object]] = field(default_factory=dict, repr=False)

    def fail(self, node: yaml.Node | int, message: str) -> None:
        where = node if isinstance(node, int) else line(node)
        self.errors.append(CampaignError(self.file, where, message))

    def value(self, node: yaml.Node) -> object:
        """Plain Python value of a node; a scalar that cannot be built stays its text."""
        if isinstance(node, yaml.ScalarNode):
            try:
                return self.loader.construct_object(node, deep=True)
            except (yaml.YAMLError, ValueError, OverflowError):
                # e.g. 2026-13-01 looks like a date but is none: let the caller say why.
                return node.value
        built = self._built.get(id(node))
        if built is not None:
            return built[1]
        if isinstance(node, yaml.SequenceNode):
            value: object = [self.value(item) for item in node.value]
        else:
            value = {key_text(k): self.value(v) for k, v in node.value}
        self._built[id(node)] = (node, value)
        return value

    def mapping(
        self,
        node: yaml.Node,
        what: str,
        allowed: tuple[str, ...] | None,
        path: str | None = None,
    ) -> Entries | None:
        """Keys of a mapping node; reports duplicates and (when ``allowed``) unknown keys."""
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, f"{what} must be a mapping, got {describe(self.value(node))}")
            return None
        first_line: dict[str, int] = {}
        for key_node, _ in node.value:
            name = key_text(key_node)
            if name is None or key_node.tag == _MERGE:
                continue
            if name in first_line:
                self.fail(key_node, f"duplicate key {name!r} (first on line {first_line[name]})")
            else:
                first_line[name] = line(key_node)
        try:
            # Resolves `<<: *defaults` merges; own keys come after merged ones and win below.
            self.loader.flatten_mapping(node)
        except yaml.YAMLError as exc:
            self.fail(node, f"bad merge: {getattr(exc, 'problem', exc)}")
            return None
        entries: Entries = {}
        for key_node, value_node in node.value:
            name = key_text(key_node)
            if name is None:
                self.fail(key_node, f"keys in {what} must be text")
                continue
            if allowed is not None and name not in allowed:
                hint = suggest(name, allowed) or f" (expected one of: {', '.join(allowed)})"
                self.fail(key_node, f"unknown key {name!r} in {what}{hint}")
                continue
            entries[name] = (key_node, value_node)
            if path is not None:
                self.lines[path + name] = line(key_node)
        return entries

    def text(self, node: yaml.Node, name: str) -> str | None:
        value = self.value(node)
        if not isinstance(value, str) or not value.strip() or "\x00" in value:
            self.fail(node, f"{name!r} must be text, got {describe(value)}")
            return None
        return value

    def texts(self, node: yaml.Node, name: str) -> tuple[str, ...] | None:
        """One text or a list of texts."""
        value = self.value(node)
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) and v.strip() and "\x00" not in v for v in items):
            self.fail(node, f"{name!r} must be a text or a list of texts, got {describe(value)}")
            return None
        return tuple(items)  # type: ignore[arg-type]

    def items(self, node: yaml.Node, name: str) -> list[yaml.Node] | None:
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, f"{name!r} must be a list, got {describe(self.value(node))}")
            return None
        return list(node.value)

    def checked(self, node: yaml.Node, parse: Callable[[object], object]) -> object | None:
        """``parse(value)``, reporting its ValueError at the node; None when it failed."""
        try:
            return parse(self.value(node))
        except ValueError as exc:
            self.fail(node, str(exc))
            return None


def compose(
    text: str, file: str
) -> tuple[yaml.Node | None, NodeReader | None, CampaignError | None]:
    """Parse YAML text to its root node, or a syntax error pinned to its line."""
    loader = Loader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if exc.context_mark and "end of stream" in (exc.problem or ""):
            mark = exc.context_mark  # an unclosed quote or bracket: point at where it opened
        context = f" ({exc.context})" if exc.context else ""
        where = mark.line + 1 if mark else None
        return None, None, CampaignError(file, where, f"invalid YAML: {exc.problem}{context}")
    except yaml.YAMLError as exc:
        return None, None, CampaignError(file, None, f"invalid YAML: {exc}")
    return root, NodeReader(file, loader), None
