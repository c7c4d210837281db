"""The resource budget of one rendering, and the size checks made before costly work.

A template may loop, call and build strings, but one email's rendering stays within the
limits below; work that would pass them is refused *before* Python does it, so a hostile
or buggy template fails in well under a second instead of hanging the daemon.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import Undefined, pass_context
from jinja2.exceptions import TemplateRuntimeError
from jinja2.runtime import Namespace

from .template_values import Record, plain

MAX_OUTPUT = 1_000_000  # characters of one rendered part
MAX_VALUE = 1_000_000  # characters (or weighted items) of any single intermediate value
MAX_CHARS = 8_000_000  # characters produced by string operations, all summed
MAX_STEPS = 250_000  # loop iterations + calls + items inspected by the guards
MAX_INT_BITS = 16_384  # integers beyond ~4,900 digits are never needed in an email
MAX_RANGE = 100_000  # items of one range()

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


def current_budget() -> Budget:
    budget = _BUDGET.get()
    if budget is None:
        # Rendering outside `bounded()` would run without limits; refuse instead.
        raise RuntimeError("templates must be rendered inside template_budget.bounded()")
    return budget


class bounded:  # lower-case: used like the function it was, `with bounded() as budget:`
    """Give the renderings inside the block one fresh budget.

    A class rather than a `contextlib.contextmanager`: every email enters one, and the
    generator machinery cost more than the rest of a warm render's bookkeeping.
    """

    __slots__ = ("_token",)

    def __enter__(self) -> Budget:
        budget = Budget()
        self._token = _BUDGET.set(budget)
        return budget

    def __exit__(self, *exc: object) -> None:
        _BUDGET.reset(self._token)


def weight(value: Any, limit: int = MAX_VALUE) -> int:
    """Roughly how many characters `str(value)` would have, without building it.

    Shared references are counted each time they appear (as repr would), memoised per object,
    so a structure built by repeated doubling is measured in linear time and refused.
    """
    if type(value) is str or isinstance(value, str):
        return len(value)
    memo: dict[int, int] = {}
    budget = current_budget()

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


def counted(iterable: Any, body_chars: int) -> Iterator[Any]:
    """Charge every loop iteration, plus the template text its body outputs."""
    if isinstance(iterable, Undefined):
        iterable = iter(iterable)  # StrictUndefined raises here, as a plain loop would
    budget = current_budget()
    for item in iterable:
        budget.step()
        if body_chars:
            budget.produce(body_chars)
        yield item


@pass_context
def loop_filter(context: Any, iterable: Any, body_chars: int) -> Iterator[Any]:
    # pass_context keeps Jinja from running this at compile time on constant lists.
    return counted(iterable, body_chars)


def _format_widths_ok(fmt: str) -> None:
    for match in _PERCENT_SPEC.finditer(fmt):
        for part in match.groups():
            if part == "*" or (part and int(part) > 1000):
                raise BudgetExceeded("format width/precision over 1000 refused")


def guard_str_method(method: Any, args: tuple, kwargs: dict) -> None:
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


def binop_size_ok(operator: str, left: Any, right: Any) -> None:
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


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def filter_result_size_ok(name: str, args: tuple, kwargs: dict) -> None:
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
