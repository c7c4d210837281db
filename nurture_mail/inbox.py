"""Where inbound mail comes from: IMAP folders, an mbox file, a Maildir, single .eml files.

Every source is read-only. IMAP folders are opened with EXAMINE (`readonly=True`) and bodies
fetched with `BODY.PEEK[]`, so no flag changes, and nothing here ever stores flags, moves,
expunges or deletes. Maildir files are read where they lie (never renamed from new/ to cur/).

A source yields `Batch`es of `Fetched` messages. A batch may carry a `Position` (IMAP: the
folder's UIDVALIDITY and the highest UID in the batch) that the caller stores in the same
transaction as the messages, so a crash re-reads at most one batch and dedupe absorbs it.
File sources have no position: re-reading them is harmless because the caller skips keys it
already stored before classifying anything.
"""

from __future__ import annotations

import contextlib
import mailbox
import os
import re
import socket
import ssl
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, unquote, urlsplit

from .errors import ConfigError, NurtureError

BATCH = 200  # UIDs per FETCH
# Messages per batch from a Maildir, an mbox or files, and at most MAX_BATCH_BYTES of them. A
# batch is one transaction. Larger ones write less on SQLite (each commit rewrites every index
# page the batch touched: 2,000 instead of 500 saves a quarter of the page writes), but the
# first batch must be classified before anything is stored and the last one is stored with
# the workers idle; measured with the worker pool, 2,000 was no faster than 500.
FILE_BATCH = 500
MAX_BATCH_BYTES = 32 * 1024 * 1024  # bodies held in memory at once, about
MAX_MESSAGE_BYTES = 10 * 1024 * 1024  # beyond this only the start of a message is fetched
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


class InboxError(NurtureError):
    """A source cannot be read (connection, login, missing folder or file)."""


@dataclass(frozen=True)
class Fetched:
    """One raw message and where it came from."""

    source: str  # the folder or file key, e.g. "imap://dana@imap.example:993/INBOX"
    uid: str  # IMAP UID, Maildir key, mbox index or file name
    raw: bytes
    received: datetime | None = None  # delivery time if the source knows it (aware UTC)


@dataclass(frozen=True)
class Position:
    """An incremental sync position to store with a batch (IMAP)."""

    mailbox: str
    uidvalidity: int
    last_uid: int


@dataclass
class Batch:
    messages: list[Fetched]
    position: Position | None = None


# Looks up a stored position: mailbox key -> (uidvalidity, last_uid) or None.
Positions = Callable[[str], "tuple[int, int] | None"]


class Inbox(Protocol):
    """A read-only source of raw messages."""

    label: str  # for reports and errors; never contains a password

    def batches(self, positions: Positions) -> Iterator[Batch]: ...

    def close(self) -> None: ...


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- IMAP -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImapTarget:
    """An IMAP URL, parsed: imaps://user:pass@host:port/FOLDER or imap://... (STARTTLS)."""

    implicit_tls: bool
    host: str
    port: int
    username: str
    password: str = field(repr=False)
    folder: str | None

    @classmethod
    def parse(cls, url: str) -> ImapTarget:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"imap url: {exc}") from None
        if parts.scheme not in ("imap", "imaps"):
            raise ConfigError(
                f"imap url must start with imaps:// or imap://, got {parts.scheme or 'nothing'!r}"
            )
        if not parts.hostname:
            raise ConfigError("imap url has no host")
        if parts.username is None:
            raise ConfigError("imap url has no user: imaps://user:password@host/INBOX")
        implicit = parts.scheme == "imaps"
        folder = unquote(parts.path.lstrip("/")) or None
        return cls(
            implicit_tls=implicit,
            host=parts.hostname,
            port=port or (993 if implicit else 143),
            username=unquote(parts.username),
            password=unquote(parts.password or ""),
            folder=folder,
        )

    def key(self, folder: str) -> str:
        """The MailboxState key of a folder: no password, user and host lower-cased."""
        return f"{self.label.lower()}/{folder}"

    @property
    def label(self) -> str:
        scheme = "imaps" if self.implicit_tls else "imap"
        return f"{scheme}://{quote(self.username, safe='')}@{self.host}:{self.port}"


