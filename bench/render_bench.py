"""Rendering cost of one email: the shipped thank-you template, cold and warm.

    .venv/bin/python bench/render_bench.py [--renders 5000] [--names 1000]

cold: a fresh TemplateSet per render (compile, parse, inline CSS: what the first email of
a run costs). warm: one TemplateSet rendering many candidates with different names, the
daemon's steady state; the skeleton cache is hit after the first render. uncached: the same
warm loop through the pre-cache full path (`cache=False`), for comparison.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nurture_mail.templates import TemplateSet  # noqa: E402

# CPU time of this process: wall-clock time on a shared machine also counts other work.
CLOCK = time.process_time
TEMPLATES = ROOT / "nurture_mail" / "skeleton" / "templates"
FIRST = ["Dana", "Alex", "Zoë", "Jean-Luc", "O'Brien", "Siobhán", "Kim", "Łukasz", "Ana", "李"]
ROLES = ["Backend Engineer", "Data Scientist", "SRE (on-call)", "Product Designer"]


def context(i: int) -> dict[str, object]:
    candidate: dict[str, object] = {
        "first_name": f"{FIRST[i % len(FIRST)]}{i}",
        "last_name": "Morgan",
        "email": f"c{i}@example.com",
        "status": "withdrawn" if i % 3 == 0 else "rejected",
        "tags": ["python"],
    }
    if i % 2:
        candidate["role"] = ROLES[i % len(ROLES)]
    return {
        "candidate": candidate,
        "sender": {"name": "Sam Recruiter", "email": "sam@talent.example"},
        "company": {"name": "Acme & Co", "postal_address": "1 Main St\nSpringfield, IL 62701"},
        "campaign": {"id": "silver", "name": "Silver medalists"},
        "step": {"id": "thank-you", "number": 1},
        "unsubscribe_url": f"https://talent.example/u/tok{i:06d}?x=1&y=2",
        "today": date(2026, 3, 4),
    }


def per_render(seconds: float, count: int) -> str:
    return f"{seconds / count * 1e6:8.1f} µs/render"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=5000)
    parser.add_argument("--names", type=int, default=1000, help="distinct candidates cycled")
    parser.add_argument("--cold", type=int, default=50, help="fresh TemplateSets timed")
    args = parser.parse_args()
    contexts = [context(i) for i in range(args.names)]

    start = CLOCK()
    for i in range(args.cold):
        TemplateSet(TEMPLATES).render("thank-you", contexts[i % len(contexts)])
    cold = CLOCK() - start

    templates = TemplateSet(TEMPLATES)
    for ctx in contexts[:20]:  # warm-up: compile, fill the skeleton cache
        templates.render("thank-you", ctx)
    start = CLOCK()
    for i in range(args.renders):
        templates.render("thank-you", contexts[i % len(contexts)])
    warm = CLOCK() - start

    uncached_templates = TemplateSet(TEMPLATES)
    try:
        uncached_templates.render("thank-you", contexts[0], cache=False)  # type: ignore[call-arg]
        kwargs = {"cache": False}
    except TypeError:  # the pre-cache implementation has no `cache` parameter
        kwargs = {}
    count = max(1, args.renders // 5)
    start = CLOCK()
    for i in range(count):
        uncached_templates.render("thank-you", contexts[i % len(contexts)], **kwargs)
    uncached = CLOCK() - start

    print(f"cold     (new TemplateSet each): {per_render(cold, args.cold)}")
    print(f"warm     (skeleton cache):       {per_render(warm, args.renders)}")
    print(f"uncached (full path, warm set):  {per_render(uncached, count)}")


if __name__ == "__main__":
    main()
