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


class Program(list):
    """A program as `simple_program` makes it, with the runners `compiled` made for it."""

    __slots__ = ("runners",)

    def __init__(self) -> None:
        super().__init__()
        self.runners: dict[str, Callable[[Any], None]] = {}


def simple_program(
    body: list[nodes.Node], include: Callable[[str], list[Any] | None] | None = None
) -> list[Any] | None:
    """`body` as a program if it only outputs text and variables, tests variables (truth,
    `is defined`, `==`/`!=` a constant) and includes files by constant name; else None."""
    program = Program()
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
    StrictUndefined's errors become Unsupported). Subclasses say what outputting a value
    does (`emit`)."""

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

    # The closures `compiled` makes for this run: "text" (template text appended to `out`,
    # a TextRun's), "tokens" (dropped) or "layout" (dropped; `content` is the page's body).
    mode = "tokens"

    def run(self, program: Program) -> None:
        compiled(program, self.mode)(self)

    def emit(self, value: Any) -> None:
        """What outputting `value` (a looked-up value) does."""
        raise NotImplementedError


class TextRun(ProgramRun):
    """The text environment's rendering (`finalize_text`, no autoescape) into `out`;
    `tokens=True` makes it the token pass (`finalize_token`) without the output: values are
    recorded in `texts`, and `token_skeleton(program, signature)` is what it would output."""

    def __init__(self, env: Any, context: Mapping[str, Any], tokens: bool):
        super().__init__(env, context)
        self.tokens = tokens
        self.chars = 0
        self.out: list[str] = []
        self.mode = "tokens" if tokens else "text"
        self.texts: list[str] = []

    def emit(self, value: Any) -> None:
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

    mode = "layout"

    def __init__(self, env: Any, context: Mapping[str, Any], content_chars: int, first: int):
        super().__init__(env, context)
        self.content_chars = content_chars
        self.next_index = first
        self.texts: dict[int, str] = {}
        self.chars = 0

    def content(self, path: tuple[str, ...]) -> None:
        """An output of `content` (the page's body): a place in the signature, no value."""
        if len(path) > 1 or self.content_chars > MAX_VALUE:
            raise Unsupported("content")
        self.chars += self.content_chars
        self.signature.append(None)

    def emit(self, value: Any) -> None:
        signature = self.signature
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


# -- programs as closures ----------------------------------------------------------------
# `ProgramRun.run` runs a program through closures made once per program and mode: an
# output is one call that looks its value up (a path of one or two public names inlined, as
# `ProgramRun.value` does it) and hands it to the run's `emit`; a branch tests its
# conditions the same way; template text is appended ("text") or dropped ("tokens",
# "layout"). The program list itself stays what `token_skeleton` and `build_layout` walk.
# Only names and constants go into closures: nothing of a template is ever compiled as code.

def compiled(program: Program, mode: str) -> Callable[[Any], None]:
    """`program`'s runner in `mode` ("text", "tokens" or "layout"), kept with it."""
    runner = program.runners.get(mode)
    if runner is None:
        runner = program.runners[mode] = _block(program, mode)
    return runner


def _block(program: list[Any], mode: str) -> Callable[[Any], None]:
    steps = [_step(op, mode) for op in program if type(op) is not str or mode == "text"]
    if len(steps) == 1:
        return steps[0]

    def block(run: Any) -> None:
        for step in steps:
            step(run)

    return block


def _step(op: Any, mode: str) -> Callable[[Any], None]:
    if type(op) is str:
        def text(run: Any, text: str = op) -> None:
            run.out.append(text)

        return text
    if op[0] == "out":
        path = op[1]
        if mode == "layout" and path[0] == "content":
            return lambda run: run.content(path)
        get = _getter(path, False)

        def out(run: Any) -> None:
            run.emit(get(run))

        return out
    _, branches, else_ = op
    tests = [(_test(condition), _block(body, mode)) for condition, body in branches]
    otherwise = _block(else_, mode)

    def branch(run: Any) -> None:
        for number, (test, body) in enumerate(tests):
            if test(run):
                run.signature.append(number)
                body(run)
                return
        run.signature.append(-1)
        otherwise(run)

    return branch


def _test(condition: tuple) -> Callable[[Any], bool]:
    kind, path = condition[0], condition[1]
    if kind == "truth":
        get, negated = _getter(path, False), condition[2]
        return lambda run: bool(get(run)) is not negated
    if kind == "defined":
        get, negated = _getter(path, True), condition[2]
        return lambda run: isinstance(get(run), Undefined) is negated
    get, constant, negated = _getter(path, False), condition[2], condition[3]
    return lambda run: bool(get(run) == constant) is not negated


def _getter(path: tuple[str, ...], undefined_ok: bool) -> Callable[[Any], Any]:
    """`ProgramRun.value(path, undefined_ok)`, with a path of one name or of a name and a
    public attribute inlined."""
    head = path[0]
    if len(path) == 1:
        def one(run: Any) -> Any:
            try:
                value = run.context[head]
            except KeyError:
                raise Unsupported(f"{head} is not a context variable") from None
            if not undefined_ok and isinstance(value, Undefined):
                raise Unsupported("undefined")
            return value

        return one
    if len(path) == 2 and path[1][:1] != "_":
        attr = path[1]

        def two(run: Any) -> Any:
            try:
                value = run.context[head]
            except KeyError:
                raise Unsupported(f"{head} is not a context variable") from None
            if type(value) is Record:
                try:
                    item = value._data[attr]
                except KeyError:
                    value = run.env.undefined(obj=value, name=attr)
                else:
                    if type(item) is str:
                        return item
                    value = view(f"{value._name}.{attr}", item)
            else:
                if isinstance(value, Undefined):
                    raise Unsupported("undefined")
                value = run.env.getattr(value, attr)
            if not undefined_ok and isinstance(value, Undefined):
                raise Unsupported("undefined")
            return value

        return two
    return lambda run: run.value(path, undefined_ok)


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
