"""A design probe, not a benchmark of shipped code: how much a whole-message stencil could
save, measured against today's `StepEmails.prepare`.

    .venv/bin/python bench/stencil_bound.py [--messages 20000] [--rounds 3]

The idea (not built; see issue 7's notes): the emails of one step differ only in a few
values. What every one of them repeats is the page assembly, the MIME encoding of every
line and most headers. That could be built once, as constant bytes with slots in between.
Each email would then cost:
- the template runs that give its values and branches (subject, body, layout);
- the lines that hold a value, encoded again;
- its own headers.

This probe builds such a stencil the crude way: it renders the step for a marker candidate
and marks every line in which the marker name or the marker's unsubscribe URL appears as
variable. It holds the stencil's bytes equal to `prepare`'s for 300 candidates (with one
fixed MIME boundary). Then it times, with CPU time, in alternating rounds:

* isolated: `prepare` against the stencil, with and without running the layout program
  (a real stencil could skip that run only after a static split of the layout into the paths
  it branches on and the paths it only outputs);
* in a tick: the engine's sending tick over `--messages` due sends to Postfix's smtp-sink
  (SQLite, one process, in process), once with `prepare` and once with the stencil in its
  place.

It is an upper bound. Its substitution is only right for values that are plain words, such
as bench/send.py's `NameN` candidates. It skips checks a real stencil must keep:
- Markdown neutrality (`MarkdownEntry.accepts`);
- the layout value checks;
- the footer decision;
- the template budget.

Figures of 2026-12-07 (2-core machine, python loop 35 ns, pyenv 3.11.7), two runs of
`--rounds 3`:
- isolated, `prepare` 119–132 µs a message, against 64–90 µs for the stencil with the layout
  run and 54–70 µs without it;
- in a tick, +12% to +26% messages per CPU-second for the stencil (six pairs: +15%, +22%,
  +23%, then +26%, +12%, +15%; 3,360–3,696 against 3,856–4,529).

So a real stencil, which would keep those checks, might bring +15–20%. That alone does not
take the 2-process send from ~7.4–8.1k (session 13's faster machine) to 10,000 msg/s.

Figures of 2026-12-07, a faster machine (python loop 20–24 ns, same pyenv 3.11.7), one run of
`--rounds 3`: isolated, `prepare` 61–74 µs against 30–38 µs (layout run) and 23–27 µs (none);
in a tick, +42%, +28%, +37% messages per CPU-second (4,760–5,029 against 6,414–6,838).

Where the saving is not: encoding only the lines that hold a value. Tried the same day (not
kept): `mime.encode_body`'s bytes computed from the skeleton cache's pieces, each piece list's
constant lines encoded once, held byte-equal. Over 2,000 different candidates, `encode_body`
against that: 4.6 against 3.9 µs for the text part, 6.8–8.6 against 6.9–9.6 µs for the HTML
part (no steady gain). The constant lines already
cost one dict lookup each in `encode_body`'s line cache; what costs is the lines with a value
(the HTML's long CSS-inlined lines go through `b2a_qp`), and those a stencil encodes too. So
the probe's margin comes from what it does not run around the values: the page and Markdown
caches' keys and checks, the footer decision, the serialising and filling, the text footer.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import python, smtp_sink  # noqa: E402
from bench.send import T0, _workspace, import_and_schedule  # noqa: E402
from nurture_mail import mime  # noqa: E402
from nurture_mail.config import load_settings  # noqa: E402
from nurture_mail.database import open_database  # noqa: E402
from nurture_mail.engine import Engine  # noqa: E402
from nurture_mail.messages import _boundary, _date  # noqa: E402
from nurture_mail.rendering import PreparedEmail, StepEmails  # noqa: E402
from nurture_mail.schedule import zone_for  # noqa: E402
from nurture_mail.sequencing import candidate_context  # noqa: E402
from nurture_mail.template_budget import bounded  # noqa: E402
from nurture_mail.template_cache import md_text  # noqa: E402
from nurture_mail.template_programs import LayoutRun, TextRun  # noqa: E402
from nurture_mail.template_values import view  # noqa: E402
from nurture_mail.templates import RenderedEmail  # noqa: E402
from nurture_mail.transport import make_transport  # noqa: E402
from nurture_mail.unsubscribe import make_token, unsubscribe_links  # noqa: E402
from nurture_mail.workspace import load_workspace  # noqa: E402

MARK = "Mfirstm"
CLOCK = time.process_time
PREPARE = StepEmails.prepare  # today's, also while a tick runs with the stencil in its place


class Stencil:
    """One step's emails as constant lines and lines with a value, for `NameN` candidates."""

    def __init__(self, emails: StepEmails, sample: dict, now, zone):
        self.emails, self.zone = emails, zone
        templates = emails.templates
        self.skeleton = templates._skeleton
        self.filename = templates._file(emails.template)
        self.source = templates._sources[self.filename]
        self.program = self.skeleton._body_program(self.filename)
        self.text_env, self.layout_env = templates._text_env, templates._layout_env
        marker = dict(sample, first_name=MARK, token_key="cd" * 16)
        token = make_token(emails.secret, marker["token_key"])
        self.url = unsubscribe_links(emails.base_url, emails.mailto_addr, token)[0]
        rendered = PREPARE(emails, marker, message_id="marker@talent.example", now=now, zone=zone).rendered
        self.text, self.html = self._plan(rendered.text), self._plan(rendered.html)

    def _plan(self, text: str) -> list:
        lines = text.split("\n")
        out: list = []
        for i, line in enumerate(lines):
            last = i == len(lines) - 1
            if MARK in line or self.url in line:
                out.append((line, last))
            else:  # encoded as encode_body encodes a line (a last line has no line break)
                out.append(mime._quoted_printable([line]) if last else mime._quoted_printable([line, ""])[:-2])
        return out

    def _encode(self, plan: list, first: str, url: str) -> bytes:
        out = []
        for item in plan:
            if type(item) is bytes:
                out.append(item)
                continue
            line, last = item
            line = line.replace(MARK, first).replace(self.url, url)
            if mime._qp_plain(line):
                out.append(line.encode("ascii"))
            else:
                encoded = mime._qp(line.encode("utf-8") + (b"" if last else b"\n"))
                out.append(encoded if last else encoded[:-2])
        return b"\r\n".join(out)

    def message(self, candidate: dict, message_id: str, now, boundary: str | None = None,
                layout: bool = True) -> tuple[str, bytes]:
        e = self.emails
        token = make_token(e.secret, candidate["token_key"])
        https, mailto = unsubscribe_links(e.base_url, e.mailto_addr, token)
        context = {"candidate": candidate_context(candidate), **e.shared, "unsubscribe_url": https,
                   "today": now.astimezone(self.zone).date()}
        values = {key: view(key, value) for key, value in context.items()}
        with bounded():  # the runs a real stencil still needs: values and branches
            subject, preheader = self.skeleton._head(self.source, values, e.subject)
            body = TextRun(self.text_env, values, tokens=True)
            body.run(self.program)
            if any(md_text(text) is None for text in body.texts):
                raise ValueError("a value the probe cannot substitute")
            if layout:
                run = LayoutRun(self.layout_env, {**values, "subject": subject, "preheader": preheader},
                                1000, len(body.texts))
                run.run(self.skeleton._layout_skeleton_program())
        to_name = candidate.get("full_name") or f"{candidate['first_name']} {candidate['last_name']}"
        headers = [
            mime.sender_header("From", e.name, e.from_addr),
            mime.address_header("To", to_name, candidate["email"]),
        ]
        if e.reply_to:
            headers.append(mime.sender_header("Reply-To", "", e.reply_to))
        boundary = boundary or _boundary()
        headers += [
            mime.unstructured("Subject", subject),
            f"Date: {_date(now)}",
            f"Message-ID: <{mime.check_msg_id(message_id)}>",
            mime.angle_list("List-Unsubscribe", [mime.check_uri(https), mime.check_uri(mailto)], ","),
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
            "MIME-Version: 1.0",
            f'Content-Type: multipart/alternative; boundary="{boundary}"',
        ]
        delimiter = f"\r\n--{boundary}\r\n".encode("ascii")
        first = candidate["first_name"]
        return subject, b"".join((
            "\r\n".join(headers).encode("ascii"), b"\r\n", delimiter,
            b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n',
            self._encode(self.text, first, https), delimiter,
            b'Content-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n',
            self._encode(self.html, first, https), f"\r\n--{boundary}--\r\n".encode("ascii"),
        ))


