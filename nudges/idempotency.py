"""Idempotency-Key for API writes: the first response is stored (unique per user and key)
and replayed for a repeat; the same key with a different body is a 409."""

import functools
import hashlib
import json
from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from rest_framework.request import Request
from rest_framework.response import Response

from core.errors import ApplicationError
from nudges.models import IdempotencyRecord

HEADER = "HTTP_IDEMPOTENCY_KEY"
MAX_KEY_LENGTH = 255


def _request_hash(request: Request) -> str:
    body = json.dumps(request.data, sort_keys=True, default=str)
    return hashlib.sha256(f"{request.method} {request.path}\n{body}".encode()).hexdigest()


def _replay(record: IdempotencyRecord, request_hash: str) -> Response:
    if record.request_hash != request_hash:
        raise ApplicationError(
            "This Idempotency-Key was already used with a different request.",
            code="idempotency_conflict",
            status=409,
        )
    response = Response(record.response, status=record.status_code)
    response["Idempotent-Replayed"] = "true"
    return response


def idempotent(view: Callable[..., Response]) -> Callable[..., Response]:
    """Wrap a write handler. Without the header it runs as usual. With it, the handler and the
    stored record commit together, so a failure stores nothing and a retry runs again."""

    @functools.wraps(view)
    def wrapper(self: Any, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = request.META.get(HEADER)
        if key is None:
            return view(self, request, *args, **kwargs)
        if not key or len(key) > MAX_KEY_LENGTH:
            raise ApplicationError(
                "Idempotency-Key must be 1 to 255 characters.",
                fields={"Idempotency-Key": "invalid"},
            )
        user = request.user
        assert isinstance(user, User)  # the views it wraps admit signed-in users only
        request_hash = _request_hash(request)
        found = IdempotencyRecord.objects.filter(user=user, key=key).first()
        if found is not None:
            return _replay(found, request_hash)
        try:
            with transaction.atomic():
                response = view(self, request, *args, **kwargs)
                if response.status_code < 500:
                    IdempotencyRecord.objects.create(
                        user=user,
                        key=key,
                        request_hash=request_hash,
                        status_code=response.status_code,
                        response=response.data,
                    )
        except IntegrityError:
            found = IdempotencyRecord.objects.filter(user=user, key=key).first()
            if found is None:
                raise
            return _replay(found, request_hash)
        return response

    return wrapper
