"""`nurture run`: the tick on an APScheduler (3.x) timer, plus signals and a graceful stop.

APScheduler only triggers beats; the schedule of emails lives in the database. On SIGTERM or
SIGINT the daemon stops claiming, finishes the message in flight, records it, hands back
what it had claimed but not started, and exits 0.

On SQLite only one daemon may run (`DaemonLock`); on PostgreSQL any number share the work.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import select

from .database import Database
from .errors import LockHeld, NurtureError
from .models import Meta

log = logging.getLogger("nurture.daemon")
LOCK_KEY = "daemon_lock"


@dataclass
class DaemonLock:
    """A lease on the SQLite database for one sender at a time (real time, not `--now`)."""

    db: Database
    owner: str
    ttl: timedelta

    def acquire(self) -> None:
        now = datetime.now(UTC)
        with self.db.sessions.begin() as session:
            row = session.get(Meta, LOCK_KEY)
            if row is not None:
                held = json.loads(row.value)
                expires = datetime.fromisoformat(held["expires"])
                if held["owner"] != self.owner and expires > now and _alive(held):
                    raise LockHeld(
                        f"another sender holds this SQLite database: pid {held['pid']} on "
                        f"{held['host']} since {held['since']} (lease until {expires:%H:%M:%S} UTC). "
                        "Stop it first, or use PostgreSQL to run several daemons."
                    )
            value = json.dumps(
                {
                    "owner": self.owner,
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "since": now.isoformat(timespec="seconds"),
                    "expires": (now + self.ttl).isoformat(),
                }
            )
            if row is None:
                session.add(Meta(key=LOCK_KEY, value=value))
            else:
                row.value = value

    def release(self) -> None:
        with self.db.sessions.begin() as session:
            row = session.get(Meta, LOCK_KEY)
            if row is not None and json.loads(row.value)["owner"] == self.owner:
                session.delete(row)


def _alive(held: dict) -> bool:
    """False when the holder was a process on this host that no longer exists (kill -9)."""
    if held.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(held["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError):
        return True
    return True


def lock_for(db: Database, owner: str, ttl: timedelta) -> DaemonLock | None:
    """The single-sender lock where the database needs one (SQLite), else None."""
    return DaemonLock(db, owner, ttl) if db.dialect == "sqlite" else None


def lock_holder(db: Database) -> str | None:
    with db.sessions() as session:
        value = session.execute(select(Meta.value).where(Meta.key == LOCK_KEY)).scalar()
    return value


def offset_clock(start: datetime | None) -> Callable[[], datetime]:
    """Real time, or (with --now) time that starts at `start` and runs at real speed."""
    if start is None:
        return lambda: datetime.now(UTC)
    origin = time.monotonic()
    return lambda: start + timedelta(seconds=time.monotonic() - origin)


class Daemon:
    """Runs `beat()` every `interval` seconds until stopped by a signal or `stop()`."""

    def __init__(self, beat: Callable[[], None], interval: int, *, extra_jobs: list[tuple[Callable[[], None], int]] = ()):
        self.beat = beat
        self.interval = interval
        self.extra_jobs = list(extra_jobs)
        self.stopping = threading.Event()
        self.failure: BaseException | None = None

    def stop(self, *_args) -> None:
        if not self.stopping.is_set():
            log.info("stopping: finishing the message in flight")
        self.stopping.set()

    def _guarded(self, job: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            if self.stopping.is_set():
                return
            try:
                job()
            except NurtureError as exc:
                log.error("%s", exc)
            except BaseException as exc:  # a bug: stop rather than loop on it
                log.exception("tick failed")
                self.failure = exc
                self.stop()

        return run

    def run(self, install_signals: bool = True) -> None:
        scheduler = BackgroundScheduler(timezone=UTC)
        first = datetime.now(UTC)
        scheduler.add_job(
            self._guarded(self.beat),
            IntervalTrigger(seconds=self.interval),
            next_run_time=first,
            max_instances=1,
            coalesce=True,
            id="tick",
        )
        for job, seconds in self.extra_jobs:
            scheduler.add_job(self._guarded(job), IntervalTrigger(seconds=seconds), next_run_time=first, max_instances=1, coalesce=True)
        if install_signals:
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        scheduler.start()
        try:
            while not self.stopping.wait(0.5):
                pass
        finally:
            # Waits for a running beat; the engine sees `stopping` and winds down quickly.
            scheduler.shutdown(wait=True)
        if self.failure is not None:
            raise self.failure


def serve_forever(
    settings,
    db: Database,
    clock: Callable[[], datetime],
    *,
    owner: str | None = None,
    workers: int = 1,
    spawn: tuple | None = None,
    helper: bool = False,
) -> None:
    """The daemon proper: lock (SQLite), then beats until a signal; always releases the lock.

    `workers` > 1 starts that many sender processes in all (this one included) under the one
    lock: claims are atomic on both databases, so they share the queue without duplicates.
    `spawn` is (config path, database url, --now, verbose) for the helpers; a helper holds no
    lock, leaves the inbox to the parent and neither enrols nor schedules: it sends.
    """
    import multiprocessing

    from .engine import Engine, new_owner
    from .transport import make_transport
    from .workspace import WorkspaceWatcher

    owner = owner or new_owner()
    lock = None
    if not helper:
        lock = lock_for(db, owner, timedelta(seconds=max(3 * settings.tick_seconds, settings.lease_seconds)))
    if lock is not None:
        lock.acquire()
    # What is alive now (the modules: SQLAlchemy alone is some 300,000 objects) lives as long
    # as the process: frozen, the collector's full passes no longer walk it (113 ms -> 15 ms
    # over a 50,000-message run) and forked helpers do not write to its pages. The
    # workspace is loaded after, so the objects of one replaced on reload are still collected.
    gc.freeze()
    # A beat makes a few dozen objects a message, all but a handful freed as they go: the young
    # generation collected every 10,000 allocations instead of 700, each older one every 20
    # collections of the one below instead of 10: 34 instead of 62 ms of collection over a
    # 20,000-message beat (in process, modules frozen as above).
    gc.set_threshold(10_000, 20, 20)
    watcher = WorkspaceWatcher(settings, db)
    daemon: Daemon

    def beat() -> None:
        if lock is not None:
            lock.acquire()  # renew
        workspace = watcher.current()
        engine = Engine(
            settings, db, workspace, make_transport(settings),
            clock=clock, owner=owner, should_stop=daemon.stopping.is_set, sender_only=helper,
        )
        report = engine.tick(clock())
        log.info("tick: %s", report.summary())

    def poll_inbox() -> None:
        report = sync_inbox(settings, db, watcher.current(), clock())
        if report is not None:
            log.info("inbox: %s", report.summary())
            for error in report.errors:
                log.error("inbox: %s", error)

    # The inbox has its own beat ([imap] poll_minutes); a tick never waits for IMAP.
    extra = [(poll_inbox, settings.imap.poll_minutes * 60)] if settings.imap.url and not helper else []
    daemon = Daemon(beat, settings.tick_seconds, extra_jobs=extra)
    children = []
    if workers > 1 and spawn is not None:
        ctx = multiprocessing.get_context(_helper_start_method())
        # No connection crosses the fork: SQLite forbids using one in a child, and a forked
        # child would also inherit SQLite's per-process record of the files it has open.
        db.dispose()
        for i in range(1, workers):
            child = ctx.Process(target=_helper_main, args=(*spawn, f"{owner}/w{i}"), daemon=False)
            child.start()
            children.append(child)
    log.info("nurture run: %s, %d sender(s), ticking every %ss (owner %s)",
             db.dialect, 1 + len(children), settings.tick_seconds, owner)
    if helper:
        threading.Thread(target=_stop_when_orphaned, args=(os.getppid(), daemon), daemon=True).start()
    try:
        daemon.run()
    finally:
        for child in children:
            child.terminate()  # SIGTERM: each finishes its message in flight
        for child in children:
            child.join(timeout=120)
        if lock is not None:
            lock.release()
    log.info("stopped")


def _stop_when_orphaned(parent: int, daemon: Daemon) -> None:
    """A helper whose daemon was killed (kill -9) would go on sending with no one to stop it,
    beside the daemon started next: it stops, as on SIGTERM, once its parent is gone."""
    while not daemon.stopping.wait(1.0):
        if os.getppid() != parent:
            log.warning("the daemon this sender helped is gone: stopping")
            daemon.stop()


def _helper_start_method() -> str:
    """fork on Linux: a helper has everything imported and starts sending at once (spawn
    imports it all again first, ~0.5 s); spawn elsewhere (fork is unsafe on macOS)."""
    import multiprocessing
    import sys

    return "fork" if sys.platform == "linux" and "fork" in multiprocessing.get_all_start_methods() else "spawn"


def _helper_main(config_path, database_url, now, verbose, owner) -> None:
    """A helper sender process of `nurture run --workers N`."""
    from .config import load_settings
    from .database import open_database

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    settings = load_settings(config_path, database_url=database_url, now=now, verbose=verbose)
    db = open_database(settings.database_url)
    try:
        serve_forever(settings, db, offset_clock(settings.now), owner=owner, helper=True)
    finally:
        db.dispose()


def sync_inbox(settings, db: Database, workspace, now: datetime):
    """Read the configured inbox (if any) before enrolling and sending; None without [imap]."""
    if not settings.imap.url:
        return None
    from .reply_sync import sync_replies

    exit_when = {c.id: c.exit_when for c in workspace.campaigns}
    return sync_replies(settings, db, now=now, exit_when=exit_when)
