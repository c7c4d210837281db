"""A throwaway Dovecot IMAP server on a loopback port, for tests.

Debian's `dovecot-imapd` provides /usr/sbin/dovecot. The server runs in the foreground
(`dovecot -F -c CONF`) with its config, sockets, state, log and Maildir in a temporary
directory; plaintext login over loopback, a static passdb with one user. Dovecot refuses to
give mail access to uid 0, so under root the mail processes run as the `dovecot` user and the
directory is handed to it; otherwise everything runs as the current user.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import selectors
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
USER = "dana@talent.example"
PASSWORD = "p@ss:w/rd"  # characters that must be URL-encoded in imap://user:pass@host


def available() -> bool:
    return os.path.exists(DOVECOT) and os.access(DOVECOT, os.X_OK)


def version() -> str:
    out = subprocess.run([DOVECOT, "--version"], capture_output=True, text=True, timeout=10)
    return out.stdout.strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accounts() -> tuple[str, str, int, int]:
    """(internal user, login user, mail uid, mail gid)."""
    if os.geteuid() == 0:
        internal = pwd.getpwnam("dovecot")
        try:
            login = pwd.getpwnam("dovenull").pw_name
        except KeyError:
            login = internal.pw_name
        return internal.pw_name, login, internal.pw_uid, internal.pw_gid
    me = pwd.getpwuid(os.getuid())
    return me.pw_name, me.pw_name, me.pw_uid, me.pw_gid


CONFIG = """\
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
ssl = no
{cleartext}
auth_mechanisms = plain login
default_internal_user = {internal}
default_internal_group = {internal_group}
default_login_user = {login}
first_valid_uid = 1
mail_location = maildir:{root}/home/Maildir
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"""


@dataclass
class DovecotServer:
    root: Path
    port: int
    process: subprocess.Popen | None = None
    uid: int = field(default=-1)

    @classmethod
    def start(cls, timeout: float = 15.0) -> DovecotServer:
        root = Path(tempfile.mkdtemp(prefix="nurture-dovecot-"))
        os.chmod(root, 0o755)
        for sub in ("run", "state", "home"):
            (root / sub).mkdir()
        internal, login, uid, gid = _accounts()
        port = _free_port()
        v = version()
        cleartext = (
            "auth_allow_cleartext = yes" if v.startswith("2.4") else "disable_plaintext_auth = no"
        )
        group = grp.getgrgid(pwd.getpwnam(internal).pw_gid).gr_name
        (root / "dovecot.conf").write_text(
            CONFIG.format(
                root=root, port=port, internal=internal, internal_group=group, login=login,
                uid=uid, gid=gid, password=PASSWORD, cleartext=cleartext,
            )
        )
        if os.geteuid() == 0:
            os.chown(root / "home", uid, gid)
        server = cls(root, port, uid=uid)
        server.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(root / "dovecot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                err = server.process.stderr.read().decode(errors="replace")
                server.stop()
                raise RuntimeError(f"dovecot {v} exited: {err.strip()} {server.log()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    if s.recv(200).startswith(b"* OK"):
                        return server
            except OSError:
                time.sleep(0.05)
        server.stop()
        raise RuntimeError(f"dovecot {v} did not accept connections on port {port}")

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def url(self) -> str:
        return f"imap://{quote(USER, safe='')}:{quote(PASSWORD, safe='')}@127.0.0.1:{self.port}/INBOX"

    def client(self):
        from imapclient import IMAPClient

        c = IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=10)
        c.login(USER, PASSWORD)
        return c

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process is not None and self.process.stderr:
            self.process.stderr.close()
        self.process = None
        shutil.rmtree(self.root, ignore_errors=True)


# --- fault injection ---------------------------------------------------------------------------

# A command that fetches message bodies: "TAG [UID] FETCH set (... BODY.PEEK[] ...)".
_BODY_FETCH = re.compile(rb"^(\S+) (?:UID )?FETCH [^\r\n]*\bBODY(?:\.PEEK)?\[", re.I)
_LITERAL_AT_END = re.compile(rb"\{(\d+)\}\r?\n$")
_COMMAND = re.compile(rb"^\S+ ((?:UID )?[A-Za-z]+)\b", re.I)


class _Responses:
    """Where each server response ends in a stream of bytes read in pieces: a response is a
    line, plus, while a line ends with a literal {N}, N raw bytes and the next line."""

    def __init__(self):
        self.offset = 0  # bytes fed so far
        self.line = bytearray()  # the line being read
        self.skip = 0  # literal bytes still to pass over
        self.first: bytes | None = None  # the first line of the response being read

    def feed(self, data: bytes) -> list[tuple[bytes, int]]:
        """(first line, stream offset just past its end) of every response `data` completes."""
        done = []
        i, n = 0, len(data)
        while i < n:  # every turn consumes at least one byte
            if self.skip:
                step = min(self.skip, n - i)
                self.skip -= step
                i += step
                continue
            nl = data.find(b"\n", i)
            if nl < 0:
                self.line += data[i:]
                break
            self.line += data[i : nl + 1]
            i = nl + 1
            line = bytes(self.line)
            self.line.clear()
            if self.first is None:
                self.first = line
            literal = _LITERAL_AT_END.search(line)
            if literal:
                self.skip = int(literal[1])
                continue
            done.append((self.first, self.offset + i))
            self.first = None
        self.offset += n
        return done


@dataclass
class Cut:
    """Where the proxy cut a connection."""

    messages: int  # complete body FETCH responses the client received before the cut
    offset: int  # bytes of server output the client received in all


class FetchCutProxy:
    """A loopback TCP proxy in front of an IMAP server that can drop the connection in the
    middle of the answer to a body FETCH, deterministically.

    `cut_after(messages, extra)` arms it for the next connection: the client receives the
    server's output up to the end of the `messages`-th message of the body FETCH responses
    on that connection (counted over all its body FETCH commands; 0 = the start of the answer
    to the first one), then `extra` more bytes, and then both sides are closed. Once cut (or
    if the connection ends first) the proxy forwards faithfully again. `cuts` records every
    cut, so a test can check that the fault really happened where it meant it to; `commands`
    every command the clients sent (the verb, e.g. "EXAMINE"; a FETCH with its item list;
    never a LOGIN's arguments).
    """

    def __init__(self, upstream_port: int, host: str = "127.0.0.1"):
        self.upstream = (host, upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.cuts: list[Cut] = []
        self.commands: list[str] = []
        self._plan: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, name="imap-proxy", daemon=True)
        self._accepter.start()

    def url(self, folder: str) -> str:
        return f"imap://{quote(USER, safe='')}:{quote(PASSWORD, safe='')}@127.0.0.1:{self.port}/{folder}"

    def cut_after(self, messages: int, extra: int = 0) -> None:
        with self._lock:
            self._plan = (messages, extra)

    def stop(self) -> None:
        self._stopping.set()
        self._accepter.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)
        self.listener.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                plan, self._plan = self._plan, None
            thread = threading.Thread(target=self._pipe, args=(client, plan), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _note(self, line: bytes) -> None:
        m = _COMMAND.match(line)
        if m is None:
            return  # a literal's content or a continuation
        verb = m[1].decode("ascii").upper()
        if verb.endswith("FETCH"):
            verb += " " + line.decode("ascii", "replace").split("(", 1)[-1].rstrip("\r\n)")
        with self._lock:
            self.commands.append(verb)

    def _pipe(self, client: socket.socket, plan: tuple[int, int] | None) -> None:
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        with client, server, selectors.DefaultSelector() as selector:
            client.setblocking(True)
            selector.register(client, selectors.EVENT_READ, "client")
            selector.register(server, selectors.EVENT_READ, "server")
            responses = _Responses()
            requests = bytearray()
            fetching: bytes | None = None  # the tag of the body FETCH being answered
            ends: list[int] = []  # where each message of the body FETCH answers ends
            cut_at: int | None = None
            sent = 0  # server bytes forwarded to the client
            while not self._stopping.is_set():
                for key, _ in selector.select(timeout=0.2):
                    side = key.data
                    data = (client if side == "client" else server).recv(65536)
                    if not data:
                        return  # one side closed: close the other
                    if side == "client":
                        requests += data
                        *lines, rest = requests.split(b"\n")
                        requests = bytearray(rest)
                        for line in lines:
                            self._note(bytes(line))
                            m = _BODY_FETCH.match(bytes(line))
                            if m and fetching is None:
                                fetching = m[1]
                                if plan is not None and plan[0] == 0 and cut_at is None:
                                    cut_at = responses.offset + plan[1]
                        server.sendall(data)
                        continue
                    for first, end in responses.feed(data):
                        if fetching is None:
                            continue
                        if first.startswith(fetching + b" "):
                            fetching = None  # tagged completion of the FETCH
                        elif first.startswith(b"* ") and b" FETCH " in first:
                            ends.append(end)
                            if plan is not None and len(ends) == plan[0] and cut_at is None:
                                cut_at = end + plan[1]
                    if cut_at is None:
                        client.sendall(data)
                        sent += len(data)
                        continue
                    keep = max(0, min(len(data), cut_at - sent))
                    client.sendall(data[:keep])
                    sent += keep
                    if sent >= cut_at:
                        with self._lock:
                            self.cuts.append(Cut(sum(1 for e in ends if e <= sent), sent))
                        for s in (client, server):
                            with contextlib.suppress(OSError):
                                s.shutdown(socket.SHUT_RDWR)
                        return