class ImapInbox:
    """Folders of one IMAP account, read incrementally by (UIDVALIDITY, last UID)."""

    def __init__(
        self,
        url: str,
        *,
        folders: Sequence[str] = (),
        starttls: str = "required",
        timeout: float = 60.0,
        batch_size: int = BATCH,
        ssl_context: ssl.SSLContext | None = None,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ):
        self.target = ImapTarget.parse(url)
        wanted = ([self.target.folder] if self.target.folder else []) + list(folders)
        self.folders = list(dict.fromkeys(wanted)) or ["INBOX"]
        if starttls not in ("required", "off"):
            raise ConfigError(f"[imap] starttls must be 'required' or 'off', got {starttls!r}")
        if (
            starttls == "off"
            and not self.target.implicit_tls
            and self.target.host.lower() not in LOCAL_HOSTS
        ):
            raise ConfigError(
                f"[imap] starttls = \"off\" sends the password in clear text; it is allowed only "
                f"for a server on localhost, not {self.target.host}"
            )
        self.starttls = starttls
        self.timeout = timeout
        self.batch_size = max(1, batch_size)
        self.max_batch_bytes = max_batch_bytes
        self.max_message_bytes = max_message_bytes
        self.ssl_context = ssl_context
        self.label = self.target.label
        self._client = None

    # -- connection -------------------------------------------------------------------------
    def _connect(self):
        from imapclient import IMAPClient
        from imapclient.exceptions import IMAPClientError, LoginError

        t = self.target
        context = self.ssl_context or ssl.create_default_context()
        try:
            client = IMAPClient(
                t.host, port=t.port, ssl=t.implicit_tls, ssl_context=context, timeout=self.timeout
            )
        except (OSError, IMAPClientError) as exc:
            raise InboxError(f"{self.label}: cannot connect: {_reason(exc)}") from None
        try:
            if not t.implicit_tls and self.starttls == "required":
                if not client.has_capability("STARTTLS"):
                    raise InboxError(
                        f"{self.label}: the server does not offer STARTTLS; refusing to send the "
                        "password in clear text (use imaps://, or [imap] starttls = \"off\" for "
                        "a server on localhost)"
                    )
                client.starttls(context)
            client.login(t.username, t.password)
        except LoginError as exc:
            _quietly(client.logout)
            raise InboxError(f"{self.label}: login failed: {_reason(exc)}") from None
        except InboxError:
            _quietly(client.shutdown)
            raise
        except (OSError, IMAPClientError) as exc:
            _quietly(client.shutdown)
            raise InboxError(f"{self.label}: {_reason(exc)}") from None
        return client

    def close(self) -> None:
        if self._client is not None:
            _quietly(self._client.logout)
            self._client = None

    # -- reading ----------------------------------------------------------------------------
    def batches(self, positions: Positions) -> Iterator[Batch]:
        from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

        if self._client is None:
            self._client = self._connect()
        client = self._client
        for folder in self.folders:
            key = self.target.key(folder)
            reading = _Reading()
            try:
                yield from self._folder(client, folder, key, positions, reading)
            except (OSError, IMAPClientAbortError) as exc:
                # The connection is gone (dropped, reset, timed out): every batch yielded so
                # far is whole; the one being fetched is dropped entirely, and its position
                # was never handed out, so the next sync starts again at its first UID.
                _quietly(client.shutdown)
                self._client = None
                raise InboxError(f"{self.label}/{folder}: {reading.lost(exc)}") from None
            except IMAPClientError as exc:
                raise InboxError(f"{self.label}/{folder}: {_reason(exc)}") from None

    def _folder(self, client, folder: str, key: str, positions: Positions,
                reading: _Reading) -> Iterator[Batch]:
        info = client.select_folder(folder, readonly=True)  # EXAMINE: a read-only session
        uidvalidity = int(info[b"UIDVALIDITY"])
        stored = positions(key)
        last = 0
        if stored is not None and stored[0] == uidvalidity:
            last = stored[1]
        # A changed UIDVALIDITY means the old UIDs mean nothing: read the folder from UID 1;
        # messages already stored are recognised by their dedupe key and counted once.
        exists = int(info.get(b"EXISTS", 1))
        uids = sorted(u for u in client.search(["UID", f"{last + 1}:*"]) if u > last) if exists else []
        if not uids:
            if stored != (uidvalidity, last):
                yield Batch([], Position(key, uidvalidity, last))
            return
        for chunk in _chunks(uids, self.batch_size):
            reading.uids = (chunk[0], chunk[-1])
            sizes = client.fetch(list(chunk), ["RFC822.SIZE"])
            for group in _by_size(chunk, sizes, self.max_batch_bytes, self.max_message_bytes):
                reading.uids = (group[0], group[-1])
                batch = Batch(self._fetch(client, key, group, sizes), Position(key, uidvalidity, group[-1]))
                reading.uids = None
                yield batch

    def _fetch(self, client, key: str, uids: list[int], sizes: dict) -> list[Fetched]:
        """Bodies with BODY.PEEK[] (never sets \\Seen); a huge message only up to its first
        `max_message_bytes`, which is all classification needs."""
        limit = self.max_message_bytes
        big = [u for u in uids if _size(sizes, u) > limit]
        small = [u for u in uids if u not in set(big)]
        data: dict = {}
        if small:
            data.update(client.fetch(small, ["BODY.PEEK[]", "INTERNALDATE"]))
        if big:
            data.update(client.fetch(big, [f"BODY.PEEK[]<0.{limit}>", "INTERNALDATE"]))
        messages = []
        for uid in uids:
            item = data.get(uid)
            if item is None:  # expunged meanwhile
                continue
            raw = item.get(b"BODY[]") if b"BODY[]" in item else item.get(b"BODY[]<0>")
            if raw is None:
                continue
            messages.append(Fetched(key, str(uid), bytes(raw), _utc(item.get(b"INTERNALDATE"))))
        return messages


