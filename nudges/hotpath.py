"""The patient API's two hottest calls, POST /api/v1/decisions/ and GET /api/v1/nudges/,
answered without DRF's request cycle when the request is an ordinary one: a patient's token,
JSON in and out, nothing to negotiate. DRF's wrapping (its Request, content negotiation,
permission and throttle checks, parsers, serializer validation, Response rendering) cost
0.3-0.4 ms a request in-process, a tenth of a decision's CPU and a fifth of an inbox fetch's
(docs/benchmarks.md).

The documented views stay the reference: `nudges.views.DecisionView` and `NudgeListView` hold
the schema (drf-spectacular reads them through the `cls` these functions carry) and answer
every request the fast path does not take: another method, an Idempotency-Key, a query
string, an Accept header other than JSON, a missing or bad token, a token that is not a
patient's, a body that is not a valid decision request. Those fall back before anything is
written, so every error is DRF's own. What the fast path answers is byte for byte what the
views answer (tests/test_hotpath.py), with the same headers."""

import json
import math
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions
from rest_framework.views import APIView

from core.api import exception_handler
from core.auth import TokenWithPatientAuthentication
from nudges import views
from nudges.models import Trigger
from nudges.serializers import MAX_CONTEXT_KEYS
from patients.models import Patient

View = Callable[[HttpRequest], HttpResponse]
_AUTH = TokenWithPatientAuthentication()
_TRIGGERS = frozenset({Trigger.APP_OPEN.value, Trigger.EVENT.value})
_JSON_ACCEPT = frozenset({"", "*/*", "application/json"})


def fast_view(
    view_class: type[APIView],
    method: str,
    handle: Callable[[HttpRequest, Patient], HttpResponse | None],
) -> View:
    """A Django view answering `method` requests of an ordinary kind by `handle(request,
    patient)` (which returns None to decline), and everything else by `view_class`."""
    reference = view_class.as_view()
    instance = view_class()
    instance.setup(None)  # type: ignore[arg-type]  # as as_view() does: GET answers HEAD
    allow = ", ".join(instance.allowed_methods)  # DRF's public name for _allowed_methods()

    @csrf_exempt
    def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            patient = _ordinary(request, method)
            response = None if patient is None else handle(request, patient)
        except Exception as error:  # as DRF's views turn it into a response (a 503, say)
            response = _error(error)
        if response is None:
            return reference(request, *args, **kwargs)
        response["Allow"] = allow
        return response

    view.cls = view_class  # type: ignore[attr-defined]  # for the schema: the documented view
    view.initkwargs = {}  # type: ignore[attr-defined]
    return view


def _ordinary(request: HttpRequest, method: str) -> Patient | None:
    """The patient whose app token the request carries, when it is a request the fast path
    takes; else None (and the reference view answers it)."""
    meta = request.META
    if (
        request.method != method
        or "HTTP_IDEMPOTENCY_KEY" in meta
        or meta.get("QUERY_STRING")
        or meta.get("HTTP_ACCEPT", "") not in _JSON_ACCEPT
    ):
        return None
    parts = meta.get("HTTP_AUTHORIZATION", "").split()
    if len(parts) != 2 or parts[0].lower() != "token":
        return None
    try:
        user, _ = _AUTH.authenticate_credentials(parts[1])
    except exceptions.AuthenticationFailed:
        return None
    return getattr(user, "patient", None)


def _decide(request: HttpRequest, patient: Patient) -> HttpResponse | None:
    params = request.content_params
    assert params is not None  # set for every WSGI and ASGI request
    charset = params.get("charset", "utf-8").lower()
    if request.content_type != "application/json" or charset not in ("utf-8", "utf8"):
        return None
    ask = _decision_ask(request.body)
    if ask is None:
        return None
    body, status = views.decision_answer(patient, *ask)
    return _json(body, status=status)


def _inbox(request: HttpRequest, patient: Patient) -> HttpResponse:
    return _json(views.inbox_body(patient), status=200)


def _decision_ask(body: bytes) -> tuple[str, dict[str, Any]] | None:
    """The trigger and context of a decision request that DecisionRequestSerializer would
    accept as it is; None for anything else (which the reference view then refuses or
    reads itself)."""
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_refuse) if body else {}
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    if not isinstance(data, dict) or not set(data) <= {"trigger", "context"}:
        return None
    trigger = data.get("trigger", Trigger.APP_OPEN.value)
    context = data.get("context", {})
    if not isinstance(trigger, str) or trigger not in _TRIGGERS:
        return None
    if not isinstance(context, dict) or not _plain_context(context):
        return None
    return trigger, context


def _plain_context(context: dict[str, Any]) -> bool:
    """What DecisionRequestSerializer.validate_context accepts."""
    if len(context) > MAX_CONTEXT_KEYS:
        return False
    for key, item in context.items():
        if len(key) > 40 or isinstance(item, bool) or not isinstance(item, int | float | str):
            return False
        if isinstance(item, str) and len(item) > 64:
            return False
        if isinstance(item, float) and not math.isfinite(item):
            return False
    return True


def _refuse(constant: str) -> Any:
    raise ValueError(constant)  # NaN and Infinity are not JSON; DRF's parser refuses them too


def _json(data: Any, *, status: int) -> HttpResponse:
    """As DRF's JSONRenderer writes it (compact, UTF-8, no NaN)."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return HttpResponse(text.encode(), status=status, content_type="application/json")


def _error(error: Exception) -> HttpResponse:
    """The uniform JSON error the API's exception handler makes of `error`; an error it
    does not know goes on to Django's (a 500)."""
    response = exception_handler(error, {})
    if response is None:
        raise error
    out = _json(response.data, status=response.status_code)
    for header, value in response.items():
        if header != "Content-Type":  # an unrendered Response's is Django's default
            out[header] = value
    return out


decisions = fast_view(views.DecisionView, "POST", _decide)
inbox = fast_view(views.NudgeListView, "GET", _inbox)
