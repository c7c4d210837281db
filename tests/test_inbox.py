"""The file sources (Maildir, mbox, .eml) on their own: what they yield, in batches, read in
place; and the dedupe identity of a message."""

from __future__ import annotations

import mailbox
import os

import pytest

from nurture_mail.inbox import FilesInbox, InboxError, MaildirInbox, MboxInbox
from nurture_mail.reply_sync import message_identity


def _msg(n: int, mid: bool = True) -> bytes:
    head = f"From: p{n}@example.com\nSubject: message {n}\n"
    if mid:
        head += f"Message-ID: <n{n}@example.com>\n"
    return (head + f"\nbody {n}\n").encode()


def _read(source) -> list:
    return [b for b in source.batches(lambda key: None)]


def test_maildir_reads_new_and_cur_in_place(tmp_path):
    box = mailbox.Maildir(tmp_path / "md", create=True)
    keys = [box.add(_msg(n)) for n in range(5)]
    seen = box.get_message(keys[0])
    seen.set_subdir("cur")
    seen.add_flag("S")
    box[keys[0]] = seen
    (tmp_path / "md" / "new" / ".hidden").write_bytes(b"not mail")
    listing = sorted(str(p) for p in (tmp_path / "md").rglob("*"))
    batches = _read(MaildirInbox(tmp_path / "md", batch_size=2))
    assert [len(b.messages) for b in batches] == [2, 2, 1]
    assert all(b.position is None for b in batches)
    messages = [m for b in batches for m in b.messages]
    assert sorted(m.raw for m in messages) == sorted(_msg(n) for n in range(5))
    assert all(":2," not in m.uid for m in messages)  # the key without the flags suffix
    assert {m.source for m in messages} == {f"maildir:{tmp_path / 'md'}"}
    assert sorted(str(p) for p in (tmp_path / "md").rglob("*")) == listing  # nothing moved


def test_maildir_errors(tmp_path):
    with pytest.raises(InboxError, match="no such directory"):
        _read(MaildirInbox(tmp_path / "missing"))
    (tmp_path / "plain").mkdir()
    with pytest.raises(InboxError, match="not a Maildir"):
        _read(MaildirInbox(tmp_path / "plain"))


def test_mbox_yields_every_message_unchanged_file(tmp_path):
    path = tmp_path / "in.mbox"
    box = mailbox.mbox(path, create=True)
    for n in range(3):
        box.add(_msg(n))
    box.close()
    before = (path.read_bytes(), os.stat(path).st_mtime_ns)
    batches = _read(MboxInbox(path, batch_size=2))
    assert [len(b.messages) for b in batches] == [2, 1]
    raws = [m.raw for b in batches for m in b.messages]
    assert [r.split(b"\n\n")[1] for r in raws] == [f"body {n}\n".encode() for n in range(3)]
    assert (path.read_bytes(), os.stat(path).st_mtime_ns) == before
    with pytest.raises(InboxError):
        _read(MboxInbox(tmp_path / "none.mbox"))


def test_eml_files(tmp_path):
    paths = []
    for n in range(3):
        p = tmp_path / f"{n}.eml"
        p.write_bytes(_msg(n))
        paths.append(p)
    [batch] = _read(FilesInbox(paths))
    assert [(m.uid, m.raw) for m in batch.messages] == [(f"{n}.eml", _msg(n)) for n in range(3)]


def test_message_identity():
    key, mid, date = message_identity(
        b"Message-ID: <abc@example.com>\r\nDate: Tue, 2 Mar 2027 10:00:00 +0100\r\n\r\nx"
    )
    assert mid == "abc@example.com" and date.isoformat() == "2027-03-02T09:00:00+00:00"
    # the same Message-ID is the same message, whatever the bytes
    assert message_identity(b"Message-ID: <abc@example.com>\n\nother body")[0] == key
    # no Message-ID: the bytes decide, line endings aside
    a = message_identity(_msg(1, mid=False))[0]
    assert a == message_identity(_msg(1, mid=False).replace(b"\n", b"\r\n"))[0]
    assert a != message_identity(_msg(2, mid=False))[0]
    assert message_identity(b"")[1] is None