@dataclass
class _Reading:
    """The UIDs an IMAP folder read is fetching, for the message when the connection drops."""

    uids: tuple[int, int] | None = None  # first and last UID of the FETCH under way

    def lost(self, exc: BaseException) -> str:
        cause = _lost_reason(exc)
        if self.uids is None:
            return f"connection lost ({cause})"
        first, last = self.uids
        span = f"UID {first}" if first == last else f"UIDs {first}-{last}"
        return f"connection lost while fetching {span} ({cause}); the next sync reads again from UID {first}"


def _lost_reason(exc: BaseException) -> str:
    """Why a connection ended, without the protocol bytes imaplib puts in its messages (they
    may hold a piece of someone's mail)."""
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    text = str(exc).rsplit("=> ", 1)[-1]  # imaplib: "command: FETCH => socket error: EOF"
    text = text.removeprefix("socket error: ")
    if text == "EOF" or text.startswith("unterminated line"):
        return "the server closed the connection"
    return re.split(r": b['\"]", text, maxsplit=1)[0]  # "unexpected response: b'...'"


def _size(sizes: dict, uid: int) -> int:
    return int((sizes.get(uid) or {}).get(b"RFC822.SIZE", 0) or 0)


def _by_size(uids: Sequence[int], sizes: dict, budget: int, cap: int) -> Iterator[list[int]]:
    """Consecutive groups of UIDs whose bodies (each counted up to `cap`) fit in `budget`."""
    group: list[int] = []
    total = 0
    for uid in uids:
        size = min(_size(sizes, uid), cap)
        if group and total + size > budget:
            yield group
            group, total = [], 0
        group.append(uid)
        total += size
    if group:
        yield group


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    if moment.tzinfo is None:  # imapclient normalises to local time without a zone
        moment = moment.astimezone()
    return moment.astimezone(UTC)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    text = str(exc)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text or type(exc).__name__


def _quietly(action: Callable[[], object]) -> None:
    with contextlib.suppress(Exception):  # closing a broken connection: nothing left to do
        action()


# --- files ------------------------------------------------------------------------------------


