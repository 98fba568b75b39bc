"""Uniform JSON errors for the API: {"error": {"code", "message", "fields"}}."""

import logging
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import set_rollback

from core.errors import ApplicationError

logger = logging.getLogger(__name__)


def error_body(code: str, message: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def _flatten(detail: Any) -> Any:
    if isinstance(detail, dict):
        return {key: _flatten(value) for key, value in detail.items()}
    if isinstance(detail, list):
        if all(isinstance(item, str) for item in detail):
            return " ".join(str(item) for item in detail)
        return [_flatten(item) for item in detail]
    return str(detail)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    set_rollback()
    if isinstance(exc, ApplicationError):
        return Response(error_body(exc.code, exc.message, exc.fields), status=exc.status)
    if isinstance(exc, OperationalError | InterfaceError):
        logger.error("database error while handling a request: %s", type(exc).__name__)
        return Response(
            error_body("unavailable", "The service is temporarily unavailable; retry later."),
            status=503,
            headers={"Retry-After": "5"},
        )
    if isinstance(exc, Http404):
        return Response(error_body("not_found", "Not found."), status=404)
    if isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, RequestDataTooBig):
        return Response(error_body("too_large", "The request body is too large."), status=413)
    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten(exc.detail) if isinstance(exc.detail, dict) else {}
        message = "The request is invalid." if fields else _flatten(exc.detail)
        if isinstance(message, list):
            message = " ".join(str(m) for m in message)
        return Response(error_body("invalid", message, fields), status=400)
    if isinstance(exc, exceptions.APIException):
        headers = {}
        wait = getattr(exc, "wait", None)  # Throttled has one; any APIException may set it
        if wait:
            headers["Retry-After"] = str(int(wait))
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else "error"
        return Response(
            error_body(str(code), str(_flatten(exc.detail))),
            status=exc.status_code,
            headers=headers,
        )
    return None


def json_not_found(request: Any, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(error_body("not_found", "Not found."), status=404)


def json_server_error(request: Any) -> JsonResponse:
    return JsonResponse(
        error_body("server_error", "An internal error occurred; it has been logged."), status=500
    )