def candidate(i: int) -> dict:
    """Shaped like `ledger.claimed_details`'s candidates, with bench/send.py's values."""
    return {"id": i, "email": f"person{i}@example{i % 97}.com", "first_name": f"Name{i}",
            "last_name": f"Surname{i}", "full_name": None, "status": "rejected",
            "timezone": "Europe/Berlin", "owner": None, "role": "Backend Engineer",
            "stage_reached": None, "decided_at": None, "source": None, "created_at": None,
            "token_key": f"{i:032x}", "attributes": {}, "tags": []}


def tick_cpu(root: Path, db_file: Path, use_stencil: bool) -> float:
    """CPU seconds a message of one sending tick over the scheduled copy of the database
    (the stencil's bytes in the tick are not compared again: `main` compared them before)."""
    shutil.copy(db_file, root / "nurture.db")
    later = T0 + timedelta(hours=1)
    settings = load_settings(root / "nurture.toml", env={}, database_url=f"sqlite:///{root / 'nurture.db'}")
    db = open_database(settings.database_url)
    stencils: dict[int, Stencil] = {}

    def stencil_prepare(self, candidate, *, message_id, now, zone, boundary=None):
        stencil = stencils.get(id(self))
        if stencil is None:
            stencil = stencils[id(self)] = Stencil(self, candidate, now, zone)
        subject, message = stencil.message(candidate, message_id, now, boundary)
        return PreparedEmail(candidate["email"], RenderedEmail(subject, "", ""), None, message)

    try:
        if use_stencil:
            StepEmails.prepare = stencil_prepare
        engine = Engine(settings, db, load_workspace(settings, db), make_transport(settings), clock=lambda: later)
        start = CLOCK()
        report = engine.tick(later)
        spent = CLOCK() - start
        if report.sent == 0:
            raise RuntimeError(f"nothing sent: {report.summary()}")
        return spent / report.sent
    finally:
        StepEmails.prepare = PREPARE
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, smtp_sink() as port:
        root = Path(tmp)
        csv = _workspace(root, port, args.messages)
        base = [python(), "-m", "nurture_mail", "--database", f"sqlite:///{root / 'nurture.db'}"]
        import_and_schedule(base, csv, root)
        scheduled = root / "scheduled.db"
        shutil.copy(root / "nurture.db", scheduled)
        os.chdir(root)

        settings = load_settings(root / "nurture.toml", env={}, database_url=f"sqlite:///{scheduled}")
        db = open_database(settings.database_url)
        ws = load_workspace(settings, db)
        db.dispose()
        campaign = ws.campaign("bench")
        step = campaign.steps[0]
        emails = StepEmails(ws.templates, settings, ws.unsubscribe_secret, campaign, step, None)
        now = T0 + timedelta(hours=1)
        zone = zone_for(campaign.schedule, "Europe/Berlin", settings.default_timezone)
        stencil = Stencil(emails, candidate(0), now, zone)
        fixed = "=_" + "1" * 32
        for i in range(300):
            expected = emails.prepare(candidate(i), message_id=f"m{i}@talent.example", now=now, zone=zone,
                                      boundary=fixed).message
            if stencil.message(candidate(i), f"m{i}@talent.example", now, fixed)[1] != expected:
                raise SystemExit(f"the stencil's bytes differ from prepare's for candidate {i}")
        print("stencil bytes == prepare bytes for 300 candidates")

        people = [candidate(i) for i in range(args.messages)]
        ways = {
            "prepare": lambda c, i: emails.prepare(c, message_id=f"m{i}@talent.example", now=now, zone=zone),
            "stencil, layout run": lambda c, i: stencil.message(c, f"m{i}@talent.example", now),
            "stencil, no layout run": lambda c, i: stencil.message(c, f"m{i}@talent.example", now, layout=False),
        }
        for _ in range(args.rounds):
            figures = []
            for name, way in ways.items():
                start = CLOCK()
                for i, person in enumerate(people):
                    way(person, i)
                figures.append(f"{name} {(CLOCK() - start) / len(people) * 1e6:.1f} us")
            print("isolated: " + ", ".join(figures))
        for _ in range(args.rounds):
            plain, fast = tick_cpu(root, scheduled, False), tick_cpu(root, scheduled, True)
            print(f"tick: prepare {1 / plain:,.0f} msg per CPU-second, stencil {1 / fast:,.0f}"
                  f" ({plain / fast - 1:+.0%})")


if __name__ == "__main__":
    main()
