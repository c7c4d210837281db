"""The skeleton cache's tokens and its proofs: when string substitution equals a render.

One Jinja pass renders the body with every `{{ }}` output replaced by an opaque token
(`\\ue000<n>\\ue001`, private-use characters no value is allowed to contain), recording the
values. The text part is that skeleton with each token replaced by the cleaned value. The
Markdown skeleton keeps the tokens of "simple" values (see `md_text`) and inlines the
Markdown-escaped text of the others, so it is exactly today's Markdown except for the
tokens; it keys the Markdown cache (as the token pass's skeleton and the inlined texts; a
template run without Jinja names its skeleton by the branches taken, and builds it only on
a miss). The layout is evaluated the same way (values become tokens, `content` the HTML
skeleton), the footer added, and CSS inlined once per document skeleton. A render on a warm cache is then string substitution (`template_skeleton`
runs it; `template_programs` evaluates the usual templates without Jinja).

Equivalence with the full path rests on checks made once per skeleton (`analyze_markdown`,
`analyze_document`) and per value (`md_text`, `layout_simple`, `MarkdownEntry.accepts`);
when any does not hold the caller renders the full, uncached way. Every check is
conservative: it refuses whenever a value could be read differently from its token.
"""

from __future__ import annotations

import contextvars
import re
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes, pass_eval_context
from markdown_it import MarkdownIt
from markupsafe import Markup

from .template_budget import check, current_budget
from .template_values import clean_text, plain

OPEN, CLOSE = "\ue000", "\ue001"
TOKEN = re.compile("\ue000([0-9]+)\ue001")
MARKS = re.compile("[\ue000\ue001]")
_MD_SPACE = re.compile(r"\s+")
CACHE_SIZE = 512


def token(index: int) -> str:
    return f"{OPEN}{index}{CLOSE}"


class Unsupported(Exception):
    """The fast path cannot prove this rendering equal to the full one: render fully."""


# -- the token pass ------------------------------------------------------------------------
_RECORDER: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "token_recorder", default=None
)


@pass_eval_context  # like the other finalizers: never folded at compile time
def finalize_token(eval_ctx: Any, value: Any) -> str:
    """`finalize_text`'s checks and charge, but the output is a token; the value is kept."""
    if isinstance(value, Markup):
        raise Unsupported("a trusted string reached the output")
    check(value)
    text = clean_text(plain(value))
    current_budget().produce(len(text))
    recorder = _RECORDER.get()
    if recorder is None:
        raise Unsupported("token pass outside a recorder")
    recorder.append(text)
    return token(len(recorder) - 1)


class Recording:
    """`with Recording() as values:` collects the values `finalize_token` replaces."""

    def __enter__(self) -> list[str]:
        self.values: list[str] = []
        self._reset = _RECORDER.set(self.values)
        return self.values

    def __exit__(self, *exc: object) -> None:
        _RECORDER.reset(self._reset)


# Constructs that capture rendered output into a value (which template logic could then
# inspect, token and all), change how it is escaped, or hide which files are rendered.
_CAPTURING = (
    nodes.Macro, nodes.CallBlock, nodes.FilterBlock, nodes.AssignBlock, nodes.Block,
    nodes.Extends, nodes.Import, nodes.FromImport, nodes.EvalContextModifier,
    nodes.ScopedEvalContextModifier,
)
# Filters that make trusted (Markup) strings, which the text and Markdown environments
# treat differently; without them both environments run the same logic on the same values.
_MARKUP_FILTERS = frozenset({"e", "escape", "forceescape", "tojson", "xmlattr", "safe", "urlize"})
_HIDDEN_NAMES = frozenset({"self", "caller", "varargs", "kwargs", "super"})


