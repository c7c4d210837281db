"""Shared pieces: loopback servers started and stopped by each benchmark, timing, results."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
PG_URL = os.environ.get("NURTURE_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@dataclass
class Figure:
    benchmark: str
    value: float
    unit: str
    detail: dict = field(default_factory=dict)

    def row(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.detail.items())
        return f"{self.benchmark:<48} {self.value:>12,.1f} {self.unit:<10} {extra}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def have_postfix() -> bool:
    return Path(SMTP_SINK).exists() and Path(SMTP_SOURCE).exists()


@contextmanager
def smtp_sink(backlog: int = 1000):
    """Postfix's smtp-sink on a loopback port: accepts everything, stores nothing."""
    port = free_port()
    args = [SMTP_SINK]
    if os.geteuid() == 0:
        args += ["-u", "nobody"]
    proc = subprocess.Popen(args + [f"127.0.0.1:{port}", str(backlog)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.02)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def fresh_pg_schema(base: str = PG_URL) -> tuple[str, callable]:
    """A new PostgreSQL schema for one run; returns (url, drop)."""
    import secrets

    from sqlalchemy import create_engine, text

    schema = "bench_" + secrets.token_hex(4)
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()

    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}", drop


def children_cpu_s() -> float:
    """User + system seconds of this process's reaped children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def peak_rss_children_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def save(name: str, figures: list[Figure]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps([f.__dict__ for f in figures], indent=2, default=str))
    return path


def python() -> str:
    return sys.executable


def python_speed() -> Figure:
    """How fast this machine runs plain Python now: the same loop every time, best of 5.

    Shared machines drift (a session has measured every Python figure at half the speed of
    the day before while `smtp-source`, which is C and kernel, stayed the same): figures from
    different days compare only beside this one."""
    def loop() -> float:
        start = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i
        return time.perf_counter() - start

    best = min(loop() for _ in range(5))
    return Figure("machine: python loop", best / 2_000_000 * 1e9, "ns/iter",
                  {"iterations": 2_000_000, **interpreter()})


def interpreter() -> dict[str, str]:
    """Which CPython runs the benchmarks (every engine process is started with it): its build
    moves every Python figure (README, "Benchmarks", gives what it was worth)."""
    libpython = "-"
    try:
        with open("/proc/self/maps") as maps:  # Linux: is libpython a separate shared object?
            libpython = "shared" if any("libpython" in line for line in maps) else "static"
    except OSError:
        pass
    return {"python": sys.version.split()[0], "executable": os.path.realpath(sys.executable),
            "libpython": libpython}


VALGRIND = shutil.which("valgrind")


def callgrind_instructions(command: list[str], *, cwd: Path | None = None, timeout: float = 1800,
                           ) -> tuple[int, subprocess.CompletedProcess]:
    """The CPU instructions `command` runs, counted by valgrind's callgrind (VALGRIND must be
    set), and the finished process: a count that a busy machine does not move."""
    run = subprocess.run(
        [VALGRIND, "--tool=callgrind", "--callgrind-out-file=/dev/null", *command],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, check=True,
    )
    found = re.search(r"Collected : ([0-9]+)", run.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from callgrind: {run.stderr[-300:]}")
    return int(found.group(1)), run
