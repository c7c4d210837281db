"""Shared pieces of the fuzz tests: how many cases to run, and strategies for hostile input.

Every fuzz test runs `EXAMPLES` generated cases with a fixed seed (derandomised, no example
database), so a failure reproduces on every machine. `--slow` raises the count to
`SLOW_EXAMPLES`; the environment variable NURTURE_FUZZ_EXAMPLES overrides both.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = 1_000
SLOW_EXAMPLES = 10_000


def examples(config) -> int:
    """Cases per input kind for this run."""
    override = os.environ.get("NURTURE_FUZZ_EXAMPLES")
    if override:
        return int(override)
    return SLOW_EXAMPLES if config.getoption("--slow") else EXAMPLES


def fuzz(request, strategy: st.SearchStrategy, check: Callable[[object], None], *, scale: float = 1.0) -> int:
    """Run `check` on generated values; returns how many cases were asked for.

    Built at run time so the count can follow `--slow`. `scale` shrinks the count for input
    kinds whose single case is costly (still at least 1,000 in the default run when 1.0).
    """
    count = max(1, int(examples(request.config) * scale))

    @settings(
        derandomize=True,
        database=None,
        max_examples=count,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run(value):
        check(value)

    run()
    return count


# --- building blocks --------------------------------------------------------------------------

# Characters that break parsers, headers and terminals: controls, line separators, BOMs,
# surrogate-free oddities, quotes and YAML/Jinja/CSV/TOML punctuation.
NASTY_CHARS = (
    "\x00\x01\x07\x08\t\n\x0b\x0c\r\x1b\x1c\x1d\x1e\x1f\x7f\x80\x85\x9f\xa0\xad"
    "\u2028\u2029\u200b\u200e\u202e\ufeff\ufffd\U0001f600"
    "\"'`\\{}[]<>%#&*!|>-:;,=?@$~^()/+. "
)
nasty_text = st.text(
    alphabet=st.one_of(st.sampled_from(NASTY_CHARS), st.characters(codec="utf-8")),
    max_size=40,
)

INJECTIONS = [
    "' OR 1=1 --",
    "'; DROP TABLE candidates; --",
    '" OR ""="',
    "\\'; DELETE FROM suppressions; --",
    "$.\" || 1 || \"",
    "%' OR '%'='",
    "a\x00b",
    "Robert'); DROP TABLE sends;--",
    "1; SELECT pg_sleep(10)",
    "{{ 7*7 }}",
    "\r\nBcc: victim@evil.example",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    nasty_text,
    st.sampled_from(INJECTIONS),
    st.sampled_from(["2d", "0", "90m", "09:00-17:00", "mon", "2026-12-24", "UTC", "active",
                     "candidate", "Europe/Berlin", "eq", "contains", "", "~", "null", "NO", "x" * 300,
                     "Europe/" * 1000, "\u00e9" * 20_000]),
)

# Arbitrary JSON-like structures (YAML, TOML and JSON lines draw from this).
structures = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(nasty_text, st.sampled_from(["id", "steps", "wait", "template",
                                                               "where", "audience", "schedule"])),
                        children, max_size=4),
    ),
    max_leaves=12,
)


@st.composite
def mutated_bytes(draw, seeds: list[bytes], fragments: list[bytes]) -> bytes:
    """One of `seeds` with a few random edits: insertions, deletions, flips, cuts, repeats."""
    raw = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(raw)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "truncate", "duplicate"]))
        if op == "insert":
            raw[at:at] = draw(st.one_of(st.sampled_from(fragments), st.binary(min_size=1, max_size=12)))
        elif op == "delete":
            del raw[at : at + draw(st.integers(1, 40))]
        elif op == "replace" and at < len(raw):
            raw[at] = draw(st.integers(0, 255))
        elif op == "truncate":
            del raw[at:]
        else:
            raw[at:at] = raw[max(0, at - 60) : at]
    return bytes(raw)