def token_pass_ok(tree: nodes.Template) -> tuple[bool, list[str]]:
    """(whether one token pass can stand for both body passes, names of included files)."""
    includes: list[str] = []
    for node in tree.find_all(nodes.Node):
        if isinstance(node, _CAPTURING):
            return False, []
        if isinstance(node, nodes.Filter | nodes.Test) and node.name in _MARKUP_FILTERS:
            return False, []
        if isinstance(node, nodes.Name) and node.name in _HIDDEN_NAMES:
            return False, []
        if isinstance(node, nodes.Include):
            if not isinstance(node.template, nodes.Const) or not isinstance(
                node.template.value, str
            ):
                return False, []
            includes.append(node.template.value)
    return True, includes


# -- values ----------------------------------------------------------------------------------
def md_text(text: str) -> str | None:
    """What markdown-it shows of `markdown_escape(text)` when that can be a token, else None.

    Simple: one line, no leading or trailing whitespace, not empty, printable (no private-use,
    format or unassigned characters). The escape's backslashes all go (each precedes an ASCII
    punctuation character) and whitespace runs were collapsed to one space.
    """
    if text.isprintable() and "  " not in text:  # the usual case: nothing to collapse
        return text if text and text[0] != " " and text[-1] != " " else None
    return md_text_slow(text)


def md_text_slow(text: str) -> str | None:
    text = _MD_SPACE.sub(_space, text)
    if not text or "\n" in text or not text.isprintable() or text != text.strip():
        return None
    return text


def _space(match: re.Match[str]) -> str:
    return "\n" if "\n" in match.group() else " "


def layout_simple(text: str) -> bool:
    """A layout value can be a token: not empty, not starting with whitespace (the HTML
    parser treats leading whitespace specially in some places), printable but for newlines
    and tabs."""
    if not text or text[0].isspace():
        return False
    return text.isprintable() or text.replace("\n", "").replace("\t", "").isprintable()


def url_simple(url: str) -> bool:
    return bool(url) and url.isprintable() and not url[0].isspace()


def escape_md_html(text: str) -> str:
    """markdown-it's escapeHtml."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace(
        '"', "&quot;"
    )


def serialize_text(text: str) -> str:
    """How css_inline's serializer writes a text node."""
    return text.replace("&", "&amp;").replace("\u00a0", "&nbsp;").replace(
        "<", "&lt;"
    ).replace(">", "&gt;")


def serialize_attr(text: str) -> str:
    """How css_inline's serializer writes a double-quoted attribute value."""
    return text.replace("&", "&amp;").replace("\u00a0", "&nbsp;").replace('"', "&quot;")


def _punct(char: str) -> bool:
    return unicodedata.category(char).startswith(("P", "S"))


# -- the Markdown stage ------------------------------------------------------------------------
@dataclass(frozen=True)
class MarkdownEntry:
    """markdown-it's HTML for one Markdown skeleton, and what its values must satisfy."""

    html: str  # with the tokens
    left: frozenset[int]  # tokens right after `*`/`_`: the value's first character counts
    right: frozenset[int]  # tokens right before `*`/`_`: its last character counts
    line_start: frozenset[int]  # tokens that may start a block: all-digit values could list

    def accepts(self, texts: dict[int, str]) -> bool:
        for i in self.left:
            if _punct(texts[i][0]):
                return False
        for i in self.right:
            if _punct(texts[i][-1]):
                return False
        return not any(texts[i].isascii() and texts[i].isdigit() for i in self.line_start)


_BLOCK_MARKERS = re.compile(r"[\s!-/:-@\[-`{-~0-9]*")


