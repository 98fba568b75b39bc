"""The one application error type. Services raise it; the API turns it into
{"error": {"code", "message", "fields"}} with its HTTP status. Messages must never carry an
identifier or health data: they reach clients and logs."""

from typing import Any


class ApplicationError(Exception):
    def __init__(
        self,
        message: str,
        *,
        code: str = "invalid",
        status: int = 400,
        fields: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.fields = fields or {}


def not_found(what: str = "object") -> ApplicationError:
    return ApplicationError(f"No such {what}.", code="not_found", status=404)
