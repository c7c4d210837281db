"""The messages the ledger keeps: packed, stored beside their send, read back.

Each message is a Zstandard frame. A step's emails differ from each other only in a few
values, so they are packed against a raw-content dictionary: the same step rendered for a
synthetic candidate (`MessageDictionary`; never a real person's email, so `forget` leaves
nothing in it). Against it a 2.9 KB email packs to ~300 bytes, against ~1,280 bytes alone
(`PLAIN`, level 1).
Messages are stored apart from their `sends` row (`SentMessage`), written once, so the
ledger's three updates per send rewrite small rows.

Level -1 (a negative level: the literals, the few bytes the dictionary does not hold, are
stored as they are instead of Huffman-coded with a table built for each email): the bench
step's emails pack in 4.2 us to 300 bytes, against 6.6 us to 287 bytes at level 1 (same
machine, 1,000 emails); a frame of any level unpacks the same way.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import zstandard
from sqlalchemy import bindparam, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session
from sqlalchemy.types import Integer, LargeBinary

from ..models import MessageDictionary, SentMessage
from .batch_sql import ExecuteMany, UnnestUpdate, dialect_insert, pg_insert

LEVEL = -1
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_MESSAGES = SentMessage.__table__
_DICTIONARIES = MessageDictionary.__table__


@dataclass(frozen=True)
class Packer:
    """Packs the messages of one step (`pack`); `dictionary_id` says what to unpack them with."""

    dictionary_id: int | None
    compressor: zstandard.ZstdCompressor

    def pack(self, message: bytes) -> tuple[int | None, bytes]:
        return self.dictionary_id, self.compressor.compress(message)


# Without a dictionary the literals are most of the email: Huffman-coding them pays (a
# 1.2 KB email: 629 bytes at level 1, 796 at -1); this packer is the rare fallback.
PLAIN = Packer(None, zstandard.ZstdCompressor(level=1))


def packer(session: Session, sample: bytes, stamp: datetime) -> Packer:
    """A packer whose dictionary is `sample` (a synthetic candidate's email), stored once
    per distinct content: every process that builds the same sample shares its row."""
    digest = hashlib.sha256(sample).hexdigest()
    conn = session.connection()
    conn.execute(
        dialect_insert(conn.dialect.name, _DICTIONARIES)
        .values(digest=digest, content=sample, created_at=stamp)
        .on_conflict_do_nothing(index_elements=["digest"])
    )
    dictionary_id = conn.execute(
        select(_DICTIONARIES.c.id).where(_DICTIONARIES.c.digest == digest)
    ).scalar_one()
    return Packer(dictionary_id, _compressor(sample))


def _compressor(content: bytes) -> zstandard.ZstdCompressor:
    dictionary = zstandard.ZstdCompressionDict(content, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    dictionary.precompute_compress(level=LEVEL)
    return zstandard.ZstdCompressor(dict_data=dictionary, write_dict_id=False)


def unpack(body: bytes, dictionary: bytes | None = None) -> bytes:
    """A stored message: a Zstandard frame (packed against `dictionary` if it was), or a
    zlib stream from before Zstandard."""
    if body[:4] != _ZSTD_MAGIC:
        return zlib.decompress(body)
    if dictionary is None:
        return zstandard.ZstdDecompressor().decompress(body)
    data = zstandard.ZstdCompressionDict(dictionary, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    return zstandard.ZstdDecompressor(dict_data=data).decompress(body)


def read(session: Session, send_ids: Sequence[int]) -> dict[int, bytes]:
    """The stored messages of these sends (those that have one), unpacked."""
    rows = session.execute(
        select(_MESSAGES.c.send_id, _MESSAGES.c.body, _DICTIONARIES.c.content)
        .select_from(_MESSAGES.outerjoin(_DICTIONARIES))
        .where(_MESSAGES.c.send_id.in_(list(send_ids)))
    )
    return {send_id: unpack(body, dictionary) for send_id, body, dictionary in rows}


def _upsert(insert):
    return insert.on_conflict_do_update(
        index_elements=["send_id"],
        set_={"dictionary_id": insert.excluded.dictionary_id, "body": insert.excluded.body},
    )


_STORE = ExecuteMany(
    _upsert(sqlite.insert(_MESSAGES).values(
        send_id=bindparam("p_id"), dictionary_id=bindparam("p_dictionary"),
        body=bindparam("p_body"),
    )),
    postgresql=UnnestUpdate(
        {"p_id": Integer, "p_dictionary": Integer, "p_body": LargeBinary},
        lambda batch: _upsert(pg_insert(_MESSAGES).from_select(
            ["send_id", "dictionary_id", "body"],
            select(batch.c.p_id, batch.c.p_dictionary, batch.c.p_body),
        )),
    ),
)


def store(session: Session, messages: Mapping[int, tuple[int | None, bytes]]) -> None:
    """Keep each send's packed message (a send tried again keeps its latest)."""
    if messages:
        _STORE(session.connection(), [
            {"p_id": sid, "p_dictionary": dictionary_id, "p_body": body}
            for sid, (dictionary_id, body) in messages.items()
        ])