def analyze_markdown(md: MarkdownIt, skeleton: str) -> MarkdownEntry | None:
    """The entry for `skeleton`, or None if a value could change the Markdown around it."""
    expected = [int(i) for i in TOKEN.findall(skeleton)]
    if len(expected) != len(set(expected)) or MARKS.search(TOKEN.sub("", skeleton)):
        return None
    left, right, line_start = set(), set(), set()
    for match in TOKEN.finditer(skeleton):
        start, end, index = match.start(), match.end(), int(match.group(1))
        before = skeleton[start - 1] if start else "\n"
        after = skeleton[end] if end < len(skeleton) else "\n"
        if before == "\\":
            return None  # would escape the value's own escape
        if re.search(r"&[A-Za-z0-9#]*\Z", skeleton[max(0, start - 64):start]):
            return None  # the value could complete an entity reference
        if before in "*_":
            left.add(index)
        if after in "*_":
            right.add(index)
        # An all-digit value could make an ordered list marker ("1." or "1)") if the line
        # could start a block up to here and digits, "." or ")" (or another value) follow.
        line = skeleton[skeleton.rfind("\n", 0, start) + 1:start]
        if _BLOCK_MARKERS.fullmatch(line) and (after in ".)" + OPEN or after.isdigit()):
            line_start.add(index)
    env: dict[str, Any] = {}
    tokens = md.parse(skeleton, env)
    if env.get("references"):
        return None  # a value could match a reference label its token does not
    seen: list[int] = []
    for block in tokens:
        if block.type != "inline":
            if _has_marks(block):
                return None
            continue
        autolink = False
        for child in block.children or []:
            if child.type == "text":
                if "`" in child.content or "<" in child.content:
                    return None  # an unmatched opener a value's character could close
                if MARKS.search(child.content):
                    if autolink:
                        return None
                    seen += [int(i) for i in TOKEN.findall(child.content)]
                continue
            if child.type == "link_open":
                autolink = child.markup == "autolink"
            elif child.type == "link_close":
                autolink = False
            if _has_marks(child):
                return None
    if sorted(seen) != sorted(expected):
        return None  # a token went into a link destination, a code span, ...
    html = md.renderer.render(tokens, md.options, env)
    if sorted(int(i) for i in TOKEN.findall(html)) != sorted(expected):
        return None
    if MARKS.search(TOKEN.sub("", html)):
        return None
    return MarkdownEntry(html, frozenset(left), frozenset(right), frozenset(line_start))


def _has_marks(tok: Any) -> bool:
    fields = [tok.content, tok.info, tok.markup, *(str(v) for v in (tok.attrs or {}).values())]
    if any(MARKS.search(f) for f in fields if f):
        return True
    return any(_has_marks(child) for child in tok.children or [])


# -- the HTML stage ---------------------------------------------------------------------------
_TAG = re.compile(r"<(/?)([A-Za-z][^\s/>]*)")
_ATTR_NAME = re.compile(r"[^\s/>][^\s/>=]*")
_SPACE = re.compile(r"[\s/]*")
_RAW = frozenset({"style", "script", "xmp", "iframe", "noembed", "noframes", "noscript",
                  "textarea", "title", "plaintext"})
_REFUSED = frozenset({"svg", "math", "template", "frameset", "frame", "plaintext"})
_ENTITY_TAIL = re.compile(r"&[A-Za-z0-9#]*\Z")


