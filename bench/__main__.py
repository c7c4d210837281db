"""`python -m bench [NAME ...] [--quick] [--runs N]`: run benchmarks, print a table, write JSON.

Names: send, pool, report, ingest, render. Default: all. `--quick` uses small sizes (a smoke
run); the figures in the issue notes come from the full sizes. Each benchmark starts its own
loopback servers (Postfix smtp-sink) and stops them; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time

from .common import ROOT, Figure, have_postfix, python, save


def run_script(name: str, args: list[str]) -> list[Figure]:
    """The helper-written scripts print `RESULT {json}` lines (or plain text we keep)."""
    out = subprocess.run([python(), str(ROOT / "bench" / name), *args], capture_output=True, text=True, cwd=ROOT)
    figures = []
    for line in out.stdout.splitlines():
        m = re.match(r"RESULT (\{.*\})$", line)
        if m:
            d = json.loads(m.group(1))
            figures.append(Figure(d["benchmark"], d["value"], d["unit"], d.get("detail", {})))
    if not figures:
        tail = (out.stdout + out.stderr).strip().splitlines()[-3:]
        figures.append(Figure(f"{name} (raw output)", 0, "-", {"output": " | ".join(tail)}))
    return figures


def median_of(runs: int, measure) -> Figure:
    """`measure()` run `runs` times: the median figure, every run's value in its detail."""
    figures = sorted((measure() for _ in range(runs)), key=lambda f: f.value)
    middle = figures[len(figures) // 2]
    if runs > 1:
        middle.detail["runs"] = [round(f.value, 1) for f in figures]
    return middle


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", default=["send", "pool", "report", "ingest", "render"])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--runs", type=int, default=1, help="send: median of this many runs")
    args = parser.parse_args()
    q = args.quick
    figures: list[Figure] = []
    started = time.perf_counter()
    if "send" in args.names:
        from . import send

        n = 3000 if q else 50_000
        runs = max(1, args.runs)
        ceiling = None
        if have_postfix():
            ceiling = median_of(runs, lambda: send.ceiling(n))
            figures.append(ceiling)
        naive = median_of(runs, lambda: send.naive(min(n, 5000)))
        figures.append(naive)
        for backend in ("sqlite", "postgresql"):
            for procs in (1, 2):
                figure = median_of(runs, lambda b=backend, p=procs: send.engine_run(n, b, p))
                if ceiling is not None:
                    figure.detail["of_ceiling"] = round(figure.value / ceiling.value, 3)
                figure.detail["x_naive"] = round(figure.value / naive.value, 1)
                figures.append(figure)
    if "pool" in args.names:
        from . import pool

        n = 20_000 if q else 1_000_000
        for backend in ("sqlite", "postgresql"):
            figures.extend(pool.enrol_and_plan(n, backend))
        figures.append(pool.daemon_rss(n))
    if "report" in args.names:
        figures.extend(run_script("report_bench.py", ["--rows", "20000" if q else "1000000"]))
    if "ingest" in args.names:
        figures.extend(run_script("reply_ingest.py", ["--messages", "2000" if q else "20000"]))
    if "render" in args.names:
        figures.extend(run_script("render_bench.py", []))
    print(f"{'benchmark':<48} {'value':>12} {'unit':<10} detail")
    for f in figures:
        print(f.row())
    path = save("latest-quick" if q else "latest", figures)
    print(f"\n{len(figures)} figures in {time.perf_counter() - started:.0f} s; JSON: {path}")
    return 0


sys.exit(main())
