"""Simple templates evaluated without Jinja: the skeleton cache's usual case.

A template that only outputs text and variables, tests variables (truth, `is defined`,
`==`/`!=` a constant) and includes files by constant name compiles to a small program (a
list of ops). Running it does what Jinja's run of the template would do (the same lookups
through the sandbox, the same tests, the same `finalize` checks and charges) without
building Jinja's context, so a warm render costs a few dictionary look-ups per value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from jinja2 import Undefined, nodes
from markupsafe import Markup, escape

from .template_budget import MAX_VALUE, check
from .template_cache import MARKS, Unsupported, layout_simple, token
from .template_values import Record, clean_text, plain, view

# -- simple templates, evaluated without Jinja -------------------------------------------
# A program is a list of ops: str (template text), ("out", path), ("if", branches, else_)
# where a path is a tuple of names, branches a list of (condition, program) and a condition
# ("truth" | "defined", path, negated) or ("eq", path, constant, negated).


def _path(node: nodes.Node) -> tuple[str, ...] | None:
    if isinstance(node, nodes.Name) and node.ctx == "load":
        return (node.name,)
    if isinstance(node, nodes.Getattr) and node.ctx == "load":
        base = _path(node.node)
        return None if base is None else (*base, node.attr)
    return None


def _condition(test: nodes.Node) -> tuple | None:
    negated = False
    while isinstance(test, nodes.Not):
        negated, test = not negated, test.node
    path = _path(test)
    if path is not None:
        return ("truth", path, negated)
    if (isinstance(test, nodes.Test) and test.name == "defined" and not test.args
            and not test.kwargs and test.dyn_args is None and test.dyn_kwargs is None):
        path = _path(test.node)
        return None if path is None else ("defined", path, negated)
    if isinstance(test, nodes.Compare) and len(test.ops) == 1 and test.ops[0].op in ("eq", "ne"):
        left, right = test.expr, test.ops[0].expr
        if isinstance(left, nodes.Const):
            left, right = right, left
        path = _path(left)
        if path is None or not isinstance(right, nodes.Const) or not isinstance(
            right.value, str | int | bool | None
        ):
            return None
        return ("eq", path, right.value, negated is (test.ops[0].op == "eq"))
    return None


def simple_program(
    body: list[nodes.Node], include: Callable[[str], list[Any] | None] | None = None
) -> list[Any] | None:
    """`body` as a program if it only outputs text and variables, tests variables (truth,
    `is defined`, `==`/`!=` a constant) and includes files by constant name; else None."""
    program: list[Any] = []
    for node in body:
        if isinstance(node, nodes.Output):
            for child in node.nodes:
                if isinstance(child, nodes.TemplateData):
                    if MARKS.search(child.data):
                        return None  # template text that could pass for a token
                    program.append(child.data)
                    continue
                path = _path(child)
                if path is None:
                    return None
                program.append(("out", path))
        elif isinstance(node, nodes.If):
            branches = []
            for test, sub in [(node.test, node.body), *((e.test, e.body) for e in node.elif_)]:
                condition = _condition(test)
                if condition is None or condition[1][0] == "content":
                    return None
                inner = simple_program(sub, include)
                if inner is None:
                    return None
                branches.append((condition, inner))
            else_ = simple_program(node.else_, include)
            if else_ is None:
                return None
            program.append(("if", branches, else_))
        elif (isinstance(node, nodes.Include) and include is not None and node.with_context
              and not node.ignore_missing and isinstance(node.template, nodes.Const)
              and isinstance(node.template.value, str)):
            inner = include(node.template.value)
            if inner is None:
                return None
            program += inner
        else:
            return None
    return program


def layout_program(body: list[nodes.Node]) -> list[Any] | None:
    return simple_program(body)


class ProgramRun:
    """Evaluates a program as Jinja would run its template (same lookups and tests, and
    StrictUndefined's errors become Unsupported). Subclasses say what an output does."""

    def __init__(self, env: Any, context: Mapping[str, Any]):
        self.env = env
        self.context = context
        self.signature: list[Any] = []

    def value(self, path: tuple[str, ...], undefined_ok: bool = False) -> Any:
        try:
            value = self.context[path[0]]
        except KeyError:
            raise Unsupported(f"{path[0]} is not a context variable") from None
        for attr in path[1:]:
            if type(value) is Record and attr[:1] != "_":
                # `BoundedEnvironment.getattr`'s fast path and `Record.__getitem__` (see
                # template_values), inlined: a Record's public names are its keys; a missing
                # one is undefined.
                try:
                    item = value._data[attr]
                except KeyError:
                    value = self.env.undefined(obj=value, name=attr)
                else:
                    value = item if type(item) is str else view(f"{value._name}.{attr}", item)
                continue
            if isinstance(value, Undefined):
                raise Unsupported("undefined")
            value = self.env.getattr(value, attr)
        if isinstance(value, Undefined) and not undefined_ok:
            raise Unsupported("undefined")
        return value

    def test(self, condition: tuple) -> bool:
        kind, path = condition[0], condition[1]
        if kind == "truth":
            return bool(self.value(path)) is not condition[2]
        if kind == "defined":
            return isinstance(self.value(path, True), Undefined) is condition[2]
        return bool(self.value(path) == condition[2]) is not condition[3]

    def output(self, path: tuple[str, ...]) -> None:
        raise NotImplementedError

    # What template text does: appended to this list, or (None) nothing.
    text_out: list[str] | None = None

    def run(self, program: list[Any]) -> None:
        text_out = self.text_out
        for op in program:
            if type(op) is str:
                if text_out is not None:
                    text_out.append(op)
            elif op[0] == "out":
                self.output(op[1])
            else:
                _, branches, else_ = op
                for number, (condition, body) in enumerate(branches):
                    if self.test(condition):
                        self.signature.append(number)
                        self.run(body)
                        break
                else:
                    self.signature.append(-1)
                    self.run(else_)


class TextRun(ProgramRun):
    """The text environment's rendering (`finalize_text`, no autoescape) into `out`;
    `tokens=True` makes it the token pass (`finalize_token`) without the output: values are
    recorded in `texts`, and `token_skeleton(program, signature)` is what it would output."""

    def __init__(self, env: Any, context: Mapping[str, Any], tokens: bool):
        super().__init__(env, context)
        self.tokens = tokens
        self.chars = 0
        self.out: list[str] = []
        self.text_out = None if tokens else self.out
        self.texts: list[str] = []

    def output(self, path: tuple[str, ...]) -> None:
        value = self.value(path)
        if type(value) is str and value.isprintable():  # the usual case, checked the same
            if len(value) > MAX_VALUE:
                raise Unsupported("value too large")
            text = value
        else:
            if isinstance(value, Markup):
                raise Unsupported("a trusted string reached the output")
            check(value)
            text = clean_text(plain(value))
        self.chars += len(text)  # charged by the caller: only the total decides
        if self.tokens:
            self.texts.append(text)
        else:
            self.out.append(text)


def token_skeleton(program: list[Any], signature: list[int]) -> str:
    """The token pass's output for the branches it took (a TextRun's `signature`): the
    template text, and a token per output, numbered in order."""
    out: list[str] = []
    outputs = 0
    branches = iter(signature)

    def walk(ops: list[Any]) -> None:
        nonlocal outputs
        for op in ops:
            if type(op) is str:
                out.append(op)
            elif op[0] == "out":
                out.append(token(outputs))
                outputs += 1
            else:
                number = next(branches)
                walk(op[1][number][1] if number >= 0 else op[2])

    walk(program)
    return "".join(out)


class LayoutRun(ProgramRun):
    """The layout's Jinja pass (same lookups, `finalize_text` checks and charges, autoescape)
    with simple values kept as tokens: `signature` is what varies between emails (branches
    taken, values inlined, token indices), `texts` the tokens' values."""

    def __init__(self, env: Any, context: Mapping[str, Any], content_chars: int, first: int):
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
            if MARKS.search(text):
                raise Unsupported("a value looks like a token")
            signature.append(str(escape(text)))


def build_layout(
    program: list[Any], signature: Iterator[Any], content_pieces: list[str],
    content_indices: list[int], out: list[str | int] | None = None,
) -> list[str | int]:
    """The layout's output for a signature `LayoutRun` made: text and token indices, with
    the content skeleton (pieces and the token indices between them) in place of content."""
    out = [] if out is None else out
    for op in program:
        if type(op) is str:
            out.append(op)
        elif op[0] == "out":
            item = next(signature)
            if item is None:  # content
                out.append(content_pieces[0])
                for index, piece in zip(content_indices, content_pieces[1:], strict=True):
                    out.append(index)
                    out.append(piece)
            else:
                out.append(item)
        else:
            _, branches, else_ = op
            number = next(signature)
            build_layout(
                branches[number][1] if number >= 0 else else_, signature, content_pieces,
                content_indices, out,
            )
    return out
