"""The fast path of POST /api/v1/decisions/ and GET /api/v1/nudges/ (nudges/hotpath.py):
ordinary requests are answered without DRF, with what the documented views answer, written as
DRF writes it, and the same headers; every other request is the documented view's."""

import json

import pytest
from django.db import OperationalError, connections
from django.test import RequestFactory
from drf_spectacular.generators import SchemaGenerator
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from nudges import views
from nudges.models import Decision, DeliveryState
from tests.factories import make_nudge

pytestmark = pytest.mark.django_db

DECISIONS, INBOX = "/api/v1/decisions/", "/api/v1/nudges/"
BODY = {"trigger": "app_open", "context": {"screen": "home", "battery": 0.5}}


@pytest.fixture
def drf_calls(monkeypatch):
    """How many requests DRF's views dispatched."""
    calls = []
    dispatch = APIView.dispatch

    def counted(self, request, *args, **kwargs):
        calls.append(type(self).__name__)
        return dispatch(self, request, *args, **kwargs)

    monkeypatch.setattr(APIView, "dispatch", counted)
    return calls


def test_an_ordinary_decision_request_is_answered_without_drf(api_a, drf_calls):
    response = api_a.post(DECISIONS, BODY, format="json")

    assert response.status_code == 201
    assert drf_calls == []
    decision = Decision.objects.get()
    assert response.json()["decision_id"] == str(decision.id)
    assert decision.receipt["context"]["client"] == BODY["context"]


def test_an_ordinary_inbox_fetch_is_answered_without_drf(patient_a, api_a, drf_calls):
    make_nudge(patient_a[0])

    response = api_a.get(INBOX)

    assert response.status_code == 200
    assert drf_calls == []
    [item] = response.json()
    assert item["state"] == DeliveryState.DELIVERED


def test_the_fast_decision_answer_is_the_documented_views(patient_a, api_a):
    fast = api_a.post(DECISIONS, BODY, format="json")
    # The same patient again within the minute, through the documented view: the same decision.
    reference = views.DecisionView.as_view()(_request("post", patient_a[1], BODY))
    reference.render()

    assert (fast.status_code, reference.status_code) == (201, 200)
    _same_answer(fast, reference)


def test_the_fast_inbox_answer_is_the_documented_views(patient_a, api_a):
    make_nudge(patient_a[0])
    make_nudge(patient_a[0])

    fast = api_a.get(INBOX)
    reference = views.NudgeListView.as_view()(_request("get", patient_a[1]))
    reference.render()

    assert fast.status_code == reference.status_code == 200
    assert len(fast.json()) == 2
    _same_answer(fast, reference)


@pytest.mark.parametrize(
    ("body", "extra"),
    [
        (BODY, {"HTTP_IDEMPOTENCY_KEY": "k-1"}),  # replay needs the stored record
        (BODY, {"HTTP_ACCEPT": "text/html"}),  # content negotiation
        ({"trigger": "slot"}, {}),  # not a trigger the API takes
        ({"context": {"x": None}}, {}),
        ({"context": {"flag": True}}, {}),
        ({"context": {"x": "y" * 65}}, {}),
        ({"context": {f"k{i}": i for i in range(21)}}, {}),
        ({"context": [1]}, {}),
        ({"trigger": "app_open", "unknown": 1}, {}),
        ([1, 2], {}),
    ],
)
def test_other_decision_requests_go_to_the_documented_view(api_a, drf_calls, body, extra):
    response = api_a.post(DECISIONS, body, format="json", **extra)

    assert drf_calls == ["DecisionView"]
    assert response.status_code in (200, 201, 400, 406)


@pytest.mark.parametrize(
    "raw",
    [b'{"trigger": "app_open", "context": {"x": NaN}}', b"{not json", "{}".encode("utf-16")],
)
def test_a_body_drf_would_refuse_is_refused_by_drf(api_a, drf_calls, raw):
    response = api_a.generic("POST", DECISIONS, raw, content_type="application/json")

    assert drf_calls == ["DecisionView"]
    assert response.status_code == 400
    assert response.json()["error"]["code"] in ("parse_error", "invalid")
    assert not Decision.objects.exists()


