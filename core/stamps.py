"""Version stamps for data cached in process memory (see core.models.CacheStamp)."""

import secrets

from core.models import CacheStamp


def stamp_bump(name: str) -> None:
    """Mark `name` changed. Call inside the transaction that changes the data, so readers
    never see the new stamp with the old data. The new version is random rather than the
    next integer, so a restored or rolled-back database can never repeat a version that a
    process has cached."""
    CacheStamp.objects.update_or_create(name=name, defaults={"version": secrets.randbits(62)})


def stamps_read(names: tuple[str, ...]) -> tuple[int, ...]:
    """The current versions of `names`, in order (0 for a stamp never bumped), in one query."""
    found = dict(CacheStamp.objects.filter(name__in=names).values_list("name", "version"))
    return tuple(found.get(name, 0) for name in names)
