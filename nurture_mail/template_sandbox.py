"""The bounded Jinja2 sandbox templates render in.

Owns the three environments' class (plain text, Markdown-for-HTML, HTML layout), the code
generator hooks that route `~`, literals and loops through the budget, and the guards that
keep a candidate value from adding Markdown/HTML markup. Limits live in `template_budget`;
what templates see of their data lives in `template_values`.
"""

from __future__ import annotations

from functools import wraps
from typing import Any

from jinja2 import nodes, pass_eval_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import TemplateSyntaxError
from jinja2.runtime import BlockReference, LoopContext, Macro, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup, escape

from .template_budget import (
    MAX_VALUE,
    BudgetExceeded,
    binop_size_ok,
    bounded_range,
    check,
    counted,
    current_budget,
    filter_result_size_ok,
    guard_str_method,
    loop_filter,
    weight,
)
from .template_values import (
    PathUndefined,
    Record,
    clean_text,
    markdown_escape,
    plain,
    refuse_lazy,
)


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
        self.filters["_nm_loop"] = loop_filter

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

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Fast path for the common `candidate.first_name`: a Record's public names are its
        # keys (it has no public attributes of its own), which the generic sandbox lookup
        # below would reach too, after a failed attribute lookup and the safety checks.
        if type(obj) is Record and attribute[:1] != "_":
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def wrap_str_format(self, value: Any) -> None:
        return None  # format is refused outright (is_safe_attribute), never wrapped

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        current_budget().step()
        binop_size_ok(operator, left, right)
        result = super().call_binop(context, operator, left, right)
        if isinstance(result, str):
            current_budget().produce(len(result))
            if self.markdown and operator != "*" and isinstance(result, Markup):
                result = plain(result)
        return result

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: B902
        current_budget().step()
        for value in (*args, *kwargs.values()):
            check(value)
        if isinstance(getattr(__obj, "__self__", None), str) and hasattr(__obj, "__name__"):
            guard_str_method(__obj, args, kwargs)
        if isinstance(__obj, LoopContext) and args:
            args = (counted(args[0], 0), *args[1:])
        result = super().call(__context, __obj, *args, **kwargs)
        if isinstance(result, str):
            current_budget().produce(len(result))
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
            refuse_lazy(part)
            total += weight(part)
            if total > MAX_VALUE:
                raise BudgetExceeded(f"value too large (over {MAX_VALUE:,} characters)")
        current_budget().produce(total)
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
            budget = current_budget()
            budget.step()
            for value in (*args, *kwargs.values()):
                check(value)
            filter_result_size_ok(name, args[value_index:], kwargs)
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
        current_budget().produce(len(value))
        return value
    check(value)
    text = markdown_escape(plain(value))
    current_budget().produce(len(text))
    return Markup(text)


@pass_eval_context
def finalize_text(eval_ctx: Any, value: Any) -> Any:
    """Every `{{ }}` of the text part, subject and layout: bounded, no control characters."""
    check(value)
    if isinstance(value, Markup):
        current_budget().produce(len(value))
        return value
    text = clean_text(plain(value))
    current_budget().produce(len(text))
    return text
