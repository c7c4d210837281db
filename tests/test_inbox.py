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


def test_file_batches_are_bounded_by_count_and_bytes(tmp_path, monkeypatch):
    """A file source yields at most batch_size messages and, but for one huge message alone,
    at most MAX_BATCH_BYTES at once, in file order."""
    import nurture_mail.inbox as inbox_module
    for sub in ("new", "cur", "tmp"):
        (tmp_path / "md" / sub).mkdir(parents=True)
    sizes = [300, 300, 300, 5000, 300, 300, 300, 300]
    raws = [_msg(n) + b"x" * size for n, size in enumerate(sizes)]
    for n, raw in enumerate(raws):
        (tmp_path / "md" / "new" / f"{n:04d}.eml").write_bytes(raw)  # read in name order
    monkeypatch.setattr(inbox_module._bounded, "__defaults__", (1000,))  # MAX_BATCH_BYTES
    batches = _read(MaildirInbox(tmp_path / "md", batch_size=3))
    # ~380 bytes each: two fit in 1,000; the 5 kB one goes alone; then pairs again
    assert [len(b.messages) for b in batches] == [2, 1, 1, 2, 2]
    assert [m.raw for b in batches for m in b.messages] == raws
    for b in batches:
        assert len(b.messages) == 1 or sum(len(m.raw) for m in b.messages) <= 1000
    assert [len(b.messages) for b in _read(MaildirInbox(tmp_path / "md", batch_size=1))] == [1] * 8


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


def _identity_by_full_parse(raw: bytes):
    """The reference: every header field parsed, then the first Message-ID and Date."""
    import hashlib

    from nurture_mail.replies.parsing import header_date, message_ids, parse_headers, split_message

    headers = parse_headers(split_message(raw)[0])
    mid = next((ids[0] for v in headers.get("message-id", ()) if (ids := message_ids(v))), None)
    dates = headers.get("date", ())
    date = header_date(dates[0]) if dates else None
    key = hashlib.sha256(mid.encode("utf-8", "surrogateescape") if mid else raw.replace(b"\r\n", b"\n")).hexdigest()
    return key, mid, date


IDENTITY_CASES = [
    b"Message-ID: <a@x>\r\nDate: Mon, 1 Mar 2027 10:00:00 +0100\r\n\r\nbody",
    b"message-id:\r\n <folded@x>\r\nDATE :  Tue, 2 Mar 2027 10:00:00 -0500\r\n\r\n",
    b"X-Message-ID: <not@this>\nMessage-ID-Extra: <nor@this>\nMessage-ID: <this@one>\n\n",
    b"Message-ID: no id here\nMessage-ID: <second@x>\nDate: garbage\nDate: Mon, 1 Mar 2027 10:00:00 +0000\n\n",
    b"Subject: x\n References: <cont@x>\n Message-ID: <continuation@x>\n\nMessage-ID: <body@x>\n",
    "Message-ID: <caf\u00e9@x>\nSubject: \u00e9\n\n".encode(),
    "Me\u017f\u017fage-ID: <long-s@x>\n\n".encode(),
    b"Message-ID: <latin\xe9@x>\n\n",
    b"\n\n\nMessage-ID: <after-blank@x>\n\n",
    b"",
]


@pytest.mark.parametrize("raw", IDENTITY_CASES)
def test_fast_message_identity_equals_the_full_header_parse(raw):
    assert message_identity(raw) == _identity_by_full_parse(raw)


def test_fast_message_identity_on_the_corpus():
    from .conftest import CORPUS

    files = sorted(CORPUS.rglob("*.eml")) if CORPUS.is_dir() else []
    if not files:
        pytest.skip("corpus not found")
    for path in files:
        raw = path.read_bytes()
        assert message_identity(raw) == _identity_by_full_parse(raw), path


def test_fast_message_identity_on_generated_headers():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    names = st.sampled_from(["Message-ID", "message-id", "MESSAGE-ID ", "Date", "date", "X-Date",
                             "Message-Id-X", "From", " Message-ID", "\tDate"])
    values = st.one_of(
        st.sampled_from(["<a@b>", " <c@d> <e@f>", "Mon, 1 Mar 2027 10:00:00 +0100", "junk", "",
                         "\r\n <folded@x>", "\n\tMon, 1 Mar 2027 10:00:00 +0000"]),
        st.text(max_size=40),
    )
    line_end = st.sampled_from(["\n", "\r\n"])

    @settings(max_examples=400, derandomize=True, deadline=None)
    @given(st.lists(st.tuples(names, values, line_end), max_size=8), st.binary(max_size=20))
    def check(fields, tail):
        raw = "".join(f"{n}:{v}{e}" for n, v, e in fields).encode("utf-8", "surrogatepass") + b"\n" + tail
        assert message_identity(raw) == _identity_by_full_parse(raw)

    check()