def analyze_document(document: str) -> dict[int, str] | None:
    """Where each token of a layout-with-footer skeleton sits: "text" or "attr".

    None unless every token is in text (data state, or in <title>) or in a quoted href/title
    attribute of an <a> start tag, nowhere a value's characters could join an entity or a
    tag, and CSS selectors cannot look at attribute values.
    """
    contexts: dict[int, str] = {}
    css: list[str] = []
    attr_tokens = has_link = False
    pos, size = 0, len(document)

    def place(segment_start: int, segment_end: int, kind: str) -> bool:
        segment = document[segment_start:segment_end]
        if MARKS.search(TOKEN.sub("", segment)):
            return False
        for match in TOKEN.finditer(segment):
            start = segment_start + match.start()
            if _ENTITY_TAIL.search(document[max(0, start - 64):start]):
                return False
            index = int(match.group(1))
            if contexts.setdefault(index, kind) != kind:
                return False
        return True

    while pos < size:
        lt = document.find("<", pos)
        if lt < 0:
            lt = size
        if not place(pos, lt, "text"):
            return None
        if lt >= size:
            break
        if document.startswith("<!--", lt):
            end = document.find("-->", lt + 2)
            if end < 0 or "--!" in document[lt:end + 3] or MARKS.search(document[lt:end]):
                return None
            pos = end + 3
            continue
        nxt = document[lt + 1:lt + 3]
        if nxt[:1] in (OPEN, CLOSE) or nxt == "/" + OPEN:
            return None  # a value there could open a tag
        if document.startswith(("<!", "<?"), lt) or (nxt[:1] == "/" and not _TAG.match(
            document, lt
        )):
            end = document.find(">", lt)
            if end < 0 or MARKS.search(document[lt:end]):
                return None
            pos = end + 1
            continue
        match = _TAG.match(document, lt)
        if match is None:
            pos = lt + 1  # a literal "<"
            continue
        closing, name = bool(match.group(1)), match.group(2).lower()
        if MARKS.search(name) or name in _REFUSED:
            return None
        has_link = has_link or name == "link"
        pos = match.end()
        while True:  # attributes
            pos = _SPACE.match(document, pos).end()
            if pos >= size:
                return None
            if document[pos] == ">":
                pos += 1
                break
            attr = _ATTR_NAME.match(document, pos)
            if attr is None or MARKS.search(attr.group()):
                return None
            attr_name = attr.group().lower()
            pos = attr.end()
            while pos < size and document[pos].isspace():
                pos += 1
            if pos < size and document[pos] == "=":
                pos += 1
                while pos < size and document[pos].isspace():
                    pos += 1
                if pos < size and document[pos] in "\"'":
                    quote = document[pos]
                    end = document.find(quote, pos + 1)
                    if end < 0:
                        return None
                    if MARKS.search(document[pos + 1:end]):
                        if closing or name != "a" or attr_name not in ("href", "title"):
                            return None
                        if not place(pos + 1, end, "attr"):
                            return None
                        attr_tokens = True
                    pos = end + 1
                else:
                    value = re.compile(r"[^\s>]*").match(document, pos)
                    assert value is not None
                    if MARKS.search(value.group()):
                        return None
                    pos = value.end()
        if not closing and name in _RAW:
            close = re.compile(rf"</{name}[\s/>]", re.IGNORECASE).search(document, pos)
            end = close.start() if close else size
            if name == "title":
                if not place(pos, end, "text"):
                    return None
            elif MARKS.search(document[pos:end]):
                return None
            if name == "style":
                css.append(document[pos:end])
            pos = end
    if attr_tokens and (has_link or any("[" in sheet for sheet in css)):
        return None  # a selector could test an attribute value
    return contexts


# -- pieces and the LRU -----------------------------------------------------------------------
def split(skeleton: str) -> tuple[list[str], list[int]]:
    """`skeleton` as literal pieces and the token indices between them."""
    parts = TOKEN.split(skeleton)
    return parts[0::2], [int(i) for i in parts[1::2]]


def fill(pieces: list[str], indices: list[int], values: Any) -> str:
    """The pieces with `values[index]` between them (ValueError if the counts differ)."""
    out: list[str | None] = [None] * (2 * len(pieces) - 1)
    out[0::2] = pieces
    out[1::2] = [values[index] for index in indices]
    return "".join(out)  # type: ignore[arg-type]


class LRU:
    """A small least-recently-used mapping; `None` entries (not cacheable) are kept too."""

    def __init__(self, size: int = CACHE_SIZE):
        self._data: OrderedDict[Any, Any] = OrderedDict()
        self._size = size

    def get(self, key: Any, default: Any = KeyError) -> Any:
        try:
            value = self._data[key]
        except KeyError:
            if default is KeyError:
                raise
            return default
        self._data.move_to_end(key)
        return value

    def put(self, key: Any, value: Any) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self._size:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)
