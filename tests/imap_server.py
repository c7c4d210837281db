"""A throwaway Dovecot IMAP server on a loopback port, for tests.

Debian's `dovecot-imapd` provides /usr/sbin/dovecot. The server runs in the foreground
(`dovecot -F -c CONF`) with its config, sockets, state, log and Maildir in a temporary
directory; plaintext login over loopback, a static passdb with one user. Dovecot refuses to
give mail access to uid 0, so under root the mail processes run as the `dovecot` user and the
directory is handed to it; otherwise everything runs as the current user.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
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
