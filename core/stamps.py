"""Version stamps for data cached in process memory (see core.models.CacheStamp)."""

import secrets

from django.db import connection

from core import raw
from core.models import CacheStamp


def stamp_bump(name: str) -> None:
    """Mark `name` changed. Call inside the transaction that changes the data, so readers
    never see the new stamp with the old data. The new version is random rather than the
    next integer, so a restored or rolled-back database can never repeat a version that a
    process has cached."""
    CacheStamp.objects.update_or_create(name=name, defaults={"version": secrets.randbits(62)})


def stamps_read(names: tuple[str, ...]) -> tuple[int, ...]:
    """The current versions of `names`, in order (0 for a stamp never bumped), in one query."""
    table = connection.ops.quote_name(CacheStamp._meta.db_table)
    with connection.cursor() as cursor:  # hand-written: read on every decision
        cursor.execute(
            f"SELECT name, version FROM {table} WHERE name IN ({raw.marks(len(names))})",  # noqa: S608
            list(names),
        )
        found = dict(cursor.fetchall())
    return tuple(found.get(name, 0) for name in names)