def test_bad_tokens_and_other_users_get_drfs_errors(anonymous, outsider_api, drf_calls):
    assert anonymous.post(DECISIONS, BODY, format="json").status_code == 401
    anonymous.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    assert anonymous.get(INBOX).status_code == 401
    assert outsider_api.get(INBOX).status_code == 403
    assert drf_calls == ["DecisionView", "NudgeListView", "NudgeListView"]


def test_other_methods_and_query_strings_go_to_the_documented_view(api_a, drf_calls):
    assert api_a.get(DECISIONS).status_code == 405
    assert api_a.head(INBOX).status_code == 200
    assert api_a.get(INBOX + "?format=json").status_code == 200
    assert drf_calls == ["DecisionView", "NudgeListView", "NudgeListView"]


def test_the_schema_still_documents_both_views():
    schema = SchemaGenerator().get_schema(request=None, public=True)

    decide = schema["paths"][DECISIONS]["post"]
    assert decide["summary"] == "Ask for a decision now"
    assert "Idempotency-Key" in [p["name"] for p in decide["parameters"]]
    assert schema["paths"][INBOX]["get"]["summary"] == "The patient's current nudges"


def _request(method: str, token: str, body: dict | None = None):
    factory = RequestFactory()
    auth = {"Authorization": f"Token {token}"}
    if method == "post":
        return factory.post(DECISIONS, body, content_type="application/json", headers=auth)
    return factory.get(INBOX, headers=auth)


def _same_answer(fast, reference) -> None:
    """The same data, written as DRF's renderer writes it (the bytes may differ only in the
    order of a receipt's keys: PostgreSQL's jsonb keeps its own), with the same headers."""
    assert fast.json() == json.loads(reference.content)
    assert fast.content == JSONRenderer().render(fast.json())
    assert _headers(fast) == _headers(reference)


def _headers(response) -> dict[str, str]:
    """The headers a client sees; the middleware's are left out, as the reference view is
    called here without them."""
    return {
        name: value
        for name, value in response.headers.items()
        if name in ("Content-Type", "Allow", "Vary", "WWW-Authenticate", "Retry-After")
    }


def test_a_database_outage_on_the_fast_path_is_the_apis_503(api_a, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise OperationalError("the server is gone")

    monkeypatch.setattr(type(connections["default"]), "cursor", refuse)

    for response in (api_a.post(DECISIONS, BODY, format="json"), api_a.get(INBOX)):
        assert response.status_code == 503
        assert response["Content-Type"] == "application/json"
        assert response["Retry-After"] == "5"
        assert response.json()["error"]["code"] == "unavailable"
        assert "server is gone" not in response.content.decode()


def test_the_fast_inbox_shows_each_patient_only_their_own_nudges(
    patient_a, patient_b, api_a, api_b, drf_calls
):
    # The inbox reads the nudges by the token, beside the token's own check (one round trip).
    mine = {make_nudge(patient_a[0]).pk for _ in range(2)}
    theirs = {make_nudge(patient_b[0]).pk}

    assert {item["id"] for item in api_a.get(INBOX).json()} == {str(pk) for pk in mine}
    assert {item["id"] for item in api_b.get(INBOX).json()} == {str(pk) for pk in theirs}
    assert drf_calls == []


def test_an_inactive_patients_token_shows_nothing_and_delivers_nothing(patient_a, api_a, drf_calls):
    patient, _ = patient_a
    nudge = make_nudge(patient)
    patient.user.is_active = False
    patient.user.save(update_fields=["is_active"])

    response = api_a.get(INBOX)

    assert response.status_code == 401
    assert drf_calls == ["NudgeListView"]
    nudge.refresh_from_db()
    assert nudge.state == DeliveryState.READY  # read beside the token, never shown or moved
