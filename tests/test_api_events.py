"""POST /api/v1/events/: a batch of behaviour and health events, stored once each."""

import datetime as dt

import pytest
from django.utils import timezone

from nudges.models import Event

pytestmark = pytest.mark.django_db

URL = "/api/v1/events/"


def event(client_id: str, **overrides) -> dict:
    body = {
        "client_id": client_id,
        "kind": "steps",
        "value": 4200,
        "occurred_at": (timezone.now() - dt.timedelta(hours=1)).isoformat(),
    }
    return {**body, **overrides}


def batch(*events: dict) -> dict:
    return {"events": list(events)}


def named(fields: object) -> set[str]:
    """Every field name in an error's `fields`, however deeply the batch nests them."""
    if isinstance(fields, dict):
        return set(fields) | {name for value in fields.values() for name in named(value)}
    if isinstance(fields, list):
        return {name for value in fields for name in named(value)}
    return set()


def test_a_batch_is_stored_and_counted(patient_a, api_a):
    response = api_a.post(
        URL,
        batch(event("e1"), event("e2", kind="sleep_hours", value=7.5)),
        format="json",
    )

    assert response.status_code == 201
    assert response.json() == {"stored": 2, "duplicates": 0}
    stored = {e.client_id: e for e in Event.objects.filter(patient=patient_a[0])}
    assert set(stored) == {"e1", "e2"}
    assert (stored["e2"].kind, stored["e2"].value) == ("sleep_hours", 7.5)


def test_a_resent_batch_stores_nothing_new_and_counts_duplicates(patient_a, api_a):
    body = batch(event("e1"), event("e2"))
    api_a.post(URL, body, format="json")

    response = api_a.post(URL, body, format="json")

    assert response.status_code == 201
    assert response.json() == {"stored": 0, "duplicates": 2}
    assert Event.objects.filter(patient=patient_a[0]).count() == 2


def test_a_batch_overlapping_an_earlier_one_stores_only_the_new_events(patient_a, api_a):
    api_a.post(URL, batch(event("e1"), event("e2")), format="json")

    response = api_a.post(URL, batch(event("e2"), event("e3")), format="json")

    assert response.json() == {"stored": 1, "duplicates": 1}
    assert set(Event.objects.values_list("client_id", flat=True)) == {"e1", "e2", "e3"}


def test_a_duplicate_keeps_the_value_first_stored(patient_a, api_a):
    api_a.post(URL, batch(event("e1", value=100)), format="json")

    api_a.post(URL, batch(event("e1", value=999)), format="json")

    assert Event.objects.get(client_id="e1").value == 100


def test_client_ids_are_per_patient(patient_a, patient_b, api_a, api_b):
    api_a.post(URL, batch(event("shared-id")), format="json")

    response = api_b.post(URL, batch(event("shared-id")), format="json")

    assert response.json() == {"stored": 1, "duplicates": 0}
    assert Event.objects.filter(patient=patient_b[0], client_id="shared-id").exists()


def test_a_batch_at_the_size_limit_is_accepted(api_a, settings):
    settings.NUDGE_EVENTS_MAX_BATCH = 3

    response = api_a.post(URL, batch(*(event(f"e{i}") for i in range(3))), format="json")

    assert response.status_code == 201
    assert Event.objects.count() == 3


def test_an_oversized_batch_is_refused_and_stores_nothing(api_a, settings):
    settings.NUDGE_EVENTS_MAX_BATCH = 3

    response = api_a.post(URL, batch(*(event(f"e{i}") for i in range(4))), format="json")

    assert response.status_code == 400
    assert "events" in response.json()["error"]["fields"]
    assert Event.objects.count() == 0


def test_a_client_id_twice_in_one_batch_is_refused(api_a):
    response = api_a.post(URL, batch(event("e1"), event("e1", value=1)), format="json")

    assert response.status_code == 400
    assert "events" in response.json()["error"]["fields"]
    assert Event.objects.count() == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kind", "heart_rate"),
        ("value", "NaN"),
        ("value", "Infinity"),
        ("value", 1e12),
        ("value", -1e12),
        ("value", "lots"),
        ("occurred_at", dt.timedelta(hours=1)),
        ("occurred_at", dt.timedelta(days=-400)),
        ("occurred_at", "yesterday"),
        ("client_id", "x" * 65),
    ],
    ids=[
        "unknown-kind",
        "nan",
        "infinity",
        "huge",
        "hugely-negative",
        "not-a-number",
        "future",
        "over-a-year-old",
        "not-a-time",
        "client-id-too-long",
    ],
)
def test_a_bad_event_is_refused_naming_its_field_and_nothing_of_the_batch_is_stored(
    api_a, field, value
):
    if isinstance(value, dt.timedelta):
        value = (timezone.now() + value).isoformat()
    body = batch(event("good-1"), {**event("bad"), field: value}, event("good-2"))

    response = api_a.post(URL, body, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert field in named(error["fields"]["events"])
    assert Event.objects.count() == 0


def test_a_number_too_large_for_a_float_is_refused(api_a):
    # 1e400 is valid JSON that Python reads as infinity.
    content = (
        '{"events": [{"client_id": "e1", "kind": "steps", "value": 1e400, '
        f'"occurred_at": "{timezone.now().isoformat()}"}}]}}'
    )

    response = api_a.post(URL, content, content_type="application/json")

    assert response.status_code == 400
    assert "value" in named(response.json()["error"]["fields"])
    assert Event.objects.count() == 0


@pytest.mark.parametrize("missing", ["client_id", "kind", "value", "occurred_at"])
def test_an_event_missing_a_field_is_refused(api_a, missing):
    incomplete = event("e1")
    del incomplete[missing]

    response = api_a.post(URL, batch(incomplete), format="json")

    assert response.status_code == 400
    assert missing in named(response.json()["error"]["fields"]["events"])
    assert Event.objects.count() == 0


@pytest.mark.parametrize(
    "body",
    [{"events": []}, {}, {"events": "steps"}, [event("e1")]],
    ids=["empty-list", "no-events", "events-not-a-list", "bare-list"],
)
def test_an_empty_or_malformed_batch_is_refused(api_a, body):
    response = api_a.post(URL, body, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert Event.objects.count() == 0


def test_an_empty_batch_names_the_events_field(api_a):
    response = api_a.post(URL, {"events": []}, format="json")

    assert "events" in response.json()["error"]["fields"]


def test_without_a_token_events_answer_401_and_store_nothing(anonymous):
    response = anonymous.post(URL, batch(event("e1")), format="json")

    assert response.status_code == 401
    assert Event.objects.count() == 0


def test_a_token_that_is_not_a_patients_is_refused_403(outsider_api):
    response = outsider_api.post(URL, batch(event("e1")), format="json")

    assert response.status_code == 403
    assert Event.objects.count() == 0
