"""Work done in order by one thread of its own, behind the thread that hands it out.

The reply sync reads and prepares a batch of messages, then stores it and acts on it in one
transaction. On PostgreSQL half of that transaction is waiting on the server; psycopg lets go
of the GIL while it waits, so a thread that stores batch N while the caller reads and
prepares batch N+1 turns that wait into work. `WriteBehind` is that thread: it runs `apply`
on each item in the order `put` gave them, one at a time, and keeps at most `depth` items
(or, beyond the first, `max_bytes` of them) waiting, so the caller can never get further
ahead than that.

Failure either way stops both sides: an exception in `apply` is raised again by the next
`put` or by `close` (and any `put` after it raises too), and no later item is applied; leaving
the `with` block on an exception, or being interrupted (Ctrl-C) while `close` waits, drops the
items still waiting and waits for the one being applied to finish, so nothing is applied after
the block has been left. `threaded=False` applies each item at once in the caller's thread
(an in-memory SQLite database is a different database in each thread).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class WriteBehind(Generic[T]):
    def __init__(self, apply: Callable[[T], None], *, depth: int, max_bytes: int,
                 name: str = "nurture-write-behind", threaded: bool = True):
        self._apply = apply
        self._depth = max(1, depth)
        self._max_bytes = max_bytes
        self._name = name
        self._threaded = threaded
        self._waiting: deque[tuple[T, int]] = deque()
        self._bytes = 0
        self._closing = False
        self._error: BaseException | None = None  # what `apply` raised, not yet handed over
        self._failed: BaseException | None = None  # ... and once handed over
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def put(self, item: T, size: int = 0) -> None:
        """Hand `item` over (its size in bytes counts against max_bytes); waits while the
        backlog is full, and raises what an earlier item's `apply` raised."""
        if not self._threaded:
            self._raise()
            self._apply_here(item)
            return
        with self._changed:
            while self._error is None and self._waiting and (
                len(self._waiting) >= self._depth or self._bytes + size > self._max_bytes
            ):
                self._changed.wait()
            self._raise()
            self._waiting.append((item, size))
            self._bytes += size
            self._changed.notify_all()
        if self._thread is None:  # started on first use: a sync with nothing new starts none
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def close(self, *, drop: bool = False) -> None:
        """Wait until every item handed over is applied (drop=True: only the one being
        applied; the rest are dropped), then raise what `apply` raised, if anything."""
        with self._changed:
            self._closing = True
            if drop:
                self._drop()
            self._changed.notify_all()
        if self._thread is not None:
            try:
                self._thread.join()
            except BaseException:  # interrupted while waiting: only the item in flight finishes
                with self._changed:
                    self._drop()
                self._thread.join()
                raise
        if not drop:
            with self._changed:
                self._raise(again=False)  # what was raised already is not raised twice

    def _apply_here(self, item: T) -> None:
        try:
            self._apply(item)
        except BaseException as exc:
            self._failed = exc
            raise

    def _drop(self) -> None:
        self._waiting.clear()
        self._bytes = 0

    def _raise(self, *, again: bool = True) -> None:
        if self._error is not None:
            self._failed, self._error = self._error, None
            self._drop()
            raise self._failed
        if again and self._failed is not None:
            raise RuntimeError(f"{self._name}: an earlier item failed ({self._failed!r})")

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._waiting and not self._closing:
                    self._changed.wait()
                if not self._waiting:
                    return
                item, size = self._waiting[0]
            try:
                self._apply(item)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                with self._changed:
                    self._error = exc
                    self._drop()
                    self._changed.notify_all()
                return
            with self._changed:
                if self._waiting and self._waiting[0][0] is item:
                    self._waiting.popleft()
                    self._bytes -= size
                self._changed.notify_all()

    def __enter__(self) -> WriteBehind[T]:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(drop=exc_type is not None)
        if exc is not None and self._error is not None:  # both sides failed: keep both
            exc.add_note(f"{self._name} had failed too: {self._error!r}")
