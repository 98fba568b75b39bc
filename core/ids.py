"""Primary keys: UUIDs laid out as version 7 (RFC 9562), a millisecond timestamp followed by
random bits. They are unguessable like version 4, but new rows land at the end of the primary
key index instead of at random places in it, which keeps bulk inserts and hot tables fast on
both PostgreSQL and SQLite. The timestamp only says when a row was created, which the row's
created_at says anyway."""

import os
import time
import uuid


def uuid7(ms: int | None = None) -> uuid.UUID:
    """A version-7 UUID for the given Unix time in milliseconds (now by default)."""
    return uuid.UUID(bytes=uuid7_bytes(ms if ms is not None else time.time_ns() // 1_000_000))


def uuid7_bytes(ms: int) -> bytes:
    raw = bytearray(ms.to_bytes(6, "big") + os.urandom(10))
    raw[6] = (raw[6] & 0x0F) | 0x70
    raw[8] = (raw[8] & 0x3F) | 0x80
    return bytes(raw)
