"""Version stamps for data cached in process memory (see core.models.CacheStamp)."""

import secrets

from django.db import connection

from core import pipeline, raw
from core.models import CacheStamp


def stamp_bump(name: str) -> None:
    """Mark `name` changed. Call inside the transaction that changes the data, so readers
    never see the new stamp with the old data. The new version is random rather than the
    next integer, so a restored or rolled-back database can never repeat a version that a
    process has cached."""
    CacheStamp.objects.update_or_create(name=name, defaults={"version": secrets.randbits(62)})


def stamps_read(names: tuple[str, ...]) -> tuple[int, ...]:
    """The current versions of `names`, in order (0 for a stamp never bumped), in one query."""
    return pipeline.run(stamps_reader(names))


def stamps_reader(names: tuple[str, ...]) -> pipeline.Reader[tuple[int, ...]]:
    """stamps_read as a reader (core.pipeline), to be read with other queries."""
    table = connection.ops.quote_name(CacheStamp._meta.db_table)
    [rows] = yield [  # hand-written: read on every decision
        (f"SELECT name, version FROM {table} WHERE name IN ({raw.marks(len(names))})", list(names))  # noqa: S608
    ]
    found = dict(rows)
    return tuple(found.get(name, 0) for name in names)
