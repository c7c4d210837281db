"""Classifying inbound mail in worker processes while the reply sync stores and acts.

classify() is pure Python and costs ~150-250 µs a message, as much as everything else the
sync does; on a machine with several CPUs a backlog is classified by worker processes while
the syncing process matches, stores and acts on the batches already classified. Where a
message is classified changes nothing: the verdict is a function of its bytes and arrival
time alone. Kept in a module of its own, importing nothing but the classifier, so that a
worker starts quickly.

A batch goes to the workers in small chunks, and the syncing process takes back the chunks
no worker has started yet when it needs the verdicts (work stealing): it classifies them
itself instead of waiting idle, so the two sides share the work in whatever proportion the
database work and the machine's other load leave, with no tuning. Verdicts travel back as
plain tuples, which pickle in a third of the time of the dataclass.
"""

from __future__ import annotations

import dataclasses
import gc
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
from operator import attrgetter

from .replies import Classification, classify

log = logging.getLogger("nurture.replies")

PARALLEL_MIN = 100  # messages to classify at once before worker processes are worth starting
MAX_WORKERS = 4
# Messages per task: small enough that the syncing process can take back a batch's tail, big
# enough that the per-task cost (pickling, two threads waking, a future) stays small: ~0.7 ms
# of the syncing process's CPU a task, 0.4 s per 20,000 messages at 100, 0.8 s at 25.
CHUNK = 100

Jobs = list[tuple[bytes, datetime]]

_FIELDS = attrgetter(*(f.name for f in dataclasses.fields(Classification)))


def classify_many(jobs: Jobs) -> list[Classification]:
    """classify() for a list of (raw bytes, arrival time)."""
    return [classify(raw, received=received) for raw, received in jobs]


def classify_packed(jobs: Jobs) -> list[tuple]:
    """classify_many() in a worker: each verdict as the tuple of its fields."""
    return [_FIELDS(classify(raw, received=received)) for raw, received in jobs]


def _unpack(packed: list[tuple]) -> list[Classification]:
    return [Classification(*fields) for fields in packed]


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

    def __init__(self, workers: int, *, steal: bool = True):
        self.workers = max(0, workers)
        self.steal = steal  # take back chunks no worker has started (False: tests, to be sure)
        self.pool: ProcessPoolExecutor | None = None
        self.here = 0  # messages classified in this process
        self.in_workers = 0  # ... and by the workers
        # The reply sync submits from one thread and collects from another (its store
        # thread): the pool is started, used and shut down under this lock.
        self._lock = threading.RLock()

    def submit(self, jobs: Jobs) -> Callable[[], list[Classification]]:
        """Start classifying; the returned function waits for the verdicts, in order, and
        classifies here the chunks no worker has started by then."""
        if self.workers and len(jobs) >= PARALLEL_MIN:
            with self._lock:
                futures = self._submit(jobs) if self._start() else None
            if futures is not None:
                return lambda: self._collect(futures)
        done = classify_many(jobs)
        self._count(here=len(jobs))
        return lambda: done

    def _submit(self, jobs: Jobs) -> list | None:
        chunks = [jobs[i : i + CHUNK] for i in range(0, len(jobs), CHUNK)]
        try:
            return [(self.pool.submit(classify_packed, c), c) for c in chunks]
        except (BrokenProcessPool, RuntimeError, OSError) as exc:
            self._broken(exc)
            return None

    def _count(self, *, here: int = 0, in_workers: int = 0) -> None:
        with self._lock:
            self.here += here
            self.in_workers += in_workers

    def _collect(self, futures: list) -> list[Classification]:
        # Workers take chunks first in, first out; a chunk that cannot be cancelled has
        # started, and so has every chunk before it. Take back the tail, newest first, until
        # one has started; then wait for the rest.
        stolen: dict[int, list[Classification]] = {}
        for n in range(len(futures) - 1, -1, -1):
            future, jobs = futures[n]
            if not self.steal or not future.cancel():
                break
            stolen[n] = classify_many(jobs)
            self._count(here=len(jobs))
        verdicts: list[Classification] = []
        for n, (future, jobs) in enumerate(futures):
            verdicts.extend(stolen[n] if n in stolen else self._result(future, jobs))
        return verdicts

    def _start(self) -> bool:
        """The pool, started on first use (call it holding the lock)."""
        if self.workers and self.pool is None:
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
            verdicts = _unpack(future.result())
        except (BrokenProcessPool, OSError, EOFError) as exc:
            self._broken(exc)
            self._count(here=len(jobs))
            return classify_many(jobs)
        self._count(in_workers=len(jobs))
        return verdicts

    def _broken(self, exc: BaseException) -> None:
        with self._lock:
            if self.workers:
                log.warning("reply sync: classifying in this process (worker pool: %s)", exc)
            self.workers = 0
            self.close()

    def close(self) -> None:
        with self._lock:
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)
                self.pool = None

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _worker_init(parent: int) -> None:
    # Everything inherited from the parent stays out of this process's garbage collections:
    # they would scan it again and again, and, touching it, copy the forked pages (~10 % of a
    # worker's time on a 20,000-message backlog).
    gc.freeze()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a daemon's handler is not the worker's
    threading.Thread(target=_orphan_watch, args=(parent,), daemon=True).start()


def _orphan_watch(parent: int) -> None:
    """A worker whose parent was killed (kill -9) would wait for work forever: leave."""
    while True:
        time.sleep(1)
        if os.getppid() != parent:
            os._exit(0)
