"""Liveness and readiness. /healthz answers while the process runs; /readyz checks that the
database and the Celery broker answer, and says which one did not (503). Apps may register
checks of parts that can degrade without stopping the service (the recommender falls back to
the baseline): those are reported, with a 200, under "degraded"."""

import logging
from collections.abc import Callable

from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from config.celery import app as celery_app

logger = logging.getLogger(__name__)
_degradation_checks: list[Callable[[], dict[str, str]]] = []


def register_degradation_check(check: Callable[[], dict[str, str]]) -> None:
    """`check` returns {part: "ok" | "degraded", ...}; called by /readyz when the database
    answers."""
    _degradation_checks.append(check)


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception:
        logger.warning("readiness: database unreachable", exc_info=False)
        return False


def _broker_ok() -> bool:
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:
        logger.warning("readiness: broker unreachable", exc_info=False)
        return False


@never_cache
@require_GET
def healthz(request):
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request):
    checks = {"database": _database_ok(), "broker": _broker_ok()}
    ready = all(checks.values())
    body: dict = {
        "status": "ready" if ready else "unavailable",
        "checks": {name: "ok" if ok else "unreachable" for name, ok in checks.items()},
    }
    if checks["database"]:
        parts: dict[str, str] = {}
        for check in _degradation_checks:
            try:
                parts.update(check())
            except Exception:
                logger.warning("readiness: a degradation check failed", exc_info=False)
                parts["checks"] = "degraded"
        body["parts"] = parts
        degraded = sorted(k for k, v in parts.items() if v == "degraded")
        if degraded and ready:
            body["status"] = "degraded"
            body["degraded"] = degraded
    return JsonResponse(body, status=200 if ready else 503)
