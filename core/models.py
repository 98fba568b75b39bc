from django.db import models
from django.utils import timezone

from core.ids import uuid7


class BaseModel(models.Model):
    """A UUID key (never a guessable sequence in a URL; see core.ids) and created/updated
    times."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    # A default rather than auto_now_add, so a service can date a row by the moment it decided
    # on (a decision made for `now` counts on that day, whatever the clock said).
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class CacheStamp(models.Model):
    """A version per cached dataset (the catalogue, the rule set, popularity). A service
    that changes the data bumps its stamp in the same transaction; readers rebuild their
    in-process copy when the stamp they hold differs (core.stamps)."""

    name = models.CharField(max_length=40, primary_key=True)
    version = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"