class MaildirInbox:
    """A Maildir directory (new/ and cur/), read in place."""

    def __init__(self, path: str | os.PathLike, *, batch_size: int = FILE_BATCH):
        self.path = Path(path)
        self.label = f"maildir:{self.path}"
        self.batch_size = max(1, batch_size)

    def _files(self) -> list[tuple[str, str]]:
        """(file name, path) of every message in new/ and cur/, by name."""
        if not self.path.is_dir():
            raise InboxError(f"{self.label}: no such directory")
        subdirs = [str(self.path / d) for d in ("new", "cur") if (self.path / d).is_dir()]
        if not subdirs:
            raise InboxError(f"{self.label}: not a Maildir (no new/ or cur/)")
        files: list[tuple[str, str]] = []
        for sub in subdirs:
            with os.scandir(sub) as entries:
                files.extend((e.name, e.path) for e in entries if not e.name.startswith(".") and e.is_file())
        files.sort()
        return files

    def batches(self, positions: Positions) -> Iterator[Batch]:
        def messages() -> Iterator[Fetched]:
            for name, path in self._files():
                try:
                    raw = _read_file(path)
                except FileNotFoundError:  # moved by a mail client meanwhile (new/ -> cur/)
                    continue
                yield Fetched(self.label, name.split(":2,", 1)[0], raw)

        for group in _bounded(messages(), self.batch_size):
            yield Batch(group)

    def close(self) -> None:
        pass


def _bounded(messages: Iterator[Fetched], count: int, budget: int = MAX_BATCH_BYTES) -> Iterator[list[Fetched]]:
    """Consecutive groups of at most `count` messages and, but for a single huge one, at most
    `budget` bytes: what a file source holds in memory at once."""
    group: list[Fetched] = []
    size = 0
    for message in messages:
        if group and (len(group) >= count or size + len(message.raw) > budget):
            yield group
            group, size = [], 0
        group.append(message)
        size += len(message.raw)
    if group:
        yield group


def _read_file(path: str) -> bytes:
    """A whole file, with plain os.read calls: half the cost of open().read() for the small
    files a Maildir holds (no buffered reader, no fstat)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        parts = []
        while part := os.read(fd, 1 << 20):
            parts.append(part)
    finally:
        os.close(fd)
    return parts[0] if len(parts) == 1 else b"".join(parts)


class MboxInbox:
    """One mbox file."""

    def __init__(self, path: str | os.PathLike, *, batch_size: int = FILE_BATCH):
        self.path = Path(path)
        self.label = f"mbox:{self.path}"
        self.batch_size = max(1, batch_size)

    def batches(self, positions: Positions) -> Iterator[Batch]:
        if not self.path.is_file():
            raise InboxError(f"{self.label}: no such file")
        box = mailbox.mbox(self.path, create=False)
        try:
            keys = list(box.iterkeys())
            for group in _bounded((Fetched(self.label, str(k), box.get_bytes(k)) for k in keys), self.batch_size):
                yield Batch(group)
        finally:
            box.close()

    def close(self) -> None:
        pass


class FilesInbox:
    """Single .eml files."""

    def __init__(self, paths: Sequence[str | os.PathLike], *, batch_size: int = FILE_BATCH):
        self.paths = [Path(p) for p in paths]
        self.label = "files"
        self.batch_size = max(1, batch_size)

    def batches(self, positions: Positions) -> Iterator[Batch]:
        def messages() -> Iterator[Fetched]:
            for path in self.paths:
                try:
                    raw = path.read_bytes()
                except OSError as exc:
                    raise InboxError(f"{path}: {exc.strerror or exc}") from None
                yield Fetched(f"file:{path.parent}", path.name, raw)

        for group in _bounded(messages(), self.batch_size):
            yield Batch(group)

    def close(self) -> None:
        pass


def imap_from_settings(settings, url: str | None = None) -> ImapInbox | None:
    """The configured IMAP account ([imap] url and folders), or an explicit URL."""
    imap = settings.imap
    chosen = url or (imap.url.reveal() if imap.url else None)
    if not chosen:
        return None
    return ImapInbox(chosen, folders=imap.folders, starttls=imap.starttls)
