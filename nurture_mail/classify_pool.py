"""Classifying inbound mail in worker processes while the reply sync stores and acts.

classify() is pure Python and costs ~150-250 µs a message, as much as everything else the
sync does; on a machine with several CPUs a backlog is classified by worker processes while
the syncing process matches, stores and acts on the batches already classified. Where a
message is classified changes nothing: the verdict is a function of its bytes and arrival
time alone. Kept in a module of its own, importing nothing but the classifier, so that a
worker starts quickly.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime

from .replies import Classification, classify

log = logging.getLogger("nurture.replies")

PARALLEL_MIN = 100  # messages to classify at once before worker processes are worth starting
MAX_WORKERS = 4

Jobs = list[tuple[bytes, datetime]]


def classify_many(jobs: Jobs) -> list[Classification]:
    """classify() for a list of (raw bytes, arrival time)."""
    return [classify(raw, received=received) for raw, received in jobs]


def default_workers() -> int:
    """One per CPU but the one the syncing process needs; none on a single CPU."""
    if hasattr(os, "sched_getaffinity"):
        cpus = len(os.sched_getaffinity(0))
    else:  # pragma: no cover - macOS, Windows
        cpus = os.cpu_count() or 1
    return min(cpus - 1, MAX_WORKERS) if cpus > 1 else 0


class Classifier:
    """classify() for batches of messages: here for a few, in a pool of worker processes
    (started on the first large batch, kept until `close()`) for many. A pool that cannot
    start or breaks is reported in the log and the work is done here instead."""

    def __init__(self, workers: int):
        self.workers = max(0, workers)
        self.pool: ProcessPoolExecutor | None = None

    def submit(self, jobs: Jobs) -> Callable[[], list[Classification]]:
        """Start classifying; the returned function waits for the verdicts, in order."""
        if self.workers and len(jobs) >= PARALLEL_MIN and self._start():
            size = -(-len(jobs) // (self.workers * 2))
            chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
            try:
                futures = [(self.pool.submit(classify_many, c), c) for c in chunks]
            except (BrokenProcessPool, RuntimeError, OSError) as exc:
                self._broken(exc)
            else:
                return lambda: [v for f, c in futures for v in self._result(f, c)]
        done = classify_many(jobs)
        return lambda: done

    def _start(self) -> bool:
        if self.pool is None:
            methods = multiprocessing.get_all_start_methods()
            # fork is instant and safe while this process has a single thread; a daemon has
            # scheduler threads, and its workers come from a clean fork server instead.
            if "fork" in methods and threading.active_count() == 1:
                method = "fork"
            else:
                method = "forkserver" if "forkserver" in methods else "spawn"
            try:
                self.pool = ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context(method),
                    initializer=_worker_init, initargs=(os.getpid(),),
                )
            except (OSError, ValueError) as exc:
                self._broken(exc)
        return self.pool is not None

    def _result(self, future, jobs: Jobs) -> list[Classification]:
        try:
            return future.result()
        except (BrokenProcessPool, OSError, EOFError) as exc:
            self._broken(exc)
            return classify_many(jobs)

    def _broken(self, exc: BaseException) -> None:
        log.warning("reply sync: classifying in this process (worker pool: %s)", exc)
        self.close()
        self.workers = 0

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _worker_init(parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a daemon's handler is not the worker's
    threading.Thread(target=_orphan_watch, args=(parent,), daemon=True).start()


def _orphan_watch(parent: int) -> None:
    """A worker whose parent was killed (kill -9) would wait for work forever: leave."""
    while True:
        time.sleep(1)
        if os.getppid() != parent:
            os._exit(0)
