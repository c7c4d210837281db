"""A demo-like dataset for the browser tests and the README screenshot: `nurture demo --keep`
(the sample pool through the real engine and a loopback SMTP server), then replies,
out-of-office notes and a bounce written as an mbox and read by `nurture replies sync`."""

from __future__ import annotations

import mailbox
import random
import subprocess
import sys
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from sqlalchemy import select

from nurture_mail.database import open_database
from nurture_mail.models import Send
from nurture_mail.store.ledger import aware

REPLIES = [
    "Thanks for keeping in touch! I'd love to hear about the new roles.",
    "Hi Dana, yes - happy to chat next week. Tuesday afternoon works.",
    "Good timing: I'm starting to look around again.",
    "Thank you, I'm settled for now but let's stay in touch.",
    "Could you send me the job description for the platform team?",
]


def nurture(root: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "nurture_mail", *args], cwd=root,
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"nurture {' '.join(args)} failed: {done.stdout}{done.stderr}")
    return done.stdout


def build(root: Path, seed: int = 6) -> str:
    """Run the demo into `root` and answer some of its mail; returns the database URL."""
    nurture(root.parent, "demo", "--keep", str(root))
    url = f"sqlite:///{root / 'nurture.db'}"
    db = open_database(url)
    try:
        with db.sessions() as s:
            sends = list(s.execute(select(Send).where(Send.state == "sent").order_by(Send.id)).scalars())
    finally:
        db.dispose()
    rng = random.Random(seed)
    box = mailbox.mbox(root / "inbox.mbox")
    answered: set[str] = set()
    for send in sends:
        roll = rng.random()
        if send.to_addr in answered or roll > 0.42:
            continue
        sent_at = aware(send.sent_at)
        msg = EmailMessage()
        msg["To"] = "Dana Reyes <dana@talent.example>"
        msg["In-Reply-To"] = f"<{send.message_id}>"
        msg["References"] = f"<{send.message_id}>"
        msg["Message-ID"] = f"<r{send.id}.{seed}@candidate.example>"
        if roll < 0.04:  # a hard bounce from the receiving server
            msg["From"] = "Mail Delivery System <MAILER-DAEMON@mx.example.com>"
            msg["Subject"] = "Undelivered Mail Returned to Sender"
            msg["Date"] = format_datetime(sent_at + timedelta(minutes=3))
            msg.set_content(
                f"This is the mail system at host mx.example.com.\n\nI'm sorry to have to inform you "
                f"that your message could not be delivered.\n\n<{send.to_addr}>: host mx.example.com "
                f"said: 550 5.1.1 <{send.to_addr}>: Recipient address rejected: User unknown\n\n"
                f"Original-Recipient: rfc822;{send.to_addr}\nFinal-Recipient: rfc822;{send.to_addr}\n"
                f"Action: failed\nStatus: 5.1.1\n\nMessage-ID: <{send.message_id}>\n"
            )
        elif roll < 0.10:
            msg["From"] = send.to_addr
            msg["Subject"] = f"Automatic reply: {send.subject}"
            msg["Auto-Submitted"] = "auto-replied"
            msg["Date"] = format_datetime(sent_at + timedelta(minutes=1))
            msg.set_content("I am out of the office until next Monday with limited access to email.")
        else:
            answered.add(send.to_addr)
            msg["From"] = send.to_addr
            msg["Subject"] = f"Re: {send.subject}"
            msg["Date"] = format_datetime(sent_at + timedelta(hours=rng.choice([2, 5, 9, 20, 30, 52, 75, 120])))
            msg.set_content(f"{rng.choice(REPLIES)}\n\nBest\n\n> {send.subject}\n")
        box.add(msg)
    box.flush()
    box.close()
    nurture(root, "--now", "2027-06-01T12:00:00Z", "replies", "sync", "--mbox", "inbox.mbox")
    return url
