"""Rendering cost of one email: the shipped thank-you template, cold and warm.

    .venv/bin/python bench/render_bench.py [--renders 5000] [--names 1000] [--prepares 5000]

cold: a fresh TemplateSet per render (compile, parse, inline CSS: what the first email of
a run costs). warm: one TemplateSet rendering many candidates with different names, the
daemon's steady state; the skeleton cache is hit after the first render. uncached: the same
warm loop through the pre-cache full path (`cache=False`), for comparison. prepare: the
whole of `rendering.StepEmails.prepare` (context, render, envelope, RFC 5322 bytes) as the
daemon's `engine._render` calls it, in a scaffold workspace with `bench/send.py`'s campaign.
instructions: the same prepare, counted in CPU instructions per email by valgrind's callgrind
(when valgrind is installed): the figure to compare changes by on a machine whose timings
wander (the machine's Python speed, printed first by `python -m bench`, has varied 2x between
days here).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import VALGRIND, callgrind_instructions  # noqa: E402
from bench.send import CAMPAIGN  # noqa: E402
from nurture_mail.campaigns import load_campaigns  # noqa: E402
from nurture_mail.config import load_settings  # noqa: E402
from nurture_mail.messages import make_message_id  # noqa: E402
from nurture_mail.rendering import StepEmails  # noqa: E402
from nurture_mail.scaffold import create_workspace  # noqa: E402
from nurture_mail.schedule import zone_for  # noqa: E402
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


def candidate_fields(i: int, created: datetime) -> dict[str, object]:
    """One row of bench/send.py's import, shaped as `store.ledger.candidate_fields` gives it."""
    return {
        "id": i + 1, "email": f"person{i}@example{i % 97}.com", "first_name": f"Name{i}",
        "last_name": f"Surname{i}", "full_name": f"Name{i} Surname{i}", "status": "rejected",
        "timezone": "Europe/Berlin", "owner": None, "role": "Backend Engineer",
        "stage_reached": None, "decided_at": None, "source": "people.csv", "created_at": created,
        "token_key": secrets.token_hex(16), "attributes": {}, "tags": [],
    }


def prepare(count: int, names: int) -> float:
    """CPU seconds of `count` StepEmails.prepare calls after a warm-up, as the sender makes them."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        create_workspace(root)
        for path in (root / "campaigns").glob("*.yaml"):
            path.unlink()
        (root / "campaigns" / "bench.yaml").write_text(CAMPAIGN)
        settings = load_settings(root / "nurture.toml", env={}, cwd=root)
        templates = TemplateSet(root / "templates")
        (campaign,), errors = load_campaigns(root / "campaigns", template_exists=templates.exists)
        assert not errors, errors
        step = campaign.steps[0]
        now = datetime(2027, 3, 1, 10, 0, tzinfo=UTC)
        zone = zone_for(campaign.schedule, "Europe/Berlin", settings.default_timezone)
        secret = secrets.token_urlsafe(32)  # what `unsubscribe_secret` generates
        rows = [
            (candidate_fields(i, now - timedelta(days=3)), make_message_id(settings.sender_domain))
            for i in range(names)
        ]

        emails = StepEmails(templates, settings, secret, campaign, step, None)  # one per beat

        def one(i: int) -> None:
            candidate, message_id = rows[i % names]
            emails.prepare(candidate, message_id=message_id, now=now, zone=zone)

        for i in range(min(names, 200)):  # warm-up: compile, fill the caches
            one(i)
        start = CLOCK()
        for i in range(count):
            one(i)
        return CLOCK() - start


def instructions(count: int, names: int) -> float | None:
    """Instructions per `StepEmails.prepare` call, counted by valgrind's callgrind (None
    without valgrind): the process run with `count` calls minus the same run with none,
    divided by `count`. A count, not a time: a busy neighbour does not move it, so a change
    of a few per cent shows on a machine whose timings wander by tens of per cent."""
    if VALGRIND is None:
        return None

    def collected(calls: int) -> int:
        return callgrind_instructions(
            [sys.executable, __file__, "--prepares-only", str(calls), "--names", str(names)],
            timeout=600,
        )[0]

    return (collected(count) - collected(0)) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=5000)
    parser.add_argument("--names", type=int, default=1000, help="distinct candidates cycled")
    parser.add_argument("--cold", type=int, default=50, help="fresh TemplateSets timed")
    parser.add_argument("--prepares", type=int, default=5000, help="StepEmails.prepare calls timed")
    parser.add_argument("--instructions", type=int, default=2000,
                        help="StepEmails.prepare calls counted under callgrind (0: none)")
    parser.add_argument("--prepares-only", type=int, metavar="N", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepares_only is not None:  # what `instructions` runs under callgrind
        prepare(args.prepares_only, args.names)
        return
    results = []  # (benchmark, µs, detail) as `RESULT {json}` lines for `python -m bench`
    if args.prepares:
        seconds = prepare(args.prepares, args.names)
        print(f"prepare  (whole StepEmails.prepare):{seconds / args.prepares * 1e6:8.1f} µs/email")
        results.append(("render: StepEmails.prepare (context, render, bytes)", seconds / args.prepares,
                        {"emails": args.prepares, "names": args.names}))
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
    results += [
        ("render: cold (new TemplateSet each)", cold / args.cold, {"renders": args.cold}),
        ("render: warm (skeleton cache)", warm / args.renders, {"renders": args.renders}),
        ("render: uncached (full path, warm set)", uncached / count, {"renders": count}),
    ]
    for benchmark, seconds, detail in results:
        print("RESULT " + json.dumps({"benchmark": benchmark, "value": round(seconds * 1e6, 1),
                                      "unit": "µs", "detail": detail}))
    counted = instructions(args.instructions, args.names) if args.instructions else None
    if counted is not None:
        print(f"prepare  (instructions, callgrind): {counted:10,.0f} per email")
        print("RESULT " + json.dumps({
            "benchmark": "render: StepEmails.prepare instructions (callgrind)",
            "value": round(counted), "unit": "instr", "detail": {"emails": args.instructions},
        }))


if __name__ == "__main__":
    main()
