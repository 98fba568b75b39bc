"""Push providers. The engine talks to one adapter chosen by settings.PUSH_PROVIDER (a dotted
path). The payload carries no health data: only an opaque delivery id and a neutral text; the
app fetches the nudge itself over the authenticated API."""

import functools
from typing import Any, Protocol

from django.conf import settings
from django.utils.module_loading import import_string


class PushError(Exception):
    """A provider refused or failed to take a push. `code` is short and carries no data."""

    def __init__(self, code: str, *, permanent: bool = False) -> None:
        super().__init__(code)
        self.code = code
        self.permanent = permanent


class PushProvider(Protocol):
    name: str

    def send(self, *, message_id: str, payload: dict[str, Any]) -> str:
        """Hand one notification to the provider; return the provider's message id."""
        ...


class DevelopmentProvider:
    """Records what it would send in the DevelopmentPush table, so a developer (and the tests)
    can see every push without a phone or an account with a push service."""

    name = "development"

    def send(self, *, message_id: str, payload: dict[str, Any]) -> str:
        from nudges.models import DevelopmentPush

        record = DevelopmentPush.objects.create(message_id=message_id, payload=payload)
        return f"dev-{record.pk}"


def push_payload(*, delivery_id: str) -> dict[str, Any]:
    return {
        "title": "You have a new suggestion",
        "data": {"type": "nudge", "delivery_id": delivery_id},
    }


@functools.cache
def _provider_class(path: str) -> type:
    return import_string(path)


def get_provider() -> PushProvider:
    return _provider_class(settings.PUSH_PROVIDER)()
