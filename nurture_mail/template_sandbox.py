"""The bounded Jinja2 sandbox templates render in.

Owns the three environments (plain text, Markdown-for-HTML, HTML layout), the per-rendering
resource budget, and the guards that keep a template from escaping the sandbox, exhausting
memory or CPU, or letting a candidate value add Markdown/HTML markup.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import wraps
from typing import Any

from jinja2 import StrictUndefined, Undefined, nodes, pass_context, pass_eval_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError, TemplateRuntimeError, TemplateSyntaxError
from jinja2.runtime import BlockReference, LoopContext, Macro, Namespace, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup, escape

# Limits of one rendering (one email). Generous for any real email, small enough that a
# hostile or buggy template fails in well under a second instead of hanging the daemon.
MAX_OUTPUT = 1_000_000  # characters of one rendered part
MAX_VALUE = 1_000_000  # characters (or weighted items) of any single intermediate value
MAX_CHARS = 8_000_000  # characters produced by string operations, all summed
MAX_STEPS = 500_000  # loop iterations + calls + items inspected by the guards
MAX_INT_BITS = 16_384  # integers beyond ~4,900 digits are never needed in an email
MAX_RANGE = 100_000  # items of one range()

_CONTROL_EXCEPT_NL_TAB = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CRLF = re.compile(r"\r\n?")
_MD_PUNCT = re.compile(r"([!-/:-@\[-`{-~])")
_MD_SPACE = re.compile(r"\s+")
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


class BudgetExceeded(TemplateRuntimeError):
    """A rendering went over one of the limits above."""


@dataclass
class Budget:
    """What one rendering has used so far; lives in a context variable during render."""

    steps: int = 0
    chars: int = 0

    def step(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > MAX_STEPS:
            raise BudgetExceeded(f"template does too much work (over {MAX_STEPS:,} steps)")

    def produce(self, n: int) -> None:
        self.chars += n
        if self.chars > MAX_CHARS:
            raise BudgetExceeded(f"template builds too much text (over {MAX_CHARS:,} chars)")


_BUDGET: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("budget", default=None)


def _budget() -> Budget:
    budget = _BUDGET.get()
    if budget is None:
        # Rendering outside `bounded()` would run without limits; refuse instead.
        raise RuntimeError("templates must be rendered inside template_sandbox.bounded()")
    return budget


@contextlib.contextmanager
def bounded() -> Iterator[Budget]:
    """Give the renderings inside the block one fresh budget."""
    token = _BUDGET.set(Budget())
    try:
        yield _BUDGET.get()  # type: ignore[misc]
    finally:
        _BUDGET.reset(token)


def clean_text(value: str) -> str:
    """Text-part cleaning: drop control characters except newline and tab."""
    if value.isprintable():
        return value
    return _CONTROL_EXCEPT_NL_TAB.sub("", _CRLF.sub("\n", value))


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
    return str.__str__(value) if isinstance(value, str) else str(value)


def weight(value: Any, limit: int = MAX_VALUE) -> int:
    """Roughly how many characters `str(value)` would have, without building it.

    Shared references are counted each time they appear (as repr would), memoised per object,
    so a structure built by repeated doubling is measured in linear time and refused.
    """
    if type(value) is str or isinstance(value, str):
        return len(value)
    memo: dict[int, int] = {}
    budget = _budget()

    def size(item: Any) -> int:
        if isinstance(item, str):
            return len(item)
        if isinstance(item, bool) or item is None:
            return 5
        if isinstance(item, int):
            return item.bit_length() // 3 + 1
        if isinstance(item, range):
            return len(item) * 8
        if isinstance(item, dict):
            children: Iterable[Any] = [*item.keys(), *item.values()]
        elif isinstance(item, list | tuple | set | frozenset):
            children = item
        elif isinstance(item, Namespace):
            children = item._Namespace__attrs.values()  # type: ignore[attr-defined]
        elif isinstance(item, Record):
            children = item._raw_values()
        else:
            return 16
        key = id(item)
        if key in memo:
            return memo[key]
        memo[key] = 16  # a cycle: repr shows "..." for lists/dicts
        total = 2
        for child in children:
            budget.step()
            total += size(child) + 2
            if total > limit:
                raise BudgetExceeded(f"value too large (over {limit:,} characters)")
        memo[key] = total
        return total

    return size(value)


def check(value: Any) -> Any:
    if weight(value) > MAX_VALUE:
        raise BudgetExceeded(f"value too large (over {MAX_VALUE:,} characters)")
    return value


def bounded_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise BudgetExceeded(f"range too big (over {MAX_RANGE:,} items)")
    return rng


def _counted(iterable: Any, body_chars: int) -> Iterator[Any]:
    """Charge every loop iteration, plus the template text its body outputs."""
    if isinstance(iterable, Undefined):
        iterable = iter(iterable)  # StrictUndefined raises here, as a plain loop would
    budget = _budget()
    for item in iterable:
        budget.step()
        if body_chars:
            budget.produce(body_chars)
        yield item


@pass_context
def _loop_filter(context: Any, iterable: Any, body_chars: int) -> Iterator[Any]:
    # pass_context keeps Jinja from running this at compile time on constant lists.
    return _counted(iterable, body_chars)


def _format_widths_ok(fmt: str) -> None:
    for match in _PERCENT_SPEC.finditer(fmt):
        for part in match.groups():
            if part == "*" or (part and int(part) > 1000):
                raise BudgetExceeded("format width/precision over 1000 refused")


def _guard_str_method(method: Any, args: tuple, kwargs: dict) -> None:
    """Refuse str method calls whose result would be huge before Python builds it."""
    owner = method.__self__
    name = method.__name__
    if name in {"center", "ljust", "rjust", "zfill"}:
        width = args[0] if args else kwargs.get("width", 0)
        if isinstance(width, int) and width > MAX_VALUE:
            raise BudgetExceeded(f"{name}() width too large")
    elif name == "replace" and len(args) >= 2:
        estimate = len(owner) + (len(owner) + 1) * weight(args[1])
        if estimate > MAX_VALUE:
            raise BudgetExceeded("replace() result too large")
    elif name == "join" and args:
        estimate = weight(args[0]) + len(owner) * weight(args[0])
        if estimate > MAX_VALUE:
            raise BudgetExceeded("join() result too large")


def _binop_size_ok(operator: str, left: Any, right: Any) -> None:
    if operator in {"*", "**"} and isinstance(left, int) and isinstance(right, int):
        if operator == "*":
            bits = left.bit_length() + right.bit_length()
        else:
            bits = abs(right) * left.bit_length() if abs(left) > 1 and right > 0 else 0
        if bits > MAX_INT_BITS:
            raise BudgetExceeded(f"number too large ({operator})")
    elif operator == "*":
        count, seq = (right, left) if isinstance(right, int) else (left, right)
        if isinstance(count, int) and count > 0 and count * weight(seq) > MAX_VALUE:
            raise BudgetExceeded("repetition result too large")
    elif operator == "+":
        if weight(left) + weight(right) > MAX_VALUE:
            raise BudgetExceeded("value too large (+)")
    elif operator == "%" and isinstance(left, str):
        _format_widths_ok(left)
        check(right)


class _BoundedCodeGenerator(CodeGenerator):
    """Routes `~` and container literals through the environment's size guards."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("), context.eval_ctx.autoescape)")

    def _checked(self, visit: Any, node: nodes.Node, frame: Frame) -> None:
        self.write("environment.checked(")
        visit(node, frame)
        self.write(")")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self._checked(super().visit_List, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self._checked(super().visit_Dict, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx == "load":
            self._checked(super().visit_Tuple, node, frame)
        else:
            super().visit_Tuple(node, frame)


def _template_chars(body: list[nodes.Node]) -> int:
    return sum(len(data.data) for part in body for data in part.find_all(nodes.TemplateData))


_SAFE_FILTERS_FROM_TRUSTED = frozenset({"default", "d", "first", "last", "random", "min", "max"})


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment plus resource limits and markup guards.

    `markdown=True` is the environment that renders a Markdown body for the HTML part: it runs
    with autoescape on so that Jinja tracks which strings are trusted (template text, macro
    and block output are `Markup`), but "escaping" a value means Markdown-escaping it. Any
    `Markup` that could carry an unescaped value (from a filter, a method or an operator fed
    a plain string) is demoted back to a plain string, so it is escaped when output.
    """

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, *, markdown: bool = False, **options: Any) -> None:
        options.setdefault("undefined", PathUndefined)
        super().__init__(**options)
        self.markdown = markdown
        self.globals.pop("lipsum", None)  # unbounded paragraph generator; not needed
        self.globals["range"] = bounded_range
        # `safe` would let a value through unescaped; `urlize` turns values into links.
        self.filters.pop("safe", None)
        self.filters.pop("urlize", None)
        for name, func in list(self.filters.items()):
            self.filters[name] = self._guard_filter(name, func)
        self.filters["indent"] = self._guard_filter("indent", _safe_indent)
        if markdown:
            for name in ("e", "escape", "forceescape"):
                self.filters[name] = _markdown_escape_filter
        self.filters["_nm_loop"] = _loop_filter

    # -- compile-time checks ------------------------------------------------------------
    def _generate(self, source: nodes.Template, name: str | None, filename: str | None,
                  defer_init: bool = False) -> str:
        for node in source.find_all((nodes.EvalContextModifier, nodes.ScopedEvalContextModifier)):
            for option in node.options:
                if option.key == "autoescape":
                    raise TemplateSyntaxError(
                        "autoescape cannot be changed in templates", node.lineno, name, filename
                    )
        for loop in source.find_all(nodes.For):
            # Count iterations; an empty nested loop would otherwise spin without output.
            counted = nodes.Filter(
                loop.iter, "_nm_loop", [nodes.Const(_template_chars(loop.body))], [],
                None, None, lineno=loop.lineno,
            )
            loop.iter = counted.set_environment(self)
        return super()._generate(source, name, filename, defer_init=defer_init)

    # -- runtime guards -----------------------------------------------------------------
    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        # str.format/format_map reach attributes of their arguments; expandtabs multiplies.
        if isinstance(obj, str) and attr in {"format", "format_map", "expandtabs"}:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value: Any) -> None:
        return None  # format is refused outright (is_safe_attribute), never wrapped

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _budget().step()
        _binop_size_ok(operator, left, right)
        result = super().call_binop(context, operator, left, right)
        if isinstance(result, str):
            _budget().produce(len(result))
            if self.markdown and operator != "*" and isinstance(result, Markup):
                result = plain(result)
        return result

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: B902
        _budget().step()
        for value in (*args, *kwargs.values()):
            check(value)
        if isinstance(getattr(__obj, "__self__", None), str) and hasattr(__obj, "__name__"):
            _guard_str_method(__obj, args, kwargs)
        if isinstance(__obj, LoopContext) and args:
            args = (_counted(args[0], 0), *args[1:])
        result = super().call(__context, __obj, *args, **kwargs)
        if isinstance(result, str):
            _budget().produce(len(result))
            trusted = isinstance(__obj, Macro | BlockReference | LoopContext)
            if __self.markdown and isinstance(result, Markup) and not trusted:
                result = plain(result)
        return result

    def getitem(self, obj: Any, argument: Any) -> Any:
        result = super().getitem(obj, argument)
        if self.markdown and isinstance(obj, Markup) and isinstance(result, Markup):
            result = plain(result)  # a slice could cut an escape sequence in half
        return result

    def checked(self, value: Any) -> Any:
        return check(value)

    def bounded_concat(self, parts: tuple, autoescape: bool) -> str:
        total = 0
        for part in parts:
            total += weight(part)
            if total > MAX_VALUE:
                raise BudgetExceeded(f"value too large (over {MAX_VALUE:,} characters)")
        _budget().produce(total)
        if not autoescape:
            return str_join(parts)
        if not self.markdown:
            return markup_join(parts)
        if not any(isinstance(part, Markup) for part in parts):
            return str_join(parts)
        return Markup("".join(
            part if isinstance(part, Markup) else markdown_escape(plain(part)) for part in parts
        ))

    def _guard_filter(self, name: str, func: Any) -> Any:
        markdown = self.markdown
        keep_markup = name in _SAFE_FILTERS_FROM_TRUSTED
        value_index = 1 if getattr(func, "jinja_pass_arg", None) else 0

        @wraps(func)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            budget = _budget()
            budget.step()
            for value in (*args, *kwargs.values()):
                check(value)
            _filter_result_size_ok(name, args[value_index:], kwargs)
            result = func(*args, **kwargs)
            if isinstance(result, str):
                budget.produce(len(result))
                if markdown and isinstance(result, Markup) and not keep_markup:
                    # Trust the result only if it was made from trusted strings alone.
                    value = args[value_index] if len(args) > value_index else None
                    if not isinstance(value, Markup) or any(
                        isinstance(a, str) and not isinstance(a, Markup)
                        for a in (*args, *kwargs.values())
                    ):
                        result = plain(result)
            return result

        return guarded


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _filter_result_size_ok(name: str, args: tuple, kwargs: dict) -> None:
    """Refuse builtin filters whose result would multiply sizes, before they run.

    `args` starts at the filtered value. The others are linear in their (checked) inputs.
    """
    if not args:
        return
    value = args[0]
    if name == "format":
        _format_widths_ok(plain(value) if isinstance(value, str) else "")
    elif name == "center":
        width = _arg(args, kwargs, 1, "width", 80)
        if isinstance(width, int) and width > MAX_VALUE:
            raise BudgetExceeded("center width too large")
    elif name == "join":
        separator = _arg(args, kwargs, 1, "d", "")
        count = len(value) if hasattr(value, "__len__") else weight(value)
        if weight(value) + count * weight(separator) > MAX_VALUE:
            raise BudgetExceeded("join result too large")
    elif name == "replace":
        new = _arg(args, kwargs, 2, "new", "")
        if weight(value) + (weight(value) + 1) * weight(new) > MAX_VALUE:
            raise BudgetExceeded("replace result too large")
    elif name == "wordwrap":
        wrapstring = _arg(args, kwargs, 3, "wrapstring", "\n") or "\n"
        if weight(value) * (weight(wrapstring) + 1) > MAX_VALUE:
            raise BudgetExceeded("wordwrap result too large")
    elif name in ("batch", "slice"):
        count = _arg(args, kwargs, 1, "linecount" if name == "batch" else "slices", 1)
        if isinstance(count, int) and count > MAX_RANGE:
            raise BudgetExceeded(f"{name} count too large")


def _safe_indent(s: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    """`indent` without the Markup(width) shortcut that would trust a string width."""
    from jinja2.filters import do_indent

    if isinstance(width, int) and width * (plain(s).count("\n") + 1) > MAX_VALUE:
        raise BudgetExceeded("indent width too large")
    if isinstance(width, str) and isinstance(s, Markup) and not isinstance(width, Markup):
        width = escape(width)
    return do_indent(s, width, first, blank)


@pass_eval_context
def _markdown_escape_filter(eval_ctx: Any, value: Any) -> Markup:
    if isinstance(value, Markup):
        return value
    return Markup(markdown_escape(plain(value)))


@pass_eval_context
def finalize_markdown(eval_ctx: Any, value: Any) -> Any:
    """Every `{{ }}` of the Markdown-for-HTML rendering: escape unless Jinja made it."""
    if isinstance(value, Markup):
        _budget().produce(len(value))
        return value
    check(value)
    text = markdown_escape(plain(value))
    _budget().produce(len(text))
    return Markup(text)


@pass_eval_context
def finalize_text(eval_ctx: Any, value: Any) -> Any:
    """Every `{{ }}` of the text part, subject and layout: bounded, no control characters."""
    check(value)
    if isinstance(value, Markup):
        _budget().produce(len(value))
        return value
    text = clean_text(plain(value))
    _budget().produce(len(text))
    return text


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
        return _view(f"{self._name}.{key}", self._data[key])

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"<{self._name}>"

    # Underscore names: invisible to templates (sandbox) and never shadow a field.
    def _raw_values(self) -> list[Any]:
        return [*self._data.keys(), *self._data.values()]


def _view(name: str, value: Any) -> Any:
    if type(value) is str:
        return value
    if isinstance(value, str):
        return plain(value)
    if isinstance(value, Mapping):
        return Record(name, value)
    if isinstance(value, list | tuple):
        return tuple(_view(name, item) for item in value)
    return value


def view(name: str, value: Any) -> Any:
    """Wrap one top-level context value (`candidate`, `company`, ...) for templates."""
    return _view(name, value)


class PathUndefined(StrictUndefined):
    """StrictUndefined whose message names the path: `'candidate.nickname' is undefined`."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        obj = self._undefined_obj
        if isinstance(obj, Record) and self._undefined_hint is None:
            return f"'{obj._name}.{self._undefined_name}' is undefined"
        return super()._undefined_message


def is_security_error(exc: BaseException) -> bool:
    return isinstance(exc, SecurityError)
