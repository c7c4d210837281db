"""What templates see of the data they are given, and how values are made inert.

Owns `Record` (attribute access to mappings, missing keys undefined), the undefined type
that names the missing path, and the cleaning/escaping applied to every output value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from jinja2 import StrictUndefined
from jinja2.exceptions import TemplateRuntimeError

_CONTROL_EXCEPT_NL_TAB = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CRLF = re.compile(r"\r\n?")
_MD_PUNCT = re.compile(r"([!-/:-@\[-`{-~])")
_MD_SPACE = re.compile(r"\s+")
_LINE_BREAKING = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")


def clean_text(value: str) -> str:
    """Text-part cleaning: drop control characters except newline and tab."""
    if value.isprintable():
        return value
    return _CONTROL_EXCEPT_NL_TAB.sub("", _CRLF.sub("\n", value))


def one_line(value: str) -> str:
    """Subject cleaning: any run of whitespace or control characters becomes one space."""
    if value.isprintable() and "  " not in value:  # the usual case: " " is its only space
        return value.strip()
    return _LINE_BREAKING.sub(" ", value).strip()


def markdown_escape(value: str) -> str:
    """Make `value` literal text in CommonMark, whatever it contains.

    Every ASCII punctuation character is backslash-escaped (CommonMark allows it for all of
    them), which neutralises emphasis, links, autolinks, raw HTML, entities, code spans and
    list/heading/quote markers. Whitespace runs collapse so a value cannot end a paragraph,
    indent a code block or add a hard line break; HTML shows collapsed whitespace anyway.
    """
    value = clean_text(value)
    value = _MD_SPACE.sub(lambda m: "\n" if "\n" in m.group() else " ", value)
    return _MD_PUNCT.sub(r"\\\1", value)


def plain(value: Any) -> str:
    """`value` as a plain str: a Markup that reaches a guard from outside is not trusted."""
    if isinstance(value, str):
        return str.__str__(value)
    refuse_lazy(value)
    return str(value)


def refuse_lazy(value: Any) -> None:
    """A generator or other iterator (what `map`, `select`, `reject`, `reverse` give) has no
    text but Python's `<generator object ... at 0x...>`: refuse it, saying what to do."""
    if isinstance(value, Iterator):
        raise TemplateRuntimeError(
            "a filter chain ends in a lazy sequence, which has no text: end it with"
            " | join(', ') (or | list)"
        )


class Record:
    """A read-only view of a mapping for templates: `candidate.first_name`.

    Keys win over any method name (no `.items` surprise), a missing key is undefined (so
    StrictUndefined reports it unless `| default` is used), nested mappings are Records too,
    and strings come out as plain `str`, never as a trusted `Markup`.
    """

    __slots__ = ("_name", "_data")

    def __init__(self, name: str, data: Mapping[str, Any]):
        self._name = name
        self._data = data

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        if type(value) is str:  # the usual case; no need to build the path name
            return value
        return view(f"{self._name}.{key}", value)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        # A Record has no text: shown in an email (`{{ candidate.jobs }}`, or inside a list)
        # it would read "<candidate.jobs>". Refused, so `check` finds it at file:line.
        keys = [key for key, value in self._data.items() if isinstance(key, str)]
        texts = [key for key in keys if isinstance(self._data[key], str)]
        example = (texts or keys or ["field"])[0]
        raise TemplateRuntimeError(
            f"'{self._name}' holds fields, not text: show one of them, such as "
            f"{self._name}.{example}"
        )

    __str__ = __repr__

    # Underscore names: invisible to templates (sandbox) and never shadow a field.
    def _raw_values(self) -> list[Any]:
        return [*self._data.keys(), *self._data.values()]


class Items(tuple):
    """A list as templates see it (`candidate.tags`): a tuple of views whose text is its items
    joined by ", ", so `{{ candidate.tags }}` reads "python, go" in an email, never Python's
    "('python', 'go')". Loops, `length`, `in` and `join` see the items as they are."""

    __slots__ = ()

    def __str__(self) -> str:
        return ", ".join(map(plain, self))


def view(name: str, value: Any) -> Any:
    """Wrap one context value (`candidate`, `company`, ...) for templates: mappings become
    Records, sequences `Items` of views, strings plain `str`."""
    kind = type(value)
    if kind is str:
        return value
    if kind is dict:  # the usual mapping; the ABC check below costs more
        return Record(name, value)
    if isinstance(value, str):
        return plain(value)
    if isinstance(value, Mapping):
        return Record(name, value)
    if isinstance(value, list | tuple):
        return Items(view(name, item) for item in value)
    return value


class PathUndefined(StrictUndefined):
    """StrictUndefined whose message names the path: `'candidate.nickname' is undefined`.

    Its repr fails too: a list holding an undefined value (`tags | map(attribute='x') |
    list`) would otherwise show the text "Undefined" wherever the list is shown.
    """

    __slots__ = ()
    __repr__ = StrictUndefined._fail_with_undefined_error

    @property
    def _undefined_message(self) -> str:
        obj = self._undefined_obj
        if isinstance(obj, Record) and self._undefined_hint is None:
            return f"'{obj._name}.{self._undefined_name}' is undefined"
        return super()._undefined_message
